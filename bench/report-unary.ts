/*
 * The unary part's targets and table: every call against the bare grpc-js
 * server's empty RPC (bench/bare-server.ts), with sessiond's own empty RPC as
 * a row of its own, so that what sessiond's per-call machinery costs shows
 * apart from what each call's work costs.
 */
import type { OpName } from './options';
import type { TargetCheck } from './report';
import { num, table, verdict } from './table';
import type { UnaryRow } from './unary';

/** Server CPU per call at most this many times the bare empty RPC's (issue 16). */
const CPU_TARGETS: readonly [OpName, UnaryRow['synchronous'], number][] = [
  ['Empty', 'NORMAL', 1.1], ['ValidateSession', 'NORMAL', 1.5], ['GetSession', 'NORMAL', 1.5], ['CreateSession', 'NORMAL', 2.0],
];
/** Rate at least this share of the bare empty RPC's: reads 0.85, creates 0.75. */
const RATE_TARGETS: readonly [OpName, UnaryRow['synchronous'], number][] = [
  ['ValidateSession', 'NORMAL', 0.85], ['GetSession', 'NORMAL', 0.85], ['CreateSession', 'NORMAL', 0.75],
];

const BARE = 'x the bare empty RPC';

/** How a call is named in the table and the targets. */
function labelOf(u: Pick<UnaryRow, 'op' | 'synchronous'>): string {
  if (u.op === 'Empty') return "sessiond's empty RPC";
  return u.op === 'CreateSession' ? `CreateSession ${u.synchronous}` : u.op;
}

const cpuName = (label: string, c: number) => `${label} server CPU per call at ${c} in flight`;
const rateName = (label: string, c: number) => `${label} rate at ${c} in flight`;

/** The unary targets, read at concurrency `c` on the default SQLite server (no variant). */
export function unaryTargets(unary: UnaryRow[], c: number): TargetCheck[] {
  const row = (op: OpName, sync: UnaryRow['synchronous']) =>
    unary.find((r) => r.op === op && r.synchronous === sync && r.concurrency === c && r.storage === 'sqlite' && !r.variant);
  const checks: TargetCheck[] = [];
  for (const [op, sync, most] of CPU_TARGETS) {
    const value = row(op, sync)?.ratio.cpu ?? null;
    checks.push({ name: cpuName(labelOf({ op, synchronous: sync }), c), target: `<= ${most}${BARE}`, value, met: value === null ? null : value <= most });
  }
  for (const [op, sync, least] of RATE_TARGETS) {
    const value = row(op, sync)?.ratio.rate ?? null;
    checks.push({ name: rateName(labelOf({ op, synchronous: sync }), c), target: `>= ${least}${BARE}`, value, met: value === null ? null : value >= least });
  }
  return checks;
}

const mean = (rows: UnaryRow[], of: (u: UnaryRow) => number | null) => rows.reduce((n, u) => n + (of(u) ?? 0), 0) / rows.length;

/** The unary table: per server configuration and concurrency, the bare baseline's row, then each call's. */
export function formatUnary(unary: UnaryRow[], targets: TargetCheck[], c: number): string {
  const targetOf = (name: string) => targets.find((t) => t.name === name);
  const out = [
    'Unary calls. Each call measured alternately with the empty RPC of a bare grpc-js server (bench/bare-server.ts, a process of',
    "its own: no interceptors, metrics, decoding wrapper or caller check); ratios are to the adjacent bare windows; CPU is each server's",
    `utime+stime per call; sessiond runs with principals, every call sending an API key (the bare server gets it too). Targets at ${c} in flight.`,
  ];
  if (unary.some((u) => u.storage === 'postgres')) {
    out.push('[postgres, N replicas] rows: the same calls with the sessions in PostgreSQL (sync "on": synchronous_commit); with 2 replicas',
      'the load client alternates between them and CPU is both servers\' (never PostgreSQL\'s).');
  }
  out.push('');
  const rows: string[][] = [];
  const seen = new Set<string>();
  const blank = ['', '', ''];
  for (const u of unary) {
    const key = `${u.storage}/${u.synchronous}/${u.variant ?? ''}/${u.concurrency}`;
    if (!seen.has(key)) {
      seen.add(key);
      const group = unary.filter((x) => `${x.storage}/${x.synchronous}/${x.variant ?? ''}/${x.concurrency}` === key);
      rows.push([`bare grpc-js empty RPC (the baseline, mean of its windows)${u.variant ? ` [${u.variant}]` : ''}`, u.synchronous, String(u.concurrency),
        num(mean(group, (x) => x.bare.rate)), '', num(mean(group, (x) => x.bare.p99Ms), 2), num(mean(group, (x) => x.bare.cpuUsPerCall)),
        num(mean(group, (x) => x.bare.clientCpuUsPerCall)), '1.00', '1.00', '1.00', '', '']);
    }
    const label = labelOf(u);
    const checks = u.concurrency === c && !u.variant && u.storage === 'sqlite'
      ? [targetOf(rateName(label, c)), targetOf(cpuName(label, c))].filter((t) => t !== undefined)
      : [];
    const extra = u.touchWriteShare !== undefined ? ` (${Math.round(u.touchWriteShare * 100)}% wrote)` : '';
    rows.push([
      `${u.op === 'Empty' ? label : u.op}${extra}${u.variant ? ` [${u.variant}]` : ''}`, u.synchronous, String(u.concurrency),
      num(u.call.rate), num(u.call.p50Ms, 2), num(u.call.p99Ms, 2), num(u.call.cpuUsPerCall), num(u.call.clientCpuUsPerCall),
      num(u.ratio.rate, 2), num(u.ratio.p99, 2), num(u.ratio.cpu, 2),
      checks.map((t) => `${t.target.replace(BARE, 'x')} ${t.name.includes(' rate ') ? 'rate' : 'CPU'}`).join(', '),
      checks.map((t) => verdict(t.met)).join(','),
    ]);
    if (u.call.errors + u.bare.errors > 0) rows.push([`  ! ${u.call.errors + u.bare.errors} errors: ${u.call.firstError ?? u.bare.firstError}`, '', '', '', '', '', '', '', ...blank, '', '']);
  }
  out.push(table(['call', 'sync', 'conc', 'calls/s', 'p50 ms', 'p99 ms', 'CPU us/call', 'client us/call', 'x bare rate', 'x bare p99', 'x bare CPU', 'target', 'met'], rows), '');
  const backends = backendsSideBySide(unary, c);
  if (backends) out.push(backends, '');
  return out.join('\n');
}

/** The default rows of each backend at concurrency `c`, one line per call; undefined without PostgreSQL rows. */
function backendsSideBySide(unary: UnaryRow[], c: number): string | undefined {
  const at = unary.filter((u) => u.concurrency === c);
  const sqlite = at.filter((u) => u.storage === 'sqlite' && u.synchronous === 'NORMAL' && !u.variant);
  const pg = [...new Set(at.filter((u) => u.storage === 'postgres').map((u) => u.variant!))];
  if (pg.length === 0) return undefined;
  const columns = [{ name: 'SQLite', rows: sqlite }, ...pg.map((v) => ({ name: v.replace('postgres', 'PG'), rows: at.filter((u) => u.variant === v) }))];
  const ops = [...new Set(at.filter((u) => u.storage === 'postgres').map((u) => u.op))];
  const cells = (row: UnaryRow | undefined) => [num(row?.call.rate), num(row?.call.p99Ms, 2), num(row?.ratio.rate, 2), num(row?.ratio.cpu, 2)];
  return [`SQLite and PostgreSQL side by side, ${c} in flight (x rate, x CPU: to the bare grpc-js empty RPC):`, '',
    table(['call', ...columns.flatMap((k) => [`${k.name} calls/s`, 'p99 ms', 'x rate', 'x CPU'])],
      ops.map((op) => [op === 'Empty' ? labelOf({ op, synchronous: 'NORMAL' }) : op, ...columns.flatMap((k) => cells(k.rows.find((u) => u.op === op)))]))].join('\n');
}
