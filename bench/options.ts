/*
 * The bench's settings: BENCH_* variables (make passes `make bench BENCH_X=...`
 * through), or the same names as --flags (`--window 1s`). Unknown names and bad
 * values are all reported at once, as src/server/config.ts does for the server.
 */
import { parseDuration } from '../src/shared/units';

export const OPS = [
  'ValidateSession', 'ValidateSession+touch', 'GetSession', 'CreateSession', 'ListSessions', 'UpdateSession', 'DeleteSession',
  // The empty RPC with an answer as long as ValidateSession's: what the answer's size alone costs the transport.
  'Empty+answer',
] as const;
/**
 * Calls only the durable part measures, after every other part that uses the
 * filled database: a rotation replaces a live session's token, which would
 * leave the pool's tokens stale for the validations.
 */
export const DURABLE_OPS = ['RotateSessionToken'] as const;
export type OpName = (typeof OPS)[number] | (typeof DURABLE_OPS)[number];

export const PARTS = ['micro', 'unary', 'full', 'ablation', 'durable', 'stream', 'stalls'] as const;
export type Part = (typeof PARTS)[number];

export interface BenchOptions {
  /** Live sessions pre-filled for the unary and streaming measurements. */
  sessions: number;
  /** Length of one measured window. */
  windowMs: number;
  /** Unmeasured run of each call before its rounds (JIT, caches). */
  warmupMs: number;
  /** Pairs of windows (empty RPC, then the call; the order flips every round). */
  rounds: number;
  concurrency: number[];
  /** Client connections (HTTP/2) the unary load is spread over. */
  channels: number;
  /** ValidateSessionStream streams (and Redis connections) for the streaming comparison. */
  streams: number;
  streamConcurrency: number[];
  /** Expired sessions for the stall measurements (purge, sweep); RSS is read with them stored. */
  stallSessions: number;
  /** How long the light load runs alone, as the stalls' baseline. */
  stallBaselineMs: number;
  /** Calls in flight while a purge, sweep or checkpoint runs. */
  stallConcurrency: number;
  /** Sweep interval of the server that measures the background sweep. */
  sweepIntervalMs: number;
  ops: OpName[];
  parts: Part[];
  /** Where the JSON goes. */
  out: string;
  /** When set, servers run with --cpu-prof into this folder. */
  cpuProfDir: string | undefined;
  /** Server settings for every server the bench starts, as SESSIOND_* variables (e.g. cache-size=-65536 gives SESSIOND_CACHE_SIZE). */
  serverSettings: Record<string, string>;
  /**
   * How the servers run: 'dist' compiled by tsc first, as the Docker image runs
   * it (node dist/src/main.js), or 'tsx' from the TypeScript sources.
   */
  server: 'dist' | 'tsx';
  /** Extra node flags for every server the bench starts (V8 heap sizes, --trace-gc). */
  serverNodeArgs: string[];
  /** When set, what node itself prints on the servers' stdout (--trace-gc and the like) is appended there. */
  serverStdout: string | undefined;
  smoke: boolean;
}

interface Spec {
  name: string;
  kind: 'int' | 'duration' | 'ints' | 'string' | 'bool' | 'ops' | 'parts';
  default: string;
  smoke?: string;
  help: string;
}

const SPECS: Spec[] = [
  { name: 'smoke', kind: 'bool', default: 'false', help: 'tiny fills and windows: proves the bench works end to end in seconds' },
  { name: 'sessions', kind: 'int', default: '100000', smoke: '400', help: 'live sessions pre-filled before the server starts' },
  { name: 'window', kind: 'duration', default: '2s', smoke: '60ms', help: 'length of one measured window' },
  { name: 'warmup', kind: 'duration', default: '500ms', smoke: '20ms', help: 'unmeasured run of each call before its rounds' },
  { name: 'rounds', kind: 'int', default: '3', smoke: '1', help: 'alternating pairs of windows (empty RPC / the call) per call and concurrency' },
  { name: 'concurrency', kind: 'ints', default: '1,16,64', smoke: '1,4', help: 'calls in flight; the targets are read at the largest' },
  { name: 'channels', kind: 'int', default: '4', smoke: '2', help: 'client connections the unary load is spread over' },
  { name: 'streams', kind: 'int', default: '4', smoke: '2', help: 'validation streams (and Redis connections) in the streaming comparison' },
  { name: 'stream-concurrency', kind: 'ints', default: '64,256', smoke: '8', help: 'validations in flight in the streaming comparison' },
  { name: 'stall-sessions', kind: 'int', default: '1000000', smoke: '3000', help: 'expired sessions stored for the purge, sweep and RSS measurements' },
  { name: 'stall-baseline', kind: 'duration', default: '30s', smoke: '200ms', help: 'how long the light load runs alone as the stalls\' baseline (long enough to see some major garbage collections)' },
  { name: 'stall-concurrency', kind: 'int', default: '16', smoke: '2', help: 'calls in flight while a purge, sweep or checkpoint runs' },
  { name: 'sweep-interval', kind: 'duration', default: '2s', smoke: '500ms', help: 'sweep interval of the server that measures the background sweep' },
  { name: 'ops', kind: 'ops', default: OPS.join(','), help: `calls to measure: ${OPS.join(', ')}` },
  { name: 'parts', kind: 'parts', default: PARTS.join(','), help: `parts to run: ${PARTS.join(', ')}` },
  { name: 'out', kind: 'string', default: 'bench/results/latest.json', help: 'where the JSON results go' },
  { name: 'server-settings', kind: 'string', default: '', help: 'settings for every server the bench starts, flag=value[,flag=value...] (e.g. cache-size=-65536): to measure a setting' },
  { name: 'server', kind: 'string', default: 'dist', help: 'dist: the servers run compiled (tsc, then node dist/src/main.js, as in the Docker image); tsx: from the sources (node --import tsx src/main.ts)' },
  { name: 'server-node-args', kind: 'string', default: '', help: 'node flags for every server the bench starts, space-separated (e.g. --max-semi-space-size=32 --trace-gc)' },
  { name: 'server-stdout', kind: 'string', default: '', help: 'file: append what node prints on the servers\' stdout (e.g. --trace-gc lines)' },
  { name: 'cpu-prof', kind: 'string', default: '', help: 'folder: run the servers with node --cpu-prof, profiles written there at exit' },
];

/** "cache-size=-65536,group-commit=false" as SESSIOND_* variables. */
function parseServerSettings(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const m = /^([a-z][a-z0-9-]*)=(.*)$/.exec(pair);
    if (!m) throw new BenchOptionsError(`BENCH_SERVER_SETTINGS: "${pair}" is not flag=value (e.g. cache-size=-65536)`);
    env[`SESSIOND_${m[1]!.toUpperCase().replace(/-/g, '_')}`] = m[2]!;
  }
  return env;
}

export function envName(name: string): string {
  return `BENCH_${name.toUpperCase().replace(/-/g, '_')}`;
}

export class BenchOptionsError extends Error {}

/** @throws BenchOptionsError listing every problem. */
export function loadBenchOptions(argv: readonly string[], env: NodeJS.ProcessEnv): BenchOptions {
  const problems: string[] = [];
  const given = new Map<string, string>();
  for (const key of Object.keys(env)) {
    if (!key.startsWith('BENCH_')) continue;
    const spec = SPECS.find((s) => envName(s.name) === key);
    if (spec) given.set(spec.name, env[key]!);
    else problems.push(`unknown variable ${key}`);
  }
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(argv[i]!);
    const spec = m && SPECS.find((s) => s.name === m[1]);
    if (!m || !spec) {
      problems.push(`unknown argument ${JSON.stringify(argv[i])}`);
      continue;
    }
    const value = m[2] ?? (spec.kind === 'bool' ? 'true' : argv[++i]);
    if (value === undefined) problems.push(`--${spec.name} needs a value`);
    else given.set(spec.name, value);
  }
  const smoke = /^(1|true|yes|on)$/i.test(given.get('smoke') ?? 'false');
  const values = new Map<string, unknown>();
  for (const s of SPECS) {
    const text = (given.get(s.name) ?? (smoke && s.smoke !== undefined ? s.smoke : s.default)).trim();
    const v = parse(s, text);
    if (typeof v === 'string' && v.startsWith('!')) problems.push(`${envName(s.name)} / --${s.name}: ${v.slice(1)}`);
    else values.set(s.name, v);
  }
  if (values.has('server') && !['dist', 'tsx'].includes(values.get('server') as string)) {
    problems.push(`${envName('server')} / --server: ${JSON.stringify(values.get('server'))} is neither dist nor tsx`);
  }
  if (problems.length > 0) throw new BenchOptionsError(`bad bench settings:\n${problems.map((p) => `  - ${p}`).join('\n')}\n\n${helpText()}`);
  const get = <T>(name: string) => values.get(name) as T;
  return {
    sessions: get('sessions'),
    windowMs: get('window'),
    warmupMs: get('warmup'),
    rounds: get('rounds'),
    concurrency: get('concurrency'),
    channels: get('channels'),
    streams: get('streams'),
    streamConcurrency: get('stream-concurrency'),
    stallSessions: get('stall-sessions'),
    stallBaselineMs: get('stall-baseline'),
    stallConcurrency: get('stall-concurrency'),
    sweepIntervalMs: get('sweep-interval'),
    ops: get('ops'),
    parts: get('parts'),
    out: get('out'),
    cpuProfDir: get<string>('cpu-prof') || undefined,
    serverSettings: parseServerSettings(get<string>('server-settings')),
    server: get<'dist' | 'tsx'>('server'),
    serverNodeArgs: get<string>('server-node-args').split(/\s+/).filter((a) => a !== ''),
    serverStdout: get<string>('server-stdout') || undefined,
    smoke,
  };
}

function parse(s: Spec, text: string): unknown {
  const positive = (t: string) => (/^\d+$/.test(t) && Number(t) > 0 ? Number(t) : undefined);
  switch (s.kind) {
    case 'bool':
      if (/^(1|true|yes|on)$/i.test(text)) return true;
      if (/^(0|false|no|off)$/i.test(text)) return false;
      return `!${JSON.stringify(text)} is not a boolean`;
    case 'int':
      return positive(text) ?? `!${JSON.stringify(text)} is not a positive integer`;
    case 'duration': {
      const ms = parseDuration(text);
      return ms !== undefined && ms > 0 ? ms : `!${JSON.stringify(text)} is not a duration (e.g. 500ms, 2s)`;
    }
    case 'ints': {
      const list = text.split(',').map((t) => positive(t.trim()));
      return list.length > 0 && list.every((n) => n !== undefined) ? list : `!${JSON.stringify(text)} is not a list of positive integers (e.g. 1,16,64)`;
    }
    case 'ops':
    case 'parts': {
      const known: readonly string[] = s.kind === 'ops' ? OPS : PARTS;
      const list = text.split(',').map((t) => t.trim()).filter(Boolean);
      const bad = list.filter((t) => !known.includes(t));
      return bad.length === 0 && list.length > 0 ? list : `!${bad.join(', ') || '(empty)'}: expected some of ${known.join(', ')}`;
    }
    case 'string':
      return text;
  }
}

export function helpText(): string {
  return ['make bench settings (variable, or --flag on `node --import tsx bench/main.ts`):', '']
    .concat(SPECS.map((s) => `  ${envName(s.name).padEnd(26)} --${s.name.padEnd(20)} default ${s.default}${s.smoke ? ` (smoke: ${s.smoke})` : ''}\n      ${s.help}`))
    .join('\n');
}
