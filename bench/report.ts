/*
 * The performance targets checked against the figures, the printed tables,
 * and the JSON (the same figures) for bench/results/latest.json.
 */
import type { DecodeLimitResults } from './decode-limit';
import type { GcTuningResults } from './gc-tuning';
import type { MicroRow } from './micro';
import type { BenchOptions } from './options';
import { formatUnary, unaryTargets } from './report-unary';
import type { StallResults } from './stalls';
import type { StreamResults } from './stream';
import type { ThreadsResults } from './stream-threads';
import { formatThreads, formatWorkers, workersTargets } from './report-streams';
import type { WorkersResults } from './workers';
import { num, table, verdict } from './table';
import type { UnaryRow } from './unary';

export interface TargetCheck {
  name: string;
  target: string;
  value: number | null;
  /** null: not measured in this run (a part skipped, Redis absent). */
  met: boolean | null;
  note?: string;
}

export interface BenchResults {
  meta: Record<string, unknown>;
  options: BenchOptions;
  unary: UnaryRow[];
  /** In-process before/after of the hot-path changes (bench/micro.ts). */
  micro: MicroRow[];
  /** A max-size message of empty items: the generated decoder against the refusal before decoding (bench/decode-limit.ts). */
  decodeLimit: DecodeLimitResults | null;
  /** Major collections of the same promoted garbage, V8's default growth against the server's cap (bench/gc-tuning.ts). */
  gcTuning: GcTuningResults | null;
  streaming: StreamResults | null;
  /** The stream's lookups on worker threads, against the main thread and sessiond (bench/stream-threads.ts). */
  threads: ThreadsResults | null;
  /** sessiond with 1 and 2 workers, and the scaling (bench/workers.ts). */
  workers: WorkersResults | null;
  stalls: StallResults | null;
  /** What --durable-revocations costs RotateSessionToken at NORMAL; null when the durable part did not run. */
  durability: DurabilityCost | null;
  /** What the session events outbox costs CreateSession, per backend measured (empty when no off row ran). */
  outbox: OutboxCost[];
  targets: TargetCheck[];
}

export interface OutboxCost {
  backend: string;
  concurrency: number;
  onRate: number;
  offRate: number;
  /** Server CPU per create with the outbox minus without it (summed over the replicas' processes). */
  extraCpuUs: number | null;
  onP99Ms: number;
  offP99Ms: number;
}

/** CreateSession with the outbox (the plain rows) against the rows measured with --session-events false. */
export function outboxCost(unary: UnaryRow[]): OutboxCost[] {
  const pairs: [string, (u: UnaryRow) => boolean, string][] = [
    ['SQLite, synchronous=NORMAL', (u) => u.storage === 'sqlite' && u.synchronous === 'NORMAL' && u.variant === undefined, 'no session events'],
    ['PostgreSQL, 2 replicas', (u) => u.variant === 'postgres, 2 replicas', 'postgres, 2 replicas, no session events'],
  ];
  const out: OutboxCost[] = [];
  for (const [backend, isOn, offName] of pairs) {
    const off = unary.find((u) => u.op === 'CreateSession' && u.variant === offName);
    const on = off && unary.find((u) => u.op === 'CreateSession' && u.concurrency === off.concurrency && isOn(u));
    if (!on || !off) continue;
    const cpu = on.call.cpuUsPerCall != null && off.call.cpuUsPerCall != null ? on.call.cpuUsPerCall - off.call.cpuUsPerCall : null;
    out.push({ backend, concurrency: on.concurrency, onRate: on.call.rate, offRate: off.call.rate, extraCpuUs: cpu, onP99Ms: on.call.p99Ms, offP99Ms: off.call.p99Ms });
  }
  return out;
}

export interface DurabilityCost {
  concurrency: number;
  /** Calls per second with the fsync before each answer, and without it. */
  onRate: number;
  offRate: number;
  /** onRate / offRate. */
  rateRatio: number;
  /** Each side's rate as a share of the bare empty RPC's in its own windows, and the one over the other: the same, less the drift between the two servers' runs. */
  onVsBare: number;
  offVsBare: number;
  ratioVsBare: number;
  /** p99 latency, ms. */
  onP99Ms: number;
  offP99Ms: number;
}

/** The durable part's two rows side by side. */
export function durabilityCost(unary: UnaryRow[]): DurabilityCost | null {
  const on = unary.find((u) => u.variant === 'durable revocations on');
  const off = unary.find((u) => u.variant === 'durable revocations off');
  if (!on || !off) return null;
  return {
    concurrency: on.concurrency,
    onRate: on.call.rate,
    offRate: off.call.rate,
    rateRatio: on.call.rate / off.call.rate,
    onVsBare: on.ratio.rate,
    offVsBare: off.ratio.rate,
    ratioVsBare: on.ratio.rate / off.ratio.rate,
    onP99Ms: on.call.p99Ms,
    offP99Ms: off.call.p99Ms,
  };
}

const STALL_LIMIT_MS = 20;
const RSS_LIMIT_MB = 200;

/** The performance targets, read at the largest concurrency measured (64 by default, the load the targets are set for). */
export function checkTargets(o: BenchOptions, unary: UnaryRow[], streaming: StreamResults | null, stalls: StallResults | null, workers: WorkersResults | null = null): TargetCheck[] {
  const checks = unaryTargets(unary, Math.max(...o.concurrency));
  const atLeast = (name: string, target: number, value: number | null | undefined, unit: string) =>
    checks.push({ name, target: `>= ${target}${unit}`, value: value ?? null, met: value == null ? null : value >= target });
  const atMost = (name: string, target: number, value: number | null | undefined, unit: string) =>
    checks.push({ name, target: `<= ${target}${unit}`, value: value ?? null, met: value == null ? null : value <= target });

  for (const s of streaming?.rows ?? []) {
    atLeast(`ValidateSessionStream at ${s.concurrency} in flight`, 50_000, s.stream.rate, ' calls/s');
    atLeast(`ValidateSessionStream / Redis GET at ${s.concurrency} in flight`, 0.4, s.ratio, 'x Redis');
    if (s.ratio === null && 'skipped' in (streaming?.redis ?? {})) checks[checks.length - 1]!.note = 'Redis skipped';
  }
  checks.push(...workersTargets(workers));
  if (stalls) {
    const n = stalls.expiredSessions;
    atMost(`longest event-loop block, purge of ${n} expired sessions`, STALL_LIMIT_MS, stalls.purge.loop.maxMs, ' ms');
    atMost(`longest event-loop block, background sweep of ${n}`, STALL_LIMIT_MS, stalls.sweep.loop.maxMs, ' ms');
    atMost('longest event-loop block, TRUNCATE checkpoint under writes', STALL_LIMIT_MS, stalls.checkpoint.loop.maxMs, ' ms');
    atMost(`RSS with ${n + stalls.liveSessions} sessions stored`, RSS_LIMIT_MB, stalls.rss.withSessionsMb, ' MB');
    if (n < 1_000_000) checks[checks.length - 1]!.note = 'the target is for 1M sessions (BENCH_STALL_SESSIONS)';
  }
  return checks;
}

export function formatReport(r: BenchResults): string {
  const out: string[] = [];
  const c = Math.max(...r.options.concurrency);
  const targetOf = (name: string) => r.targets.find((t) => t.name === name);
  if (r.unary.length > 0) out.push(formatUnary(r.unary, r.targets, c));
  if (r.durability) {
    const d = r.durability;
    out.push(`Durable revocations (RotateSessionToken, synchronous=NORMAL, ${d.concurrency} in flight): ` +
      `on ${num(d.onRate)}/s (${num(d.onVsBare, 2)}x bare, p99 ${num(d.onP99Ms, 2)} ms), off ${num(d.offRate)}/s (${num(d.offVsBare, 2)}x bare, p99 ${num(d.offP99Ms, 2)} ms); ` +
      `on/off ${num(d.rateRatio, 2)} (${num(d.ratioVsBare, 2)} of the x-bare ratios)`, '');
  }
  for (const b of r.outbox) {
    out.push(`Session events outbox (CreateSession, ${b.backend}, ${b.concurrency} in flight): with it ${num(b.onRate)}/s (p99 ${num(b.onP99Ms, 2)} ms), ` +
      `without ${num(b.offRate)}/s (p99 ${num(b.offP99Ms, 2)} ms); rate ${num(b.onRate / b.offRate, 2)}x, ${b.extraCpuUs == null ? '-' : num(b.extraCpuUs, 1)} us more server CPU per create`, '');
  }
  if (r.micro.length > 0) {
    out.push('Hot-path changes, before and after, in-process on the filled database (CPU us per operation, median of the rounds):', '');
    out.push(table(['change', 'before', 'after', 'before us', 'after us', 'saved us'], r.micro.map((m) => [
      m.change, m.before, m.after, num(m.beforeUs, 1), num(m.afterUs, 1), num(m.beforeUs - m.afterUs, 1),
    ])), '');
  }
  if (r.decodeLimit) {
    const d = r.decodeLimit;
    const mib = (n: number) => num(n / 1024 / 1024, 2);
    out.push(`ValidateSessionStream item limit: one ${mib(d.messageBytes)} MiB message (max-message-bytes) of ${d.items} empty items, in-process`,
      '(CPU per message, median of the rounds; heap allocated while decoding, and still held by the result after a full collection):', '');
    out.push(table(['decoded by', 'CPU ms', 'allocated MiB', 'retained MiB'], [
      ['generated decoder (an object per item, counted after)', num(d.generated.cpuUs / 1000, 3), mib(d.generated.allocatedBytes), mib(d.generated.retainedBytes)],
      ['strict decoder: refused at item 1001, before decoding', num(d.refused.cpuUs / 1000, 3), mib(d.refused.allocatedBytes), mib(d.refused.retainedBytes)],
      ['ratio', `x${num(d.ratio.cpu)}`, `x${num(d.ratio.allocated)}`, ''],
    ]), '');
  }
  if (r.gcTuning) {
    const g = r.gcTuning;
    out.push(`Old-space growth cap (--heap-growing-percent=${g.heapGrowingPercent}): the same promoted garbage (${g.rounds} rounds) took ` +
      `${g.plainMajors} major collections by default and ${g.tunedMajors} with the cap (x${num(g.ratio, 2)})`, '');
  }
  if (r.streaming) {
    const s = r.streaming;
    out.push(`Streaming validation (openValidator(), ${r.options.streams} streams) vs Redis GET through ioredis (${r.options.streams} connections) ` +
      ('skipped' in s.redis ? `- Redis SKIPPED: ${s.redis.skipped}` : `- redis-server ${s.redis.version}`), '');
    out.push(table(['in flight', 'stream calls/s', 'per message', 'p50 ms', 'p99 ms', 'server CPU us/call', 'client us/call', 'Redis GET/s', 'Redis p99 ms', 'redis-server us/GET', 'client us/GET', 'ratio', 'target', 'met'],
      s.rows.map((row) => {
        const rate = targetOf(`ValidateSessionStream at ${row.concurrency} in flight`);
        const ratio = targetOf(`ValidateSessionStream / Redis GET at ${row.concurrency} in flight`);
        return [String(row.concurrency), num(row.stream.rate), num(row.perMessage, 1), num(row.stream.p50Ms, 2), num(row.stream.p99Ms, 2), num(row.stream.cpuUsPerCall), num(row.stream.clientCpuUsPerCall),
          num(row.redis?.rate), num(row.redis?.p99Ms, 2), num(row.redis?.cpuUsPerCall), num(row.redis?.clientCpuUsPerCall), num(row.ratio, 2), '>= 50000/s, >= 0.4x', `${verdict(rate?.met ?? null)},${verdict(ratio?.met ?? null)}`];
      })), '');
  }
  if (r.threads) out.push(formatThreads(r.threads));
  if (r.workers) out.push(formatWorkers(r.workers, r.targets));
  if (r.stalls) {
    const st = r.stalls;
    out.push(`Stalls: event-loop delay inside the server (monitorEventLoopDelay, 1 ms resolution) with ${st.expiredSessions} expired + ${st.liveSessions} live sessions,`,
      `a light load of ${r.options.stallConcurrency} validations (creates during the checkpoint) in flight throughout.`, '');
    const stallRow = (name: string, s: StallResults['baseline'], what: string, limit = true) =>
      [name, num(s.loop.maxMs, 1), num(s.loop.p99Ms, 1), num(s.loop.meanMs, 2), `${num(s.loop.gc.maxMs, 1)} ${s.loop.gc.maxKind}`, String(s.loop.gc.major),
        num(s.load.rate), num(s.load.p99Ms, 2), num(s.walPeakBytes / 1024 / 1024, 1), what,
        limit ? `<= ${STALL_LIMIT_MS} ms` : '', limit ? verdict(s.loop.maxMs <= STALL_LIMIT_MS) : ''];
    out.push(table(['while', 'max ms', 'p99 ms', 'mean ms', 'longest GC ms', 'major GCs', 'load calls/s', 'load p99 ms', 'WAL peak MB', 'what happened', 'target', 'met'], [
      stallRow('light load only (baseline)', st.baseline, '', false),
      stallRow('PurgeExpiredSessions', st.purge, `${st.purge.purged} purged in ${st.purge.batches} batches, ${num(st.purge.durationMs / 1000, 1)} s`),
      stallRow('background sweep', st.sweep, `${st.sweep.purged} purged in ${st.sweep.batches} batches${st.sweep.durationMs === null ? '' : `, ${num(st.sweep.durationMs / 1000, 1)} s`}`),
      stallRow('TRUNCATE checkpoint', st.checkpoint, `${st.checkpoint.walFramesBefore} frames in the WAL, ${num(st.checkpoint.durationMs, 1)} ms${st.checkpoint.busy ? ', busy' : ''}`),
    ]), '');
    const rss = targetOf(`RSS with ${st.expiredSessions + st.liveSessions} sessions stored`);
    out.push(`RSS with ${st.expiredSessions + st.liveSessions} sessions stored: ${num(st.rss.withSessionsMb, 1)} MB (just started ${num(st.rss.startedMb, 1)}, ` +
      `after validating across all ${num(st.rss.afterLoadMb, 1)}, after the purge ${num(st.rss.afterPurgeMb, 1)}; peak ${num(st.rss.peakPurgeServerMb, 1)} / ` +
      `${num(st.rss.peakSweepServerMb, 1)} MB on the purge / sweep servers); target < ${RSS_LIMIT_MB} MB: ${verdict(rss?.met ?? null)}${rss?.note ? ` (${rss.note})` : ''}`, '');
  }
  out.push('Targets', '');
  out.push(table(['target', 'wanted', 'measured', 'met'], r.targets.map((t) => [t.name, t.target, num(t.value, 2), verdict(t.met) + (t.note ? ` (${t.note})` : '')])));
  const met = r.targets.filter((t) => t.met === true).length;
  const failed = r.targets.filter((t) => t.met === false).length;
  out.push('', `${met} targets met, ${failed} not met, ${r.targets.length - met - failed} not measured.`);
  return out.join('\n');
}
