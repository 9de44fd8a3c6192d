/*
 * Lookups on worker threads, measured: the threads experiment's stream server
 * (bench/stream-threads-server.ts) with its lookups on the main thread, on one
 * worker thread and on two, and sessiond's own ValidateSessionStream beside
 * them, in alternating windows of one run (the order rotates every round).
 * Each window reads the server's CPU over all its threads and its main
 * thread's alone: the main thread is what bounds one process, and what
 * threads could take off it is the lookups. Before measuring, every mode must
 * answer as sessiond does for live, revoked and unknown tokens.
 */
import { SessiondClient, type StreamValidator } from '../src/client/client';
import { idOf, tokenOf } from './fill';
import { median, runWindow, summarize, type Issue, type Summary, type Window } from './load';
import type { BenchOptions } from './options';
import { threadCpuMicros } from './proc-tree';
import { startStreamThreadsServer, type ServerProcess } from './server-process';
import type { Pools } from './workloads';

/** What each mode's lookups run on; null is sessiond itself. */
const MODES: { name: string; threads: number | null }[] = [
  { name: 'sessiond (its own stream)', threads: null },
  { name: 'experiment, lookups on the main thread', threads: 0 },
  { name: 'experiment, lookups on 1 worker thread', threads: 1 },
  { name: 'experiment, lookups on 2 worker threads', threads: 2 },
];

export interface ThreadsRow {
  name: string;
  threads: number | null;
  concurrency: number;
  /** cpuUsPerCall: the server process, every thread. */
  summary: Summary;
  /** The server's main thread alone, per validation. */
  mainCpuUsPerCall: number | null;
  /** Median over rounds of this mode's rate over the main-thread mode's in the same round. */
  vsMainThread: number;
}

export interface ThreadsResults {
  rows: ThreadsRow[];
  /** Answers compared with sessiond's before measuring (live, revoked, unknown); all agreed, or the part failed. */
  checked: number;
  cpus: number;
}

interface Target {
  mode: (typeof MODES)[number];
  server: ServerProcess;
  clients: SessiondClient[];
  validators: StreamValidator[];
}

function openTarget(mode: Target['mode'], server: ServerProcess, streams: number): Target {
  const clients = Array.from({ length: streams }, () =>
    new SessiondClient(server.address, { apiKey: server.apiKey ?? 'none', channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }));
  return { mode, server, clients, validators: clients.map((c) => c.openValidator()) };
}

/** Live tokens, one revoked through sessiond, one never issued: every mode must answer each as sessiond does. */
async function checkAnswers(targets: Target[], pools: Pools, sessiond: SessiondClient): Promise<number> {
  const revoked = pools.spare - 1;
  await sessiond.deleteSession(idOf('spare', revoked), true);
  const tokens = [...Array.from({ length: Math.min(20, pools.live) }, (_, i) => pools.tokens[i]!), tokenOf('spare', revoked), `${pools.tokens[0]!}x`];
  const answerOf = async (t: Target, token: string) => {
    const a = await t.validators[0]!.validate(token);
    return JSON.stringify({ valid: a.valid, reason: a.reason, id: a.session?.id, errorCode: a.errorCode });
  };
  const want = await Promise.all(tokens.map((tk) => answerOf(targets[0]!, tk)));
  if (!want.at(-2)!.includes('"valid":false') || !want.at(-1)!.includes('"valid":false')) throw new Error(`sessiond answered a revoked or unknown token as valid: ${want.slice(-2).join(' ')}`);
  for (const t of targets.slice(1)) {
    const got = await Promise.all(tokens.map((tk) => answerOf(t, tk)));
    got.forEach((g, i) => {
      if (g !== want[i]) throw new Error(`${t.mode.name} answered token ${i} with ${g}, sessiond with ${want[i]}`);
    });
  }
  return tokens.length * (targets.length - 1);
}

export async function measureStreamThreads(sessiond: ServerProcess, dbPath: string, pools: Pools, o: BenchOptions, cpus: number, log: (line: string) => void): Promise<ThreadsResults> {
  const servers: ServerProcess[] = [];
  const targets: Target[] = [];
  const admin = new SessiondClient(sessiond.address, { apiKey: sessiond.apiKey! });
  try {
    for (const mode of MODES) {
      const server = mode.threads === null ? sessiond : await startStreamThreadsServer(dbPath, mode.threads, o.cpuProfDir);
      if (mode.threads !== null) servers.push(server);
      targets.push(openTarget(mode, server, o.streams));
    }
    const checked = await checkAnswers(targets, pools, admin);
    log(`  every mode answered ${checked / (targets.length - 1)} tokens (live, revoked, unknown) as sessiond did`);
    const issue = (t: Target): Issue => (worker, done) => {
      t.validators[worker % t.validators.length]!.validate(pools.tokens[pools.randomLive()]!).then(
        (r) => done(r.errorCode !== 0 ? `error ${r.errorCode}: ${r.errorMessage}` : r.valid ? undefined : 'valid=false for a live session'),
        (err: unknown) => done(String(err)),
      );
    };
    const rows: ThreadsRow[] = [];
    for (const concurrency of o.streamConcurrency) {
      for (const t of targets) await runWindow(issue(t), concurrency, o.warmupMs);
      const windows = targets.map(() => [] as Window[]);
      const mainUs = targets.map(() => 0);
      const ratios = targets.map(() => [] as number[]);
      for (let round = 0; round < o.rounds; round++) {
        const rates: number[] = [];
        for (let k = 0; k < targets.length; k++) {
          // The order rotates, so that no mode always follows the same one.
          const i = (k + round) % targets.length;
          const t = targets[i]!;
          const main0 = threadCpuMicros(t.server.pid);
          const w = await runWindow(issue(t), concurrency, o.windowMs, t.server.pid);
          mainUs[i]! += threadCpuMicros(t.server.pid) - main0;
          windows[i]!.push(w);
          rates[i] = w.calls / w.durationMs;
        }
        targets.forEach((_, i) => ratios[i]!.push(rates[i]! / rates[1]!));
      }
      targets.forEach((t, i) => {
        const summary = summarize(windows[i]!);
        const row: ThreadsRow = {
          name: t.mode.name, threads: t.mode.threads, concurrency, summary,
          mainCpuUsPerCall: summary.calls > 0 ? mainUs[i]! / summary.calls : null,
          vsMainThread: median(ratios[i]!),
        };
        rows.push(row);
        log(`  ${row.name}, c=${concurrency}: ${summary.rate.toFixed(0)}/s (${row.vsMainThread.toFixed(2)}x main thread), server CPU ` +
          `${summary.cpuUsPerCall?.toFixed(1)} us/validation, main thread ${row.mainCpuUsPerCall?.toFixed(1)} us, client ${summary.clientCpuUsPerCall.toFixed(1)} us`);
      });
    }
    return { rows, checked, cpus };
  } finally {
    for (const t of targets) {
      for (const v of t.validators) v.close();
      for (const c of t.clients) c.close();
    }
    admin.close();
    for (const s of servers) {
      const code = await s.stop();
      if (code !== 0) log(`  warning: experiment server ${s.pid} exited with ${code}`);
    }
  }
}
