import test, { type ExecutionContext } from 'ava';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCrashCycles } from './crash-workload';

/*
 * The crash test, registered once per synchronous setting by
 * test/30-crash*.test.ts: one file each, so that ava runs them side by side.
 * Reproduce a failure with CRASH_SEED=<the seed printed> (and CRASH_KILLS=n).
 */

const KILLS = Number(process.env.CRASH_KILLS ?? 20);

function seed(t: ExecutionContext): number {
  const s = process.env.CRASH_SEED ? Number(process.env.CRASH_SEED) : randomInt(2 ** 31);
  t.log(`seed ${s} (rerun with CRASH_SEED=${s})`);
  return s;
}

export function crashTest(synchronous: 'normal' | 'full'): void {
  test.serial(`synchronous=${synchronous}: ${KILLS} SIGKILLs during creates, updates and deletes lose nothing acknowledged, and integrity_check stays ok`, async (t) => {
    t.timeout(240_000);
    const dir = mkdtempSync(join(tmpdir(), 'sessiond-crash-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const report = await runCrashCycles({ dir, seed: seed(t), kills: KILLS, env: { SESSIOND_SYNCHRONOUS: synchronous } });
    t.log(`${report.kills} kills; acknowledged ${JSON.stringify(report.acked)}; unknown ${JSON.stringify(report.unknown)}, ${report.unknownCommitted} of them committed; ${report.sessionsTracked} sessions tracked`);
    t.deepEqual(report.violations, [], 'every acknowledged write survived every kill');
    t.is(report.kills, KILLS);
    t.true(report.acked.creates > KILLS && report.acked.updates > KILLS && report.acked.deletes > 0, 'the workload really wrote between kills');
    t.true(report.unknown.creates + report.unknown.updates + report.unknown.deletes > 0, 'some kills landed with calls in flight');
  });
}
