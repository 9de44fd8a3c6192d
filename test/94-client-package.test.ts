import test from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as client from '../src/client/index';

const ROOT = join(__dirname, '..');
const run = promisify(execFile);

test("package.json's main is the client library's index, compiled", (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { main: string; types: string };
  t.is(pkg.main, 'dist/src/client/index.js');
  t.is(pkg.types, 'dist/src/client/index.d.ts');
  const tsconfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8')) as { compilerOptions: { declaration?: boolean } };
  t.true(tsconfig.compilerOptions.declaration, 'the build writes the .d.ts files that "types" names');
});

// Loaded in a process of its own, the client and the CLI bring in none of the server:
// no SQLite driver, no storage, transport or server module.
for (const entry of ['src/client/index.ts', 'src/cli/main.ts']) {
  test(`${entry} loads no server, transport or storage code`, async (t) => {
    const probe = `require(${JSON.stringify(join(ROOT, entry))});` +
      'process.stdout.write(JSON.stringify(Object.keys(require.cache)));';
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '-e', probe], { cwd: ROOT });
    const loaded = JSON.parse(stdout) as string[];
    t.true(loaded.some((p) => p.endsWith(entry)), `the probe loaded ${entry}`);
    const server = loaded.filter((p) => /node_modules\/(better-sqlite3|postgres|pino|prom-client)\/|\/src\/(server|storage|transport)\//.test(p));
    t.deepEqual(server, []);
  });
}

test('the client index exports the client, the stream validator and the TLS helper', (t) => {
  t.is(typeof client.SessiondClient, 'function');
  t.is(typeof client.StreamValidator, 'function');
  t.is(typeof client.tlsCredentials, 'function');
  t.is(client.ServingStatus.SERVING, 1);
  t.regex('AAAAAAAAAAAAAAAAAAAAAA', client.SESSION_ID_PATTERN);
});
