/*
 * The performance targets checked against the figures, the printed tables,
 * and the JSON (the same figures) for bench/results/latest.json.
 */
import type { DecodeLimitResults } from './decode-limit';
import type { GcTuningResults } from './gc-tuning';
import type { MicroRow } from './micro';
import type { BenchOptions, OpName } from './options';
import type { StallResults } from './stalls';
import type { StreamResults } from './stream';
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
  stalls: StallResults | null;
  /** What --durable-revocations costs RotateSessionToken at NORMAL; null when the durable part did not run. */
  durability: DurabilityCost | null;
  targets: TargetCheck[];
}

export interface DurabilityCost {
  concurrency: number;
  /** Calls per second with the fsync before each answer, and without it. */
  onRate: number;
  offRate: number;
  /** onRate / offRate. */
  rateRatio: number;
  /** Each side as a share of its own server's empty RPC, and the one over the other: the same, less the drift between the two servers' runs. */
  onVsEmpty: number;
  offVsEmpty: number;
  ratioVsEmpty: number;
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
    onVsEmpty: on.ratio.rate,
    offVsEmpty: off.ratio.rate,
    ratioVsEmpty: on.ratio.rate / off.ratio.rate,
    onP99Ms: on.call.p99Ms,
    offP99Ms: off.call.p99Ms,
  };
}

const STALL_LIMIT_MS = 20;
const RSS_LIMIT_MB = 200;

/** The performance targets, read at the largest concurrency measured (64 by default, the load the targets are set for). */
export function checkTargets(o: BenchOptions, unary: UnaryRow[], streaming: StreamResults | null, stalls: StallResults | null): TargetCheck[] {
  const c = Math.max(...o.concurrency);
  const at = ` at ${c} in flight`;
  const row = (op: OpName, sync: UnaryRow['synchronous']) => unary.find((r) => r.op === op && r.synchronous === sync && r.concurrency === c && !r.variant);
  const checks: TargetCheck[] = [];
  const atLeast = (name: string, target: number, value: number | null | undefined, unit = 'x empty') =>
    checks.push({ name, target: `>= ${target}${unit === 'x empty' ? 'x' : ` ${unit}`}`, value: value ?? null, met: value == null ? null : value >= target });
  const atMost = (name: string, target: number, value: number | null | undefined, unit: string) =>
    checks.push({ name, target: `<= ${target}${unit}`, value: value ?? null, met: value == null ? null : value <= target });

  const rated: [OpName, UnaryRow['synchronous'], number][] = [
    ['ValidateSession', 'NORMAL', 0.95], ['GetSession', 'NORMAL', 0.95], ['CreateSession', 'NORMAL', 0.85], ['CreateSession', 'FULL', 0.8],
  ];
  for (const [op, sync, target] of rated) atLeast(`${op}${op === 'CreateSession' ? ` ${sync}` : ''} rate${at}`, target, row(op, sync)?.ratio.rate);
  for (const [op, sync] of rated) atMost(`${op}${op === 'CreateSession' ? ` ${sync}` : ''} p99${at}`, 1.25, row(op, sync)?.ratio.p99, 'x the empty RPC p99');
  atMost(`ValidateSession server CPU per call${at}`, 1.3, row('ValidateSession', 'NORMAL')?.ratio.cpu, 'x the empty RPC');

  for (const s of streaming?.rows ?? []) {
    atLeast(`ValidateSessionStream at ${s.concurrency} in flight`, 50_000, s.stream.rate, 'calls/s');
    atLeast(`ValidateSessionStream / Redis GET at ${s.concurrency} in flight`, 0.4, s.ratio, 'x Redis');
    if (s.ratio === null && 'skipped' in (streaming?.redis ?? {})) checks[checks.length - 1]!.note = 'Redis skipped';
  }
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

const num = (n: number | null | undefined, digits = 0) => (n == null || !Number.isFinite(n) ? '-' : n.toFixed(digits));
const verdict = (met: boolean | null) => (met === null ? 'n/a' : met ? 'yes' : 'NO');

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** The default rows of each backend at concurrency `c`, one line per call; undefined without PostgreSQL rows. */
function backendsSideBySide(unary: UnaryRow[], c: number): string | undefined {
  const at = unary.filter((u) => u.concurrency === c);
  const sqlite = at.filter((u) => u.storage === 'sqlite' && u.synchronous === 'NORMAL' && !u.variant);
  const pg = [...new Set(at.filter((u) => u.storage === 'postgres').map((u) => u.variant!))];
  if (pg.length === 0) return undefined;
  const columns = [{ name: 'SQLite', rows: sqlite }, ...pg.map((v) => ({ name: v.replace('postgres', 'PG'), rows: at.filter((u) => u.variant === v) }))];
  const ops = [...new Set(at.filter((u) => u.storage === 'postgres').map((u) => u.op))];
  const cells = (row: UnaryRow | undefined) => [num(row?.call.rate), num(row?.call.p99Ms, 2), num(row?.ratio.rate, 2)];
  return [`SQLite and PostgreSQL side by side, ${c} in flight (x rate: to the empty RPC of the same servers):`, '',
    table(['call', ...columns.flatMap((k) => [`${k.name} calls/s`, 'p99 ms', 'x rate'])],
      ops.map((op) => [op, ...columns.flatMap((k) => cells(k.rows.find((u) => u.op === op)))]))].join('\n');
}

export function formatReport(r: BenchResults): string {
  const out: string[] = [];
  const c = Math.max(...r.options.concurrency);
  const targetOf = (name: string) => r.targets.find((t) => t.name === name);
  if (r.unary.length > 0) {
    out.push('Unary calls. Each call measured alternately with the empty RPC on the same server process;',
      `ratios are to the adjacent empty-RPC windows; CPU is the server's utime+stime per call. Targets at ${c} in flight.`);
    if (r.unary.some((u) => u.storage === 'postgres')) {
      out.push('[postgres, N replicas] rows: the same calls with the sessions in PostgreSQL (sync "on": synchronous_commit), against',
        'the empty RPC of those servers; with 2 replicas the load client alternates between them and CPU is both servers\' (never PostgreSQL\'s).');
    }
    out.push('');
    const rows: string[][] = [];
    const seen = new Set<string>();
    for (const u of r.unary) {
      const key = `${u.synchronous}/${u.variant ?? ''}/${u.concurrency}`;
      if (!seen.has(key)) {
        seen.add(key);
        const empties = r.unary.filter((x) => x.synchronous === u.synchronous && x.variant === u.variant && x.concurrency === u.concurrency);
        const rate = empties.reduce((n, x) => n + x.empty.rate, 0) / empties.length;
        const p99 = empties.reduce((n, x) => n + x.empty.p99Ms, 0) / empties.length;
        const cpu = empties.reduce((n, x) => n + (x.empty.cpuUsPerCall ?? 0), 0) / empties.length;
        const client = empties.reduce((n, x) => n + x.empty.clientCpuUsPerCall, 0) / empties.length;
        rows.push([`Empty RPC (mean of its windows)${u.variant ? ` [${u.variant}]` : ''}`, u.synchronous, String(u.concurrency), num(rate), '', num(p99, 2), num(cpu), num(client), '1.00', '1.00', '1.00', '', '']);
      }
      const label = u.op === 'CreateSession' ? `CreateSession ${u.synchronous}` : u.op;
      const checks = u.concurrency === c && !u.variant ? [targetOf(`${label} rate at ${c} in flight`), targetOf(`${label} p99 at ${c} in flight`),
        u.op === 'ValidateSession' ? targetOf(`ValidateSession server CPU per call at ${c} in flight`) : undefined].filter((t) => t !== undefined) : [];
      const extra = u.touchWriteShare !== undefined ? ` (${Math.round(u.touchWriteShare * 100)}% wrote)` : '';
      rows.push([
        `${u.op}${extra}${u.variant ? ` [${u.variant}]` : ''}`, u.synchronous, String(u.concurrency), num(u.call.rate), num(u.call.p50Ms, 2), num(u.call.p99Ms, 2), num(u.call.cpuUsPerCall), num(u.call.clientCpuUsPerCall),
        num(u.ratio.rate, 2), num(u.ratio.p99, 2), num(u.ratio.cpu, 2),
        checks.map((t) => t!.target.replace('x the empty RPC p99', 'x p99').replace('x the empty RPC', 'x CPU')).join(', '),
        checks.map((t) => verdict(t!.met)).join(','),
      ]);
      if (u.call.errors + u.empty.errors > 0) rows.push([`  ! ${u.call.errors + u.empty.errors} errors: ${u.call.firstError ?? u.empty.firstError}`, '', '', '', '', '', '', '', '', '', '', '', '']);
    }
    out.push(table(['call', 'sync', 'conc', 'calls/s', 'p50 ms', 'p99 ms', 'CPU us/call', 'client us/call', 'x rate', 'x p99', 'x CPU', 'target', 'met'], rows), '');
    const backends = backendsSideBySide(r.unary, c);
    if (backends) out.push(backends, '');
  }
  if (r.durability) {
    const d = r.durability;
    out.push(`Durable revocations (RotateSessionToken, synchronous=NORMAL, ${d.concurrency} in flight): ` +
      `on ${num(d.onRate)}/s (${num(d.onVsEmpty, 2)}x empty, p99 ${num(d.onP99Ms, 2)} ms), off ${num(d.offRate)}/s (${num(d.offVsEmpty, 2)}x empty, p99 ${num(d.offP99Ms, 2)} ms); ` +
      `on/off ${num(d.rateRatio, 2)} (${num(d.ratioVsEmpty, 2)} of the x-empty ratios)`, '');
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
