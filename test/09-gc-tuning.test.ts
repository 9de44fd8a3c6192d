import test from 'ava';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { HEAP_GROWING_PERCENT, heapGrowthFlag } from '../src/server/gc-tuning';
import { spawnServer } from './helpers/process';
import { tempDir } from './helpers/server';

/*
 * The server caps old-space growth (src/server/gc-tuning.ts). What that does to V8's
 * collections is measured by the bench (bench/gc-tuning.ts); here, that the
 * server sets the flag at start-up unless the operator gave node one.
 */

const SPY = join(__dirname, 'helpers', 'v8-flags-spy.cjs');

test('the server caps old-space growth unless the operator gave node the flag', (t) => {
  t.is(heapGrowthFlag([]), `--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  t.is(heapGrowthFlag(['--import', 'tsx']), `--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  t.is(heapGrowthFlag(['--heap-growing-percent=30']), undefined);
  t.is(heapGrowthFlag(['--heap_growing_percent', '30']), undefined);
  // A flag that only starts the same way is somebody else's.
  t.is(heapGrowthFlag(['--heap-growing-percentage=5']), `--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
});

/** The V8 flags a server process set at run time before it served. */
async function flagsSetBy(nodeFlags: string[]): Promise<string[]> {
  const dir = tempDir('sessiond-gc-');
  const server = await spawnServer({ SESSIOND_DB_PATH: join(dir, 'sessions.db') }, [], 60_000, {
    entry: [...nodeFlags, '--require', SPY, '--import', 'tsx', 'src/main.ts'],
  });
  try {
    return [...server.stderr().matchAll(/"v8Flags":"([^"]*)"/g)].map((m) => m[1]!);
  } finally {
    server.proc.kill('SIGTERM');
    await server.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the server process sets the cap before it serves, and leaves the operator\'s own flag alone', async (t) => {
  const [plain, given] = await Promise.all([flagsSetBy([]), flagsSetBy(['--heap-growing-percent=30'])]);
  t.deepEqual(plain, [`--heap-growing-percent=${HEAP_GROWING_PERCENT}`]);
  t.deepEqual(given, []);
});
