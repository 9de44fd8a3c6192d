/*
 * Unary calls measured alternately with the bare grpc-js server's empty RPC
 * (bench/bare-server.ts, a process of its own): per call and concurrency, a
 * warm-up of each, then `rounds` pairs of windows whose order flips every
 * round (B X, X B, B X ...), so that drift in the machine's load hits both
 * alike. Each window reads the CPU of the process(es) it loads: the bare
 * server's in B windows, sessiond's in X windows. The rate ratio is the median
 * of the per-round ratios of adjacent windows; latency and CPU are pooled per side.
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
  /** The bare grpc-js server's empty RPC, in the windows alternating with this call's. */
  bare: Summary;
  /** Per round: the call's rate over the adjacent bare window's rate. */
  roundRatios: number[];
  ratio: {
    /** Median of roundRatios: the call's rate as a share of the bare empty RPC's. */
    rate: number;
    /** p99 over the bare empty RPC's p99. */
    p99: number;
    /** Server CPU per call over the bare server's per empty RPC; null when a side saw no CPU ticks. */
    cpu: number | null;
  };
  /** ValidateSession+touch: share of calls that touched a session not touched before in the run (so they wrote). */
  touchWriteShare?: number;
}

/** The bare grpc-js server every call is measured against, and the load client's connections to it. */
export interface Baseline {
  readonly server: ServerProcess;
  readonly channels: Channels;
}

export async function measureUnary(
  server: ServerProcess | readonly ServerProcess[],
  channels: Channels,
  baseline: Baseline,
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
  const bare = issuer(workload('Bare', pools), baseline.channels);
  const barePid = baseline.server.pid;
  for (const concurrency of variant?.concurrency ?? o.concurrency) {
    for (const op of ops) {
      const call = issuer(workload(op, pools), channels);
      await runWindow(bare, concurrency, o.warmupMs);
      await runWindow(call, concurrency, o.warmupMs);
      const touchBefore = { writes: pools.touchWrites, calls: pools.touchCalls };
      const b: Window[] = [];
      const x: Window[] = [];
      const roundRatios: number[] = [];
      for (let r = 0; r < o.rounds; r++) {
        let wb: Window;
        let wx: Window;
        if (r % 2 === 0) {
          wb = await runWindow(bare, concurrency, o.windowMs, barePid);
          wx = await runWindow(call, concurrency, o.windowMs, pids);
        } else {
          wx = await runWindow(call, concurrency, o.windowMs, pids);
          wb = await runWindow(bare, concurrency, o.windowMs, barePid);
        }
        b.push(wb);
        x.push(wx);
        roundRatios.push(wx.calls / wx.durationMs / (wb.calls / wb.durationMs));
      }
      const cs = summarize(x);
      const bs = summarize(b);
      const row: UnaryRow = {
        op,
        synchronous,
        storage: variant?.storage ?? 'sqlite',
        replicas: servers.length,
        ...(variant ? { variant: variant.name } : {}),
        concurrency,
        call: cs,
        bare: bs,
        roundRatios,
        ratio: {
          rate: median(roundRatios),
          p99: cs.p99Ms / bs.p99Ms,
          cpu: cs.cpuUsPerCall && bs.cpuUsPerCall ? cs.cpuUsPerCall / bs.cpuUsPerCall : null,
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
  const errors = r.call.errors + r.bare.errors;
  return `  ${r.op}${r.synchronous === 'FULL' ? ' (FULL)' : ''}${r.variant ? ` [${r.variant}]` : ''} c=${r.concurrency}: ${f(r.call.rate)}/s = ${f(r.ratio.rate, 2)}x bare (${f(r.bare.rate)}/s)`
    + `, p99 ${f(r.call.p99Ms, 2)} ms, cpu ${f(r.call.cpuUsPerCall)} us/call = ${f(r.ratio.cpu, 2)}x bare (${f(r.bare.cpuUsPerCall)})`
    + (errors > 0 ? `, ${errors} ERRORS (${r.call.firstError ?? r.bare.firstError})` : '');
}
