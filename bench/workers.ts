/*
 * sessiond with --workers 1 and 2 (SESSIOND_WORKERS), both serving the one
 * filled database at once: ValidateSession (unary, spread over several
 * connections, which the primary hands to its workers in turn),
 * ValidateSessionStream (several streams, so several connections) and Redis
 * GET, in alternating windows of one run (the two servers' order flips every
 * round). Server CPU is summed over each server's process tree, primary and
 * workers, read afresh at every window. A server that refuses the setting, or
 * forks no workers for it, gives a skipped row with the reason: no figure is
 * made up for it.
 */
import { SessiondClient, type StreamValidator } from '../src/client/client';
import { freePort } from '../test/helpers/postgres';
import { median, runWindow, summarize, type Issue, type Summary, type Window } from './load';
import type { BenchOptions } from './options';
import { nodeProcesses, processTree } from './proc-tree';
import { fillRedis, redisClients, type RedisStart } from './redis';
import { Channels } from './rpc';
import { startServer, type ServerProcess } from './server-process';
import { redisIssuer, redisValue, streamIssuer } from './stream';
import { issuer, workload, type Pools } from './workloads';

export const WORKER_COUNTS = [1, 2] as const;

export interface WorkersRow {
  workers: number;
  /** Why this row has no figures: the server refused the setting or ignored it. */
  skipped?: string;
  /** Node processes in the server's tree after it was measured (primary and workers). */
  processes: number;
  unary: Summary | null;
  stream: Summary | null;
}

export interface WorkersResults {
  unaryConcurrency: number;
  streamConcurrency: number;
  channels: number;
  streams: number;
  rows: WorkersRow[];
  /** Median over rounds of the rate at 2 workers over the rate at 1; null when either row was skipped. */
  scaling: { unary: number | null; stream: number | null };
  redis: Summary | null;
  redisServer: { version: string } | { skipped: string };
}

interface Started {
  workers: number;
  server: ServerProcess;
  channels: Channels;
  clients: SessiondClient[];
  validators: StreamValidator[];
}

/** The reason a start failed, in one line: the server's own complaint when it named the setting. */
function reasonOf(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const line = text.split('\n').find((l) => /WORKERS|workers/.test(l));
  return `the server did not start with SESSIOND_WORKERS: ${(line ?? text.split('\n')[0]!).trim().slice(0, 300)}`;
}

/** Waits until the tree holds a primary and `workers` children, or says why not. */
async function waitForWorkers(server: ServerProcess, workers: number, timeoutMs: number): Promise<string | undefined> {
  const until = Date.now() + timeoutMs;
  let seen = 0;
  while (Date.now() < until) {
    seen = nodeProcesses(server.pid).length - 1;
    if (seen >= workers) return undefined;
    await new Promise((r) => setTimeout(r, 100));
  }
  return `the server ignored SESSIOND_WORKERS=${workers}: ${seen} worker process${seen === 1 ? '' : 'es'} under it after ${timeoutMs / 1000} s`;
}

async function start(dbPath: string, workers: number, o: BenchOptions, channelCount: number): Promise<Started | { skipped: string }> {
  let server: ServerProcess;
  try {
    // A fixed port: workers forked by a primary share its listening socket, whatever port 0 would give each.
    server = await startServer(dbPath, { SESSIOND_WORKERS: String(workers), SESSIOND_LISTEN: `127.0.0.1:${await freePort()}` }, o.cpuProfDir);
  } catch (err) {
    return { skipped: reasonOf(err) };
  }
  // One worker may serve from the primary itself; more than one must be processes of their own.
  const ignored = workers > 1 ? await waitForWorkers(server, workers, 15_000) : undefined;
  if (ignored) {
    await server.stop();
    return { skipped: ignored };
  }
  const channels = new Channels(server.address, channelCount, server.apiKey);
  await channels.ready();
  const clients = Array.from({ length: o.streams }, () =>
    new SessiondClient(server.address, { apiKey: server.apiKey, channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }));
  return { workers, server, channels, clients, validators: clients.map((c) => c.openValidator()) };
}

export async function measureWorkers(dbPath: string, pools: Pools, redisStart: RedisStart, o: BenchOptions, log: (line: string) => void): Promise<WorkersResults> {
  const unaryConcurrency = Math.max(...o.concurrency);
  const streamConcurrency = Math.max(...o.streamConcurrency);
  // At least two connections per worker, so that round-robin hands each worker some.
  const channelCount = Math.max(o.channels, 2 * Math.max(...WORKER_COUNTS));
  const started: (Started | { skipped: string })[] = [];
  const redis = 'server' in redisStart ? redisStart.server : undefined;
  const redisConns = redis ? redisClients(redis.port, o.streams) : [];
  const keys = pools.tokens.map((t) => `session:${t}`);
  try {
    for (const n of WORKER_COUNTS) {
      const s = await start(dbPath, n, o, channelCount);
      started.push(s);
      if ('skipped' in s) log(`  ${n} worker${n > 1 ? 's' : ''}: SKIPPED, ${s.skipped}`);
      else log(`  ${n} worker${n > 1 ? 's' : ''}: server pid ${s.server.pid}, ${nodeProcesses(s.server.pid).length} node processes`);
    }
    if (redis) await fillRedis(redisConns[0]!, pools.live, (i) => keys[i]!, redisValue);
    const live = started.filter((s): s is Started => !('skipped' in s));
    const validate = workload('ValidateSession', pools);
    const unaryIssue = (s: Started): Issue => issuer(validate, s.channels);
    const streamIssue = (s: Started): Issue => streamIssuer(s.validators, pools);
    const redisIssue = redisIssuer(redisConns, keys, pools);
    for (const s of live) {
      await runWindow(unaryIssue(s), unaryConcurrency, o.warmupMs);
      await runWindow(streamIssue(s), streamConcurrency, o.warmupMs);
    }
    if (redis) await runWindow(redisIssue, streamConcurrency, o.warmupMs);
    const unaryW = live.map(() => [] as Window[]);
    const streamW = live.map(() => [] as Window[]);
    const redisW: Window[] = [];
    const ratios = { unary: [] as number[], stream: [] as number[] };
    const rateOf = (w: Window) => w.calls / w.durationMs;
    for (let round = 0; round < o.rounds; round++) {
      const order = live.map((_, i) => i);
      if (round % 2 === 1) order.reverse();
      const u: number[] = [];
      const st: number[] = [];
      for (const i of order) {
        const w = await runWindow(unaryIssue(live[i]!), unaryConcurrency, o.windowMs, processTree(live[i]!.server.pid));
        unaryW[i]!.push(w);
        u[i] = rateOf(w);
      }
      for (const i of order) {
        const w = await runWindow(streamIssue(live[i]!), streamConcurrency, o.windowMs, processTree(live[i]!.server.pid));
        streamW[i]!.push(w);
        st[i] = rateOf(w);
      }
      if (redis) redisW.push(await runWindow(redisIssue, streamConcurrency, o.windowMs, redis.pid));
      if (live.length === 2) {
        ratios.unary.push(u[1]! / u[0]!);
        ratios.stream.push(st[1]! / st[0]!);
      }
    }
    const rows: WorkersRow[] = started.map((s, k) => {
      if ('skipped' in s) return { workers: WORKER_COUNTS[k]!, skipped: s.skipped, processes: 0, unary: null, stream: null };
      const i = live.indexOf(s);
      return { workers: s.workers, processes: nodeProcesses(s.server.pid).length, unary: summarize(unaryW[i]!), stream: summarize(streamW[i]!) };
    });
    const both = live.length === 2;
    const result: WorkersResults = {
      unaryConcurrency, streamConcurrency, channels: channelCount, streams: o.streams, rows,
      scaling: { unary: both ? median(ratios.unary) : null, stream: both ? median(ratios.stream) : null },
      redis: redis ? summarize(redisW) : null,
      redisServer: redis ? { version: redis.version } : { skipped: (redisStart as { skipped: string }).skipped },
    };
    for (const r of rows) {
      if (r.skipped) continue;
      log(`  ${r.workers} worker(s), ${r.processes} processes: ValidateSession ${r.unary!.rate.toFixed(0)}/s (${r.unary!.cpuUsPerCall?.toFixed(1)} us server CPU), ` +
        `stream ${r.stream!.rate.toFixed(0)}/s (${r.stream!.cpuUsPerCall?.toFixed(1)} us)`);
    }
    log(`  scaling 2/1 workers: ValidateSession ${result.scaling.unary?.toFixed(2) ?? '-'}x, stream ${result.scaling.stream?.toFixed(2) ?? '-'}x` +
      (result.redis ? `; Redis GET ${result.redis.rate.toFixed(0)}/s` : '; Redis skipped'));
    return result;
  } finally {
    for (const s of started) {
      if ('skipped' in s) continue;
      for (const v of s.validators) v.close();
      for (const c of s.clients) c.close();
      s.channels.close();
      const code = await s.server.stop();
      if (code !== 0) log(`  warning: server ${s.server.pid} (${s.workers} workers) exited with ${code}`);
    }
    for (const c of redisConns) c.disconnect();
  }
}
