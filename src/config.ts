import { DEFAULT_POLICY, type SessionPolicy } from './domain/session';
import { DEFAULT_STORAGE_OPTIONS, type JournalMode, type StorageOptions, type Synchronous } from './storage/sqlite/pragmas';
import { checkServerTlsFiles, type ServerTlsFiles } from './tls';
import { formatDuration, parseDuration, parseSize } from './units';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export interface ServerOptions {
  /** host:port; port 0 picks a free one. */
  readonly listen: string;
  readonly adminToken: string | undefined;
  readonly maxMessageBytes: number;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly reflection: boolean;
  /** Server TLS (mTLS when clientCaFile is set); undefined: plaintext. */
  readonly tls: ServerTlsFiles | undefined;
}

export interface Config {
  readonly server: ServerOptions;
  readonly storage: StorageOptions;
  readonly policy: SessionPolicy;
  readonly sweepIntervalMs: number;
  readonly sweepBatchSize: number;
  readonly healthProbeIntervalMs: number;
  readonly logLevel: LogLevel;
  /** host:port of the Prometheus /metrics endpoint; undefined: off. */
  readonly metricsListen: string | undefined;
  /** Unary calls at least this slow are logged as warnings; 0: never. */
  readonly slowCallThresholdMs: number;
  /** Benchmark only: register the bench service (src/transport/bench-service.ts). */
  readonly benchService: boolean;
}

type Kind = 'string' | 'duration' | 'size' | 'int' | 'number' | 'bool' | readonly string[];

interface Spec {
  /** Flag name; the variable is SESSIOND_ + upper snake case of it. */
  readonly flag: string;
  readonly kind: Kind;
  readonly default: string;
  readonly help: string;
  readonly min?: number;
  readonly max?: number;
  readonly secret?: boolean;
}

const S = DEFAULT_STORAGE_OPTIONS;
const P = DEFAULT_POLICY;

/** Every setting, in the order the README's table and --help list them. */
export const SETTINGS = [
  { flag: 'listen', kind: 'string', default: '127.0.0.1:50051', help: 'host:port to serve gRPC on (0.0.0.0:50051 in containers)' },
  { flag: 'db-path', kind: 'string', default: './data/sessions.db', help: 'SQLite database file (created if missing)' },
  { flag: 'journal-mode', kind: ['wal', 'delete', 'truncate', 'persist'], default: S.journalMode, help: 'PRAGMA journal_mode' },
  { flag: 'synchronous', kind: ['off', 'normal', 'full', 'extra'], default: S.synchronous, help: 'PRAGMA synchronous (see Durability)' },
  // Bounded to a 32-bit int: the pragma is applied with `| 0`, which would silently wrap (and flip the sign of) larger values.
  { flag: 'cache-size', kind: 'int', default: String(S.cacheSize), min: -2_147_483_648, max: 2_147_483_647, help: 'PRAGMA cache_size (negative: KiB, positive: pages)' },
  { flag: 'busy-timeout', kind: 'duration', default: `${S.busyTimeoutMs}ms`, max: 600_000, help: 'PRAGMA busy_timeout: how long a write waits for a lock held elsewhere' },
  { flag: 'wal-autocheckpoint', kind: 'int', default: String(S.walAutocheckpoint), min: 0, max: 2_147_483_647, help: 'PRAGMA wal_autocheckpoint, in pages (0: off)' },
  { flag: 'journal-size-limit', kind: 'size', default: `${S.journalSizeLimit / 1024 / 1024}MiB`, min: -1, help: 'PRAGMA journal_size_limit: the WAL is cut back to this after a checkpoint (-1: never)' },
  { flag: 'max-db-size', kind: 'size', default: String(S.maxDbSize), min: 0, help: 'largest the database may grow (PRAGMA max_page_count, in whole pages); past it writes fail with RESOURCE_EXHAUSTED and nothing is written (0: no limit)' },
  { flag: 'group-commit', kind: 'bool', default: String(S.groupCommit), help: 'writes arriving in one event-loop turn share one transaction; false commits each alone (only to measure it, make bench)' },
  { flag: 'off-loop-fsync', kind: 'bool', default: String(S.offLoopFsync), help: 'with synchronous=full in WAL mode, commit at NORMAL and fsync the -wal file on the thread pool before answering; false lets SQLite fsync inside each commit on the main thread (only to measure it, make bench)' },
  { flag: 'checkpoint-worker', kind: 'bool', default: String(S.checkpointWorker), help: 'run WAL checkpoints on a worker thread; false runs them inside commits on the main thread (only to measure it, make bench)' },
  { flag: 'default-ttl', kind: 'duration', default: formatDuration(P.defaultTtlMs), min: 1000, help: 'absolute lifetime when CreateSession sets none' },
  { flag: 'default-idle-timeout', kind: 'duration', default: formatDuration(P.defaultIdleTimeoutMs), min: 1000, help: 'idle window when CreateSession sets none' },
  { flag: 'max-ttl', kind: 'duration', default: formatDuration(P.maxTtlMs), min: 1000, help: 'largest ttl or idle_timeout a client may ask for' },
  { flag: 'touch-threshold', kind: 'number', default: String(P.touchThreshold), min: 0, max: 1, help: 'fraction of the idle window that must pass before a touch writes' },
  { flag: 'max-attributes', kind: 'int', default: String(P.maxAttributes), min: 0, max: 10_000, help: 'attributes per session' },
  { flag: 'max-attribute-key-bytes', kind: 'int', default: String(P.maxAttributeKeyBytes), min: 1, max: 65_536, help: 'bytes per attribute key' },
  { flag: 'max-attribute-value-bytes', kind: 'int', default: String(P.maxAttributeValueBytes), min: 0, max: 1_048_576, help: 'bytes per attribute value' },
  { flag: 'sweep-interval', kind: 'duration', default: '1m', min: 100, help: 'how often expired and revoked sessions are purged' },
  { flag: 'sweep-batch-size', kind: 'int', default: '250', min: 1, max: 100_000, help: 'rows deleted per purge transaction (run on the checkpoint worker thread, with a checkpoint between batches whenever the WAL reaches wal-autocheckpoint)' },
  { flag: 'health-probe-interval', kind: 'duration', default: '5s', min: 100, help: 'how often storage is probed for health (journal mode, a tiny write)' },
  { flag: 'admin-token', kind: 'string', default: '', secret: true, help: 'bearer token for AdminService; empty: loopback callers only' },
  { flag: 'max-message-bytes', kind: 'size', default: '4MiB', min: 1024, max: 64 * 1024 * 1024, help: 'largest request or response message' },
  { flag: 'keepalive-time', kind: 'duration', default: '2h', min: 10_000, help: 'idle time before the server pings a client connection' },
  { flag: 'keepalive-timeout', kind: 'duration', default: '20s', min: 1000, help: 'how long a keepalive ping may go unanswered' },
  { flag: 'drain-timeout', kind: 'duration', default: '10s', min: 0, help: 'on SIGTERM, how long in-flight calls may finish before they are cancelled' },
  { flag: 'reflection', kind: 'bool', default: 'true', help: 'serve gRPC server reflection' },
  { flag: 'tls-cert', kind: 'string', default: '', help: 'PEM certificate chain to serve TLS with (needs --tls-key); empty: plaintext' },
  { flag: 'tls-key', kind: 'string', default: '', help: 'PEM private key of --tls-cert (unencrypted)' },
  { flag: 'tls-client-ca', kind: 'string', default: '', help: 'PEM CA bundle: with it, clients must present a certificate it signed (mTLS)' },
  { flag: 'log-level', kind: ['debug', 'info', 'warn', 'error', 'silent'], default: 'info', help: 'least severe log level written to stderr' },
  { flag: 'slow-call-threshold', kind: 'duration', default: '500ms', min: 0, help: 'unary calls taking at least this long are logged as warnings (0: off)' },
  { flag: 'metrics-listen', kind: 'string', default: '', help: 'host:port to serve Prometheus metrics on over HTTP, at /metrics (e.g. 0.0.0.0:9464); empty: off' },
  // Benchmark only: make bench starts its servers with it; nothing else should.
  { flag: 'bench-service', kind: 'bool', default: 'false', help: 'benchmark only: serve sessiond.bench.v1.Bench (an empty RPC and event-loop delay figures for make bench); leave off in production' },
] as const satisfies readonly Spec[];

export type SettingName = (typeof SETTINGS)[number]['flag'];

/**
 * Variables read by the CLI's client commands (src/cli/connect.ts), not by the
 * server: the server accepts them in its environment without complaint, so
 * that one environment can serve both. SESSIOND_ADMIN_TOKEN is both a server
 * setting and what the client sends.
 */
export const CLIENT_VARIABLES = ['SESSIOND_ADDRESS', 'SESSIOND_TLS_CA', 'SESSIOND_TLS_CLIENT_CERT', 'SESSIOND_TLS_CLIENT_KEY', 'SESSIOND_TLS_SERVER_NAME'] as const;

export function envName(flag: string): string {
  return `SESSIOND_${flag.toUpperCase().replace(/-/g, '_')}`;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** What the command line asked for besides settings. */
export interface Invocation {
  readonly config: Config;
  readonly help: boolean;
}

/**
 * The only reader of process.env and argv. Order: defaults, then SESSIOND_*
 * variables, then --flags; every value is then validated and all problems are
 * reported at once.
 * @throws ConfigError listing every problem.
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): Invocation {
  const problems: string[] = [];
  const raw = new Map<string, { value: string; from: string }>();
  const byFlag = new Map<string, Spec>(SETTINGS.map((s) => [s.flag, s]));
  for (const s of SETTINGS) {
    const v = env[envName(s.flag)];
    if (v !== undefined) raw.set(s.flag, { value: v, from: envName(s.flag) });
  }
  for (const key of Object.keys(env)) {
    if (key.startsWith('SESSIOND_') && !SETTINGS.some((s) => envName(s.flag) === key) && !(CLIENT_VARIABLES as readonly string[]).includes(key)) {
      problems.push(`unknown variable ${key}${suggest(key.slice(9).toLowerCase().replace(/_/g, '-'), byFlag)}`);
    }
  }
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(arg);
    if (!m) {
      problems.push(`unexpected argument ${JSON.stringify(arg)}`);
      continue;
    }
    const spec = byFlag.get(m[1]!);
    if (!spec) {
      problems.push(`unknown flag --${m[1]}${suggest(m[1]!, byFlag)}`);
      if (m[2] === undefined && argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) i++;
      continue;
    }
    let value = m[2];
    if (value === undefined) {
      if (spec.kind === 'bool' && (argv[i + 1] === undefined || argv[i + 1]!.startsWith('--'))) value = 'true';
      else if (argv[i + 1] === undefined) {
        problems.push(`--${spec.flag} needs a value`);
        continue;
      } else value = argv[++i]!;
    }
    raw.set(spec.flag, { value, from: `--${spec.flag}` });
  }

  const values = new Map<string, string | number | boolean>();
  for (const s of SETTINGS as readonly Spec[]) {
    const given = raw.get(s.flag);
    const parsed = parseValue(s, given?.value ?? s.default);
    if (typeof parsed === 'string' && parsed.startsWith('!')) {
      problems.push(`${given?.from ?? `default of --${s.flag}`}: ${parsed.slice(1)}`);
    } else values.set(s.flag, parsed);
  }
  // Always run: a bad listen address must be reported alongside other problems.
  checkCombinations(values, problems);
  checkTls(values, problems);
  if (problems.length > 0) throw new ConfigError(problems);

  const get = <T>(flag: SettingName) => values.get(flag) as T;
  const config: Config = {
    server: {
      listen: get<string>('listen'),
      adminToken: get<string>('admin-token') || undefined,
      maxMessageBytes: get<number>('max-message-bytes'),
      keepaliveTimeMs: get<number>('keepalive-time'),
      keepaliveTimeoutMs: get<number>('keepalive-timeout'),
      drainTimeoutMs: get<number>('drain-timeout'),
      reflection: get<boolean>('reflection'),
      tls: get<string>('tls-cert') ? { certFile: get<string>('tls-cert'), keyFile: get<string>('tls-key'), clientCaFile: get<string>('tls-client-ca') || undefined } : undefined,
    },
    storage: {
      path: get<string>('db-path'),
      journalMode: get<JournalMode>('journal-mode'),
      synchronous: get<Synchronous>('synchronous'),
      cacheSize: get<number>('cache-size'),
      busyTimeoutMs: get<number>('busy-timeout'),
      walAutocheckpoint: get<number>('wal-autocheckpoint'),
      journalSizeLimit: get<number>('journal-size-limit'),
      maxDbSize: get<number>('max-db-size'),
      groupCommit: get<boolean>('group-commit'),
      checkpointWorker: get<boolean>('checkpoint-worker'),
      offLoopFsync: get<boolean>('off-loop-fsync'),
    },
    policy: {
      ...DEFAULT_POLICY,
      defaultTtlMs: get<number>('default-ttl'),
      defaultIdleTimeoutMs: get<number>('default-idle-timeout'),
      maxTtlMs: get<number>('max-ttl'),
      touchThreshold: get<number>('touch-threshold'),
      maxAttributes: get<number>('max-attributes'),
      maxAttributeKeyBytes: get<number>('max-attribute-key-bytes'),
      maxAttributeValueBytes: get<number>('max-attribute-value-bytes'),
    },
    sweepIntervalMs: get<number>('sweep-interval'),
    sweepBatchSize: get<number>('sweep-batch-size'),
    healthProbeIntervalMs: get<number>('health-probe-interval'),
    logLevel: get<LogLevel>('log-level'),
    metricsListen: get<string>('metrics-listen') || undefined,
    slowCallThresholdMs: get<number>('slow-call-threshold'),
    benchService: get<boolean>('bench-service'),
  };
  return { config: deepFreeze(config), help };
}

/** A problem is returned as a string starting with "!". */
function parseValue(s: Spec, text: string): string | number | boolean {
  const range = (n: number, shown: string) => {
    if (s.min !== undefined && n < s.min) return `!${shown} is below the minimum of ${s.min}`;
    if (s.max !== undefined && n > s.max) return `!${shown} is above the maximum of ${s.max}`;
    return n;
  };
  if (Array.isArray(s.kind)) {
    const v = text.trim().toLowerCase();
    return s.kind.includes(v) ? v : `!${JSON.stringify(text)} is not one of ${s.kind.join(', ')}`;
  }
  switch (s.kind) {
    case 'string':
      return text;
    case 'bool':
      if (/^(true|1|yes|on)$/i.test(text.trim())) return true;
      if (/^(false|0|no|off)$/i.test(text.trim())) return false;
      return `!${JSON.stringify(text)} is not a boolean (true or false)`;
    case 'int': {
      if (!/^-?\d+$/.test(text.trim())) return `!${JSON.stringify(text)} is not an integer`;
      return range(Number(text), text.trim());
    }
    case 'number': {
      const n = Number(text);
      if (text.trim() === '' || !Number.isFinite(n)) return `!${JSON.stringify(text)} is not a number`;
      return range(n, text.trim());
    }
    case 'duration': {
      const ms = parseDuration(text);
      if (ms === undefined) return `!${JSON.stringify(text)} is not a duration (e.g. 250ms, 30s, 5m, 24h, 7d)`;
      return range(ms, `${text.trim()} (${ms}ms)`);
    }
    case 'size': {
      const n = parseSize(text);
      if (n === undefined) return `!${JSON.stringify(text)} is not a size (e.g. 4096, 64KiB, 8MiB)`;
      return range(n, text.trim());
    }
  }
  return `!unsupported setting kind`;
}

/** Checks what one value's own parse cannot; a setting that failed to parse is absent from `v` and skipped. */
function checkCombinations(v: Map<string, unknown>, problems: string[]): void {
  const maxDbSize = v.get('max-db-size') as number | undefined;
  // The empty schema alone takes about a dozen 4 KiB pages.
  if (maxDbSize !== undefined && maxDbSize > 0 && maxDbSize < 64 * 1024) problems.push(`max-db-size ${maxDbSize} is below 64KiB: the schema alone needs about 50KiB (0: no limit)`);
  const listen = v.get('listen') as string;
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[2]) > 65535) problems.push(`listen ${JSON.stringify(listen)} is not host:port (e.g. 127.0.0.1:50051, [::1]:50051, 0.0.0.0:50051)`);
  const metricsListen = v.get('metrics-listen') as string;
  if (metricsListen !== '' && !isHostPort(metricsListen)) problems.push(`metrics-listen ${JSON.stringify(metricsListen)} is not host:port (e.g. 0.0.0.0:9464, 127.0.0.1:9464); leave it empty to serve no metrics`);
  else if (metricsListen !== '' && metricsListen === listen && !metricsListen.endsWith(':0')) problems.push('metrics-listen must not be the gRPC listen address');
  if (v.get('db-path') === '') problems.push('db-path must not be empty');
  if (v.get('db-path') === ':memory:') problems.push('db-path :memory: cannot use WAL and loses every session on exit; give a file path');
  const maxTtl = v.get('max-ttl') as number | undefined;
  for (const flag of ['default-ttl', 'default-idle-timeout']) {
    if (maxTtl !== undefined && v.has(flag) && (v.get(flag) as number) > maxTtl) problems.push(`${flag} (${formatDuration(v.get(flag) as number)}) is above max-ttl (${formatDuration(maxTtl)})`);
  }
  const token = v.get('admin-token') as string;
  if (token !== '' && token.length < 16) problems.push('admin-token must be at least 16 characters (or empty to allow loopback callers only)');
  if (v.has('keepalive-timeout') && v.has('keepalive-time') && (v.get('keepalive-timeout') as number) >= (v.get('keepalive-time') as number)) problems.push('keepalive-timeout must be shorter than keepalive-time');
}

/** TLS settings come as a set, and their files are read now so that a bad path fails start-up, naming the path. */
function checkTls(v: Map<string, unknown>, problems: string[]): void {
  const [certFile, keyFile, clientCaFile] = (['tls-cert', 'tls-key', 'tls-client-ca'] as const).map((f) => (v.get(f) as string | undefined) || undefined);
  if (certFile && !keyFile) problems.push('tls-cert is set without tls-key: TLS needs the certificate chain and its private key');
  if (keyFile && !certFile) problems.push('tls-key is set without tls-cert: TLS needs the certificate chain and its private key');
  if (clientCaFile && !certFile) problems.push('tls-client-ca (mTLS) needs tls-cert and tls-key: client certificates are only asked for over TLS');
  problems.push(...checkServerTlsFiles({ certFile, keyFile, clientCaFile }));
}

function isHostPort(s: string): boolean {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(s);
  return m !== null && Number(m[2]) <= 65535;
}

function suggest(name: string, known: Map<string, Spec>): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const flag of known.keys()) {
    const d = distance(name, flag);
    if (d < bestDistance) [best, bestDistance] = [flag, d];
  }
  return best ? ` (did you mean --${best} / ${envName(best)}?)` : '';
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

function deepFreeze<T>(o: T): T {
  for (const v of Object.values(o as object)) if (v && typeof v === 'object') deepFreeze(v);
  return Object.freeze(o);
}

/** The configuration for the start-up log line, with secrets masked. */
export function redactedConfig(config: Config): unknown {
  return { ...config, server: { ...config.server, adminToken: config.server.adminToken ? '[redacted]' : undefined } };
}

/** The --help text: every flag, its variable, default and meaning. */
export function helpText(): string {
  const lines = ['Usage: sessiond [--flag value ...]', '', 'Every flag can also be set as an environment variable; flags win.', ''];
  for (const s of SETTINGS as readonly Spec[]) {
    const kind = Array.isArray(s.kind) ? s.kind.join('|') : s.kind;
    lines.push(`  --${s.flag} <${kind}>  (${envName(s.flag)}, default ${s.secret ? '(none)' : JSON.stringify(s.default)})`, `      ${s.help}`);
  }
  return lines.join('\n');
}
