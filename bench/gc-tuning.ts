/*
 * What the server's cap on old-space growth (src/server/gc-tuning.ts) does to V8:
 * the same promoted garbage, in a probe process with V8's default growth and
 * in one with the cap, and the major collections each took. More and smaller
 * major collections are the point of the cap; the count is a V8 heuristic,
 * so it is reported here rather than asserted by the tests, which check only
 * that the server sets the flag.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HEAP_GROWING_PERCENT } from '../src/server/gc-tuning';

const run = promisify(execFile);
const PROBE = join(__dirname, 'gc-probe.ts');

export interface GcTuningResults {
  heapGrowingPercent: number;
  /** Rounds of 5,000 promoted objects each, the same in both probes. */
  rounds: number;
  /** Major collections with V8's default growth, and with the cap. */
  plainMajors: number;
  tunedMajors: number;
  /** tunedMajors / plainMajors; null when the plain probe saw none. */
  ratio: number | null;
}

async function majors(mode: 'default' | 'tuned', rounds: number): Promise<number> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', PROBE, mode, String(rounds)], { timeout: 120_000 });
  return (JSON.parse(stdout) as { majors: number }).majors;
}

export async function measureGcTuning(smoke: boolean, log: (line: string) => void): Promise<GcTuningResults> {
  // Enough promoted garbage for several major collections even by default, so
  // that one more or one fewer (a loaded machine) weighs little.
  const rounds = smoke ? 400 : 1200;
  const plainMajors = await majors('default', rounds);
  const tunedMajors = await majors('tuned', rounds);
  const ratio = plainMajors > 0 ? tunedMajors / plainMajors : null;
  log(`  major collections over ${rounds} rounds: ${plainMajors} by default, ${tunedMajors} with --heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return { heapGrowingPercent: HEAP_GROWING_PERCENT, rounds, plainMajors, tunedMajors, ratio };
}
