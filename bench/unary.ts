/*
 * Unary calls measured alternately with the empty RPC on the same server
 * process: per call and concurrency, a warm-up of each, then `rounds` pairs of
 * windows whose order flips every round (E X, X E, E X ...), so that drift in
 * the machine's load hits both alike. The rate ratio is the median of the
 * per-round ratios of adjacent windows; latency and CPU are pooled per side.
 */
import { median, runWindow, summarize, type Summary, type Window } from './load';
import type { BenchOptions, OpName } from './options';
import type { Channels } from './rpc';
import type { ServerProcess } from './server-process';
import { issuer, workload, type Pools } from './workloads';

export interface UnaryRow {
  op: OpName;
  /** SQLite's synchronous setting; 'on' on PostgreSQL (synchronous_commit, the server's default and the cluster's). */
  synchronous: 'NORMAL' | 'FULL' | 'on';
  /** Where the servers kept the sessions; PostgreSQL rows name their replicas (the load spread over them, CPU summed). */
  storage: 'sqlite' | 'postgres';
  replicas: number;
  /** Set on the on/off rows (the ablation part): which optimisations that server ran without. */
  variant?: string;
  concurrency: number;
  call: Summary;
  empty: Summary;
  /** Per round: the call's rate over the adjacent empty window's rate. */
  roundRatios: number[];
  ratio: {
    /** Median of roundRatios: the call's rate as a share of the empty RPC's. */
    rate: number;
    /** p99 over the empty RPC's p99. */
    p99: number;
    /** Server CPU per call over the empty RPC's; null when a side saw no CPU ticks. */
    cpu: number | null;
  };
  /** ValidateSession+touch: share of calls that touched a session not touched before in the run (so they wrote). */
  touchWriteShare?: number;
}

export async function measureUnary(
  server: ServerProcess | readonly ServerProcess[],
  channels: Channels,
  pools: Pools,
  ops: readonly OpName[],
  synchronous: UnaryRow['synchronous'],
  o: BenchOptions,
  log: (line: string) => void,
  variant?: { name: string; concurrency?: number[]; storage?: UnaryRow['storage'] },
): Promise<UnaryRow[]> {
  const rows: UnaryRow[] = [];
  const servers = 'pid' in server ? [server] : server;
  const pids = servers.map((s) => s.pid);
  const empty = issuer(workload('Empty', pools), channels);
  for (const concurrency of variant?.concurrency ?? o.concurrency) {
    for (const op of ops) {
      const call = issuer(workload(op, pools), channels);
      await runWindow(empty, concurrency, o.warmupMs);
      await runWindow(call, concurrency, o.warmupMs);
      const touchBefore = { writes: pools.touchWrites, calls: pools.touchCalls };
      const e: Window[] = [];
      const x: Window[] = [];
      const roundRatios: number[] = [];
      for (let r = 0; r < o.rounds; r++) {
        let we: Window;
        let wx: Window;
        if (r % 2 === 0) {
          we = await runWindow(empty, concurrency, o.windowMs, pids);
          wx = await runWindow(call, concurrency, o.windowMs, pids);
        } else {
          wx = await runWindow(call, concurrency, o.windowMs, pids);
          we = await runWindow(empty, concurrency, o.windowMs, pids);
        }
        e.push(we);
        x.push(wx);
        roundRatios.push(wx.calls / wx.durationMs / (we.calls / we.durationMs));
      }
      const cs = summarize(x);
      const es = summarize(e);
      const row: UnaryRow = {
        op,
        synchronous,
        storage: variant?.storage ?? 'sqlite',
        replicas: servers.length,
        ...(variant ? { variant: variant.name } : {}),
        concurrency,
        call: cs,
        empty: es,
        roundRatios,
        ratio: {
          rate: median(roundRatios),
          p99: cs.p99Ms / es.p99Ms,
          cpu: cs.cpuUsPerCall && es.cpuUsPerCall ? cs.cpuUsPerCall / es.cpuUsPerCall : null,
        },
      };
      if (op === 'ValidateSession+touch') {
        const calls = pools.touchCalls - touchBefore.calls;
        row.touchWriteShare = calls > 0 ? (pools.touchWrites - touchBefore.writes) / calls : 0;
      }
      rows.push(row);
      log(describe(row));
    }
  }
  return rows;
}

const f = (n: number | null, digits = 0) => (n === null || !Number.isFinite(n) ? '-' : n.toFixed(digits));

function describe(r: UnaryRow): string {
  const errors = r.call.errors + r.empty.errors;
  return `  ${r.op}${r.synchronous === 'FULL' ? ' (FULL)' : ''}${r.variant ? ` [${r.variant}]` : ''} c=${r.concurrency}: ${f(r.call.rate)}/s = ${f(r.ratio.rate, 2)}x empty (${f(r.empty.rate)}/s)`
    + `, p99 ${f(r.call.p99Ms, 2)} ms, cpu ${f(r.call.cpuUsPerCall)} us/call`
    + (errors > 0 ? `, ${errors} ERRORS (${r.call.firstError ?? r.empty.firstError})` : '');
}
