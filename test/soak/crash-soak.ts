/*
 * `make soak`: the crash-during-writes workload of test/30-crash.test.ts for
 * longer. Not an ava test: `make test` never runs it.
 *
 *   SOAK_KILLS    SIGKILLs to deliver (default 200)
 *   SOAK_SECONDS  keep going until this many seconds have passed as well (default 0)
 *   SOAK_SEED     replay a run (default: random, printed first)
 *   SOAK_SYNCHRONOUS  normal, full or both (default both: the kills are split between them)
 *   SOAK_WORKERS  concurrent client loops (default 8)
 *
 * Exits 0 when every promise held, 1 with the violations otherwise.
 */
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCrashCycles, type CrashReport } from '../helpers/crash-workload';

function intFrom(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`${name}=${raw} is not a whole number\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  const kills = intFrom('SOAK_KILLS', 200);
  const seconds = intFrom('SOAK_SECONDS', 0);
  const seed = intFrom('SOAK_SEED', randomInt(2 ** 31));
  const workers = intFrom('SOAK_WORKERS', 8);
  const modes = (process.env.SOAK_SYNCHRONOUS ?? 'both') === 'both' ? ['normal', 'full'] : [process.env.SOAK_SYNCHRONOUS!];
  console.log(`soak: ${kills} kills, at least ${seconds} s, synchronous ${modes.join(' + ')}, seed ${seed} (replay with SOAK_SEED=${seed})`);

  const reports: [string, CrashReport][] = [];
  for (const [i, synchronous] of modes.entries()) {
    const dir = mkdtempSync(join(tmpdir(), 'sessiond-soak-'));
    try {
      // The kills and the time are split between the modes; each mode gets its own seed from the one printed.
      const share = (n: number) => Math.ceil(n / modes.length);
      const report = await runCrashCycles({
        dir, seed: seed + i, kills: share(kills), minSeconds: share(seconds), workers, env: { SESSIOND_SYNCHRONOUS: synchronous },
        log: (line) => console.log(`[synchronous=${synchronous}] ${line}`),
      });
      reports.push([synchronous, report]);
      if (report.violations.length > 0) break;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  let failed = false;
  for (const [synchronous, r] of reports) {
    console.log(`synchronous=${synchronous}: ${r.kills} kills (seed ${r.seed}); acknowledged ${JSON.stringify(r.acked)}; unknown ${JSON.stringify(r.unknown)}, ${r.unknownCommitted} committed; ${r.sessionsTracked} sessions tracked; ${r.violations.length} violations`);
    for (const v of r.violations) console.log(`  VIOLATION ${v}`);
    failed ||= r.violations.length > 0;
  }
  const total = reports.reduce((n, [, r]) => n + r.kills, 0);
  console.log(failed ? `soak FAILED after ${total} kills` : `soak passed: ${total} kills, nothing acknowledged was lost`);
  process.exit(failed ? 1 : 0);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
