/*
 * A closed-loop load generator: `concurrency` workers, each issuing its next
 * call as soon as the previous one answers, until the window ends. The window
 * lasts until the last call in flight has answered, and the server's CPU time
 * is read at both ends of that same interval.
 */
import { cpuMicros } from './server-process';

/** Issues one call for `worker`; `done` is called once, with an error message on failure. */
export type Issue = (worker: number, done: (error?: string) => void) => void;

export interface Window {
  calls: number;
  errors: number;
  firstError: string | undefined;
  durationMs: number;
  /** Server CPU (utime + stime, summed over the pids) over the window, in microseconds; 0 without a pid. */
  cpuUs: number;
  /** The load generator's own CPU over the window (this process), in microseconds. */
  clientCpuUs: number;
  latenciesMs: Float64Array;
}

export interface Summary {
  calls: number;
  errors: number;
  firstError?: string;
  /** Calls per second over all windows. */
  rate: number;
  p50Ms: number;
  p99Ms: number;
  /** Server CPU microseconds per call; null when no server was measured. */
  cpuUsPerCall: number | null;
  /**
   * The load generator's CPU microseconds per call. It shares the machine with
   * the server: when this nears the server's figure, the client is what limits the rate.
   */
  clientCpuUsPerCall: number;
}

/** The server processes whose CPU a window counts: one, or the replicas that share the load. */
export type Pids = number | readonly number[];

const cpuOf = (pid: Pids) => (typeof pid === 'number' ? cpuMicros(pid) : pid.reduce((n, p) => n + cpuMicros(p), 0));

export function runWindow(issue: Issue, concurrency: number, durationMs: number, pid?: Pids): Promise<Window> {
  return drive(issue, concurrency, { end: performance.now() + durationMs }, pid);
}

/** Keeps `concurrency` calls in flight until `until.end` (which may move) has passed. */
function drive(issue: Issue, concurrency: number, until: { end: number }, pid?: Pids): Promise<Window> {
  return new Promise((resolve) => {
    let latencies = new Float64Array(1 << 14);
    let calls = 0;
    let errors = 0;
    let firstError: string | undefined;
    let active = concurrency;
    const cpu0 = pid === undefined ? 0 : cpuOf(pid);
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    const finish = (now: number) => {
      const cpuUs = pid === undefined ? 0 : cpuOf(pid) - cpu0;
      const client = process.cpuUsage(client0);
      resolve({ calls, errors, firstError, durationMs: now - t0, cpuUs, clientCpuUs: client.user + client.system, latenciesMs: latencies.subarray(0, calls) });
    };
    const loop = (worker: number) => {
      const started = performance.now();
      issue(worker, (error) => {
        const now = performance.now();
        if (calls === latencies.length) {
          const bigger = new Float64Array(latencies.length * 2);
          bigger.set(latencies);
          latencies = bigger;
        }
        latencies[calls++] = now - started;
        if (error !== undefined) {
          errors++;
          firstError ??= error;
        }
        if (now < until.end) loop(worker);
        else if (--active === 0) finish(now);
      });
    };
    for (let w = 0; w < concurrency; w++) loop(w);
  });
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Pools windows: rate over their summed time, percentiles over every call, CPU over every call. */
export function summarize(windows: Window[], measuredCpu = true): Summary {
  const calls = windows.reduce((n, w) => n + w.calls, 0);
  const all = new Float64Array(calls);
  let at = 0;
  for (const w of windows) {
    all.set(w.latenciesMs, at);
    at += w.calls;
  }
  all.sort();
  const ms = windows.reduce((n, w) => n + w.durationMs, 0);
  const cpu = windows.reduce((n, w) => n + w.cpuUs, 0);
  const clientCpu = windows.reduce((n, w) => n + w.clientCpuUs, 0);
  const errors = windows.reduce((n, w) => n + w.errors, 0);
  const firstError = windows.find((w) => w.firstError !== undefined)?.firstError;
  return {
    calls,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    rate: ms > 0 ? (calls * 1000) / ms : 0,
    p50Ms: percentile(all, 50),
    p99Ms: percentile(all, 99),
    cpuUsPerCall: measuredCpu && calls > 0 ? cpu / calls : null,
    clientCpuUsPerCall: calls > 0 ? clientCpu / calls : 0,
  };
}

/** A background load until `stop()` is called (for the stall measurements). */
export function runUntil(issue: Issue, concurrency: number): { stop(): Promise<Summary> } {
  const until = { end: Infinity };
  const running = drive(issue, concurrency, until);
  return {
    async stop() {
      until.end = 0;
      return summarize([await running], false);
    },
  };
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
