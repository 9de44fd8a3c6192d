/*
 * The bench's settings: BENCH_* variables (make passes `make bench BENCH_X=...`
 * through), or the same names as --flags (`--window 1s`). They are read by the
 * server's settings engine (src/shared/settings-engine.ts): unknown names and bad
 * values are all reported at once, and --server-settings is checked against
 * the server's own table.
 */
import { helpFor } from '../src/shared/settings-describe';
import { envName as prefixedEnvName, readSettings, settle, type Spec } from '../src/shared/settings-engine';
import { ENV_PREFIX, envName as serverEnvName, parseSetting, SETTINGS } from '../src/server/settings';

export const OPS = [
  // sessiond's own empty RPC (the bench service): what sessiond's per-call machinery costs above the bare server's.
  'Empty',
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

export const PARTS = ['micro', 'unary', 'full', 'ablation', 'durable', 'stream', 'threads', 'workers', 'stalls'] as const;
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
  /**
   * Whether the unary part also runs on PostgreSQL (a cluster the bench starts
   * itself): one replica, then two on one database. When on, a PostgreSQL
   * that cannot start fails the run; it is never skipped.
   */
  postgres: boolean;
  smoke: boolean;
}

interface BenchSpec extends Spec {
  /** The default of a smoke run (--smoke), when it differs. */
  readonly smoke?: string;
}

const ENV = 'BENCH_';

const SPECS = [
  { group: 'Run', flag: 'smoke', kind: 'bool', default: 'false', help: 'tiny fills and windows: proves the bench works end to end in seconds' },
  { group: 'Load', flag: 'sessions', kind: 'int', min: 1, default: '100000', smoke: '400', help: 'live sessions pre-filled before the server starts' },
  { group: 'Load', flag: 'window', kind: 'duration', min: 1, default: '2s', smoke: '60ms', help: 'length of one measured window' },
  { group: 'Load', flag: 'warmup', kind: 'duration', min: 1, default: '500ms', smoke: '20ms', help: 'unmeasured run of each call before its rounds' },
  { group: 'Load', flag: 'rounds', kind: 'int', min: 1, default: '3', smoke: '1', help: 'alternating pairs of windows (empty RPC / the call) per call and concurrency' },
  { group: 'Load', flag: 'concurrency', kind: 'int-list', min: 1, default: '1,16,64', smoke: '1,4', help: 'calls in flight; the targets are read at the largest' },
  { group: 'Load', flag: 'channels', kind: 'int', min: 1, default: '4', smoke: '2', help: 'client connections the unary load is spread over' },
  { group: 'Load', flag: 'streams', kind: 'int', min: 1, default: '4', smoke: '2', help: 'validation streams (and Redis connections) in the streaming comparison' },
  { group: 'Load', flag: 'stream-concurrency', kind: 'int-list', min: 1, default: '64,256', smoke: '8', help: 'validations in flight in the streaming comparison' },
  { group: 'Stalls', flag: 'stall-sessions', kind: 'int', min: 1, default: '1000000', smoke: '3000', help: 'expired sessions stored for the purge, sweep and RSS measurements' },
  { group: 'Stalls', flag: 'stall-baseline', kind: 'duration', min: 1, default: '30s', smoke: '200ms', help: 'how long the light load runs alone as the stalls\' baseline (long enough to see some major garbage collections)' },
  { group: 'Stalls', flag: 'stall-concurrency', kind: 'int', min: 1, default: '16', smoke: '2', help: 'calls in flight while a purge, sweep or checkpoint runs' },
  { group: 'Stalls', flag: 'sweep-interval', kind: 'duration', min: 1, default: '2s', smoke: '500ms', help: 'sweep interval of the server that measures the background sweep' },
  { group: 'Run', flag: 'ops', kind: { someOf: OPS }, default: OPS.join(','), help: 'calls to measure' },
  { group: 'Run', flag: 'parts', kind: { someOf: PARTS }, default: PARTS.join(','), help: 'parts to run' },
  { group: 'Run', flag: 'postgres', kind: ['on', 'off'], default: 'on', help: 'on: the unary part runs again on PostgreSQL 15 (a cluster the bench starts on a free port and removes), one replica and then two on one database; a PostgreSQL that cannot start fails the run. off: SQLite only' },
  { group: 'Run', flag: 'out', kind: 'string', allowed: 'file path', default: 'bench/results/latest.json', help: 'where the JSON results go' },
  { group: 'Servers', flag: 'server-settings', kind: 'string', allowed: 'flag=value[,flag=value...]', default: '', help: 'settings for every server the bench starts (e.g. cache-size=-65536): to measure a setting' },
  { group: 'Servers', flag: 'server', kind: ['dist', 'tsx'], default: 'dist', help: 'dist: the servers run compiled (tsc, then node dist/src/main.js, as in the Docker image); tsx: from the sources (node --import tsx src/main.ts)' },
  { group: 'Servers', flag: 'server-node-args', kind: 'string', allowed: 'node flags, space-separated', default: '', help: 'node flags for every server the bench starts (e.g. --max-semi-space-size=32 --trace-gc)' },
  { group: 'Servers', flag: 'server-stdout', kind: 'string', allowed: 'file path, or empty', default: '', help: 'file: append what node prints on the servers\' stdout (e.g. --trace-gc lines)' },
  { group: 'Servers', flag: 'cpu-prof', kind: 'string', allowed: 'folder, or empty', default: '', help: 'folder: run the servers with node --cpu-prof, profiles written there at exit' },
] as const satisfies readonly BenchSpec[];

/**
 * "cache-size=-65536,group-commit=false" as SESSIOND_* variables, each
 * checked as the server would check it, so that a typo fails before a long run.
 */
function parseServerSettings(text: string, problems: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  const where = `--server-settings (variable ${envName('server-settings')})`;
  for (const pair of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const m = /^([a-z][a-z0-9-]*)=(.*)$/.exec(pair);
    const spec = m && SETTINGS.find((s) => s.flag === m[1]);
    if (!m) problems.push(`${where}: ${JSON.stringify(pair)} is not flag=value (e.g. cache-size=-65536)`);
    else if (!spec) problems.push(`${where}: --${m[1]} is not a server setting`);
    else {
      const parsed = parseSetting(spec, m[2]!);
      if (parsed.ok) env[serverEnvName(spec.flag)] = m[2]!;
      else problems.push(`${where}: --${spec.flag}: ${parsed.problem}`);
    }
  }
  return env;
}

export function envName(name: string): string {
  return prefixedEnvName(ENV, name);
}

export class BenchOptionsError extends Error {}

/** @throws BenchOptionsError listing every problem. */
export function loadBenchOptions(argv: readonly string[], env: NodeJS.ProcessEnv): BenchOptions {
  const reading = readSettings(SPECS, argv, env, {
    envPrefix: ENV,
    defaultFor: (s, sofar) => (sofar.smoke === true && 'smoke' in s ? s.smoke : s.default),
  });
  const serverSettings = parseServerSettings(reading.values['server-settings'] ?? '', reading.problems);
  const outcome = settle(SPECS, reading);
  if (!outcome.ok) throw new BenchOptionsError(`bad bench settings:\n${outcome.problems.map((p) => `  - ${p}`).join('\n')}\n\n${helpText()}`);
  const v = outcome.values;
  return {
    sessions: v['sessions'],
    windowMs: v['window'],
    warmupMs: v['warmup'],
    rounds: v['rounds'],
    concurrency: [...v['concurrency']],
    channels: v['channels'],
    streams: v['streams'],
    streamConcurrency: [...v['stream-concurrency']],
    stallSessions: v['stall-sessions'],
    stallBaselineMs: v['stall-baseline'],
    stallConcurrency: v['stall-concurrency'],
    sweepIntervalMs: v['sweep-interval'],
    ops: [...v['ops']],
    parts: [...v['parts']],
    out: v['out'],
    cpuProfDir: v['cpu-prof'] || undefined,
    serverSettings,
    server: v['server'],
    serverNodeArgs: v['server-node-args'].split(/\s+/).filter((a) => a !== ''),
    serverStdout: v['server-stdout'] || undefined,
    postgres: v['postgres'] === 'on',
    smoke: v['smoke'],
  };
}

export function helpText(): string {
  return helpFor(SPECS, ENV, ['make bench settings (variable, or --flag on `node --import tsx bench/main.ts`):', `--server-settings takes any server setting (its variable is ${ENV_PREFIX}*).`], (s) => ('smoke' in s ? ` (smoke: ${s.smoke})` : ''));
}
