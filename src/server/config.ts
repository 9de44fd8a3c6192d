import { DEFAULT_POLICY, largestSessionBytes, type SessionPolicy } from '../domain/session';
import { TOKEN_LENGTH } from '../domain/tokens';
import { readPrincipalsFile } from './principals-file';
import { envName, parseSetting, SETTINGS, type SettingName, type Spec } from './settings';
import type { JournalMode, StorageOptions, Synchronous } from '../storage/sqlite/pragmas';
import { checkServerTlsFiles, type ServerTlsFiles } from '../shared/tls';
import { MAX_BATCH_ITEMS } from '../shared/stream-protocol';
import { formatDuration } from '../shared/units';

export { envName, helpText, SETTINGS, type SettingName } from './settings';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export interface ServerOptions {
  /** host:port; port 0 picks a free one. */
  readonly listen: string;
  /** Where the principals are listed; undefined: none but the admin token's (protected mode when neither). */
  readonly principalsFile: string | undefined;
  readonly adminToken: string | undefined;
  /** With no principals: serve every caller, not only loopback ones. */
  readonly allowUnauthenticated: boolean;
  readonly maxMessageBytes: number;
  readonly maxConcurrentStreams: number;
  readonly maxConnectionMemoryBytes: number;
  /** 0: never. */
  readonly maxConnectionIdleMs: number;
  /** 0: never. */
  readonly maxConnectionAgeMs: number;
  readonly maxConnectionAgeGraceMs: number;
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
  readonly revokeBatchSize: number;
  /** ListSessions pages stop before their sessions reach this many bytes. */
  readonly maxPageBytes: number;
  readonly healthProbeIntervalMs: number;
  readonly logLevel: LogLevel;
  /** host:port of the Prometheus /metrics endpoint; undefined: off. */
  readonly metricsListen: string | undefined;
  /** Unary calls at least this slow are logged as warnings; 0: never. */
  readonly slowCallThresholdMs: number;
  /** Benchmark only: register the bench service (src/transport/bench-service.ts). */
  readonly benchService: boolean;
}

/**
 * Variables read by the CLI's client commands (src/cli/connect.ts), not by the
 * server: the server accepts them in its environment without complaint, so
 * that one environment can serve both. SESSIOND_ADMIN_TOKEN is both a server
 * setting and what the client sends.
 */
export const CLIENT_VARIABLES = ['SESSIOND_ADDRESS', 'SESSIOND_API_KEY', 'SESSIOND_TLS_CA', 'SESSIOND_TLS_CLIENT_CERT', 'SESSIOND_TLS_CLIENT_KEY', 'SESSIOND_TLS_SERVER_NAME'] as const;

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
    const parsed = parseSetting(s, given?.value ?? s.default);
    if (parsed.ok) values.set(s.flag, parsed.value);
    else problems.push(`${given?.from ?? `default of --${s.flag}`}: ${parsed.problem}`);
  }
  // Always run: a bad listen address must be reported alongside other problems.
  checkCombinations(values, problems);
  checkTls(values, problems);
  checkCallers(values, problems);
  if (problems.length > 0) throw new ConfigError(problems);

  const get = <T>(flag: SettingName) => values.get(flag) as T;
  const config: Config = {
    server: {
      listen: get<string>('listen'),
      principalsFile: get<string>('principals-file') || undefined,
      adminToken: get<string>('admin-token') || undefined,
      allowUnauthenticated: get<boolean>('allow-unauthenticated'),
      maxMessageBytes: get<number>('max-message-bytes'),
      maxConcurrentStreams: get<number>('max-concurrent-streams'),
      maxConnectionMemoryBytes: get<number>('max-connection-memory'),
      maxConnectionIdleMs: get<number>('max-connection-idle'),
      maxConnectionAgeMs: get<number>('max-connection-age'),
      maxConnectionAgeGraceMs: get<number>('max-connection-age-grace'),
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
      durableRevocations: get<boolean>('durable-revocations'),
      maxPendingWrites: get<number>('max-pending-writes'),
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
    revokeBatchSize: get<number>('revoke-batch-size'),
    maxPageBytes: get<number>('max-page-bytes'),
    healthProbeIntervalMs: get<number>('health-probe-interval'),
    logLevel: get<LogLevel>('log-level'),
    metricsListen: get<string>('metrics-listen') || undefined,
    slowCallThresholdMs: get<number>('slow-call-threshold'),
    benchService: get<boolean>('bench-service'),
  };
  return { config: deepFreeze(config), help };
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
  checkMessageSizes(v, problems);
  if (v.has('keepalive-timeout') && v.has('keepalive-time') && (v.get('keepalive-timeout') as number) >= (v.get('keepalive-time') as number)) problems.push('keepalive-timeout must be shorter than keepalive-time');
}

/**
 * The largest request a client may legitimately send: a full batch of
 * ValidateSessionStream items with tokens at their limit, or a CreateSession
 * with every field and attribute at its limit. The receive limit must hold it,
 * and nothing much larger needs to be read.
 */
export function largestRequestBytes(policy: SessionPolicy): number {
  // Only our own tokens can validate, and they all have TOKEN_LENGTH characters.
  const batch = MAX_BATCH_ITEMS * (TOKEN_LENGTH + 16);
  const create = largestSessionBytes(policy) + 256;
  return Math.max(batch, create);
}

function checkMessageSizes(v: Map<string, unknown>, problems: string[]): void {
  const max = v.get('max-message-bytes') as number | undefined;
  const page = v.get('max-page-bytes') as number | undefined;
  const limits = ['max-attributes', 'max-attribute-key-bytes', 'max-attribute-value-bytes'].map((f) => v.get(f) as number | undefined);
  if (max === undefined || limits.some((n) => n === undefined)) return;
  const [maxAttributes, maxAttributeKeyBytes, maxAttributeValueBytes] = limits as number[];
  const policy: SessionPolicy = { ...DEFAULT_POLICY, maxAttributes: maxAttributes!, maxAttributeKeyBytes: maxAttributeKeyBytes!, maxAttributeValueBytes: maxAttributeValueBytes! };
  const need = largestRequestBytes(policy);
  if (need > max) {
    problems.push(`max-message-bytes ${max} is below the largest legitimate request (${need} bytes with these attribute limits and a full ValidateSessionStream batch): raise it, or lower max-attributes / max-attribute-value-bytes`);
  }
  if (page !== undefined && page > max - 1024) problems.push(`max-page-bytes ${page} must be at least 1KiB below max-message-bytes (${max}), so that a page always fits in a response`);
}

/**
 * Who may call: the principals file is read and checked now (its problems are
 * listed with the rest), and protected mode is enforced: with no principals, a
 * listen address other than loopback is refused unless allow-unauthenticated says so.
 */
function checkCallers(v: Map<string, unknown>, problems: string[]): void {
  const token = v.get('admin-token') as string | undefined;
  if (token !== undefined && token !== '' && token.length < 16) problems.push('admin-token must be at least 16 characters (it is an API key of the admin principal)');
  const file = v.get('principals-file') as string | undefined;
  let principals = token ? 1 : 0;
  let fileProblems = false;
  if (file) {
    const read = readPrincipalsFile(file);
    for (const p of read.problems) problems.push(`principals-file ${file}: ${p}`);
    fileProblems = read.problems.length > 0;
    principals += read.entries.length;
  }
  const allow = v.get('allow-unauthenticated') === true;
  // A listen address that is not host:port is a problem of its own (checkCombinations).
  const listen = isHostPort(String(v.get('listen'))) ? (v.get('listen') as string) : undefined;
  if (allow && principals > 0) {
    problems.push('allow-unauthenticated has no effect with principals configured (principals-file or admin-token): every caller must present credentials then; remove one of them');
  }
  if (!allow && principals === 0 && listen !== undefined && !file && !isLoopbackListen(listen)) {
    problems.push(
      `listen ${listen} is not a loopback address and no principals are configured: in protected mode only loopback callers are served. ` +
      'Set principals-file (see docs/security.md), or allow-unauthenticated=true when something in front of sessiond authenticates every caller',
    );
  }
  if (!allow && file && !fileProblems && principals === 0 && listen !== undefined && !isLoopbackListen(listen)) {
    problems.push(`principals-file ${file} lists no principals and listen ${listen} is not a loopback address: nobody could call; add a principal`);
  }
}

/** A listen address only this host can reach: 127.0.0.0/8, ::1 or localhost. 0.0.0.0 and :: are every interface. */
export function isLoopbackListen(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
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
