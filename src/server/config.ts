import { DEFAULT_POLICY, largestSessionBytes, type SessionPolicy } from '../domain/session';
import { TOKEN_LENGTH } from '../domain/tokens';
import { readPrincipalsFile } from './principals-file';
import { readSettings, settle } from '../shared/settings-engine';
import { ENV_PREFIX, MAX_WORKERS, SETTINGS, type SettingValues } from './settings';
import { usableCores } from './cores';
import { databaseUrlProblem, redactedUrl } from '../shared/database-url';
import { checkServerTlsFiles } from '../shared/tls';
import { MAX_BATCH_ITEMS } from '../shared/stream-protocol';
import { formatDuration } from '../shared/units';

export { envName, helpText, SETTINGS, type SettingName } from './settings';
export type { LogLevel } from './log';

export type { Config, ServerOptions } from './config-types';
import type { Config } from './config-types';

/**
 * Variables read by the CLI's client commands (src/cli/connect.ts), not by the
 * server: the server accepts them in its environment without complaint, so
 * that one environment can serve both. SESSIOND_ADMIN_TOKEN is both a server
 * setting and what the client sends.
 */
export const CLIENT_VARIABLES = ['SESSIOND_ADDRESS', 'SESSIOND_API_KEY', 'SESSIOND_TLS_CA', 'SESSIOND_TLS_CLIENT_CERT', 'SESSIOND_TLS_CLIENT_KEY', 'SESSIOND_TLS_SERVER_NAME'] as const;

/** Set by the primary of --workers in each worker's environment: which of the N places it fills (1..N). */
export const WORKER_SLOT_VARIABLE = 'SESSIOND_WORKER_SLOT';

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
  const reading = readSettings(SETTINGS, argv, env, { envPrefix: ENV_PREFIX, otherVariables: [...CLIENT_VARIABLES, WORKER_SLOT_VARIABLE] });
  // Always run: a bad listen address must be reported alongside other problems.
  const workers = checkWorkers(reading.values, reading.problems);
  checkCombinations(reading.values, reading.problems);
  checkTls(reading.values, reading.problems);
  checkCallers(reading.values, reading.problems);
  const outcome = settle(SETTINGS, reading);
  if (!outcome.ok) throw new ConfigError([...outcome.problems]);

  const v = outcome.values;
  const config: Config = {
    server: {
      listen: v['listen'],
      principalsFile: v['principals-file'] || undefined,
      adminToken: v['admin-token'] || undefined,
      allowUnauthenticated: v['allow-unauthenticated'],
      maxMessageBytes: v['max-message-bytes'],
      maxConcurrentStreams: v['max-concurrent-streams'],
      maxConnectionMemoryBytes: v['max-connection-memory'],
      maxConnectionIdleMs: v['max-connection-idle'],
      maxConnectionAgeMs: v['max-connection-age'],
      maxConnectionAgeGraceMs: v['max-connection-age-grace'],
      keepaliveTimeMs: v['keepalive-time'],
      keepaliveTimeoutMs: v['keepalive-timeout'],
      drainTimeoutMs: v['drain-timeout'],
      reflection: v['reflection'],
      tls: v['tls-cert'] ? { certFile: v['tls-cert'], keyFile: v['tls-key'], clientCaFile: v['tls-client-ca'] || undefined } : undefined,
    },
    storage: {
      path: v['db-path'],
      journalMode: v['journal-mode'],
      synchronous: v['synchronous'],
      cacheSize: v['cache-size'],
      busyTimeoutMs: v['busy-timeout'],
      walAutocheckpoint: v['wal-autocheckpoint'],
      journalSizeLimit: v['journal-size-limit'],
      maxDbSize: v['max-db-size'],
      groupCommit: v['group-commit'],
      checkpointWorker: v['checkpoint-worker'],
      checkpointsInPrimary: false,
      offLoopFsync: v['off-loop-fsync'],
      durableRevocations: v['durable-revocations'],
      maxPendingWrites: v['max-pending-writes'],
      backupDir: v['backup-dir'],
      backupRetention: v['backup-retention'],
      sessionEvents: v['session-events'],
    },
    backend: v['storage'],
    postgres: v['storage'] === 'postgres' ? {
      url: v['database-url'],
      poolSize: v['database-pool-size'],
      statementTimeoutMs: v['database-statement-timeout'],
      connectTimeoutMs: v['database-connect-timeout'],
      maxPendingWrites: v['max-pending-writes'],
      sessionEvents: v['session-events'],
    } : undefined,
    policy: {
      ...DEFAULT_POLICY,
      defaultTtlMs: v['default-ttl'],
      defaultIdleTimeoutMs: v['default-idle-timeout'],
      maxTtlMs: v['max-ttl'],
      touchThreshold: v['touch-threshold'],
      maxAttributes: v['max-attributes'],
      maxAttributeKeyBytes: v['max-attribute-key-bytes'],
      maxAttributeValueBytes: v['max-attribute-value-bytes'],
      maxSessionsPerSubject: v['max-sessions-per-subject'],
      sessionLimitPolicy: v['session-limit-policy'],
    },
    events: {
      enabled: v['session-events'], retentionMs: v['events-retention'], retentionCount: v['events-retention-count'], pollIntervalMs: v['events-poll-interval'],
      progressIntervalMs: v['events-progress-interval'], stallTimeoutMs: v['events-stall-timeout'], maxStreams: v['max-event-streams'],
    },
    workers,
    sweepIntervalMs: v['sweep-interval'],
    sweepBatchSize: v['sweep-batch-size'],
    revokeBatchSize: v['revoke-batch-size'],
    maxPageBytes: v['max-page-bytes'],
    healthProbeIntervalMs: v['health-probe-interval'],
    logLevel: v['log-level'],
    metricsListen: v['metrics-listen'] || undefined,
    slowCallThresholdMs: v['slow-call-threshold'],
    benchService: v['bench-service'],
  };
  return { config: deepFreeze(config), help: outcome.help };
}

/** --workers as a count, read once (auto: the cores this process may use, see cores.ts); 1 with a problem pushed when it is not one. */
function checkWorkers(v: Given, problems: string[]): number {
  const text = v['workers'] ?? '1';
  const n = text === 'auto' ? Math.min(MAX_WORKERS, usableCores()) : /^\d{1,4}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_WORKERS)) {
    problems.push(`workers ${JSON.stringify(text)} is not a count from 1 to ${MAX_WORKERS}, or auto`);
    return 1;
  }
  if (n > 1 && v['storage'] !== 'postgres' && v['db-path'] === ':memory:') problems.push('workers above 1 need a database file: each worker would have a :memory: database of its own');
  return n;
}

/** The settings that parsed; one that failed is absent, and the checks that need it are skipped. */
type Given = Partial<SettingValues>;

/** Checks what one value's own parse cannot. */
function checkCombinations(v: Given, problems: string[]): void {
  const maxDbSize = v['max-db-size'];
  // The empty schema alone takes about a dozen 4 KiB pages.
  if (maxDbSize !== undefined && maxDbSize > 0 && maxDbSize < 64 * 1024) problems.push(`max-db-size ${maxDbSize} is below 64KiB: the schema alone needs about 50KiB (0: no limit)`);
  const listen = v['listen'];
  if (listen !== undefined && !isHostPort(listen)) problems.push(`listen ${JSON.stringify(listen)} is not host:port (e.g. 127.0.0.1:50051, [::1]:50051, 0.0.0.0:50051)`);
  const metricsListen = v['metrics-listen'] ?? '';
  if (metricsListen !== '' && !isHostPort(metricsListen)) problems.push(`metrics-listen ${JSON.stringify(metricsListen)} is not host:port (e.g. 0.0.0.0:9464, 127.0.0.1:9464); leave it empty to serve no metrics`);
  else if (metricsListen !== '' && metricsListen === listen && !metricsListen.endsWith(':0')) problems.push('metrics-listen must not be the gRPC listen address');
  if (v['db-path'] === '') problems.push('db-path must not be empty');
  if (v['db-path'] === ':memory:') problems.push('db-path :memory: cannot use WAL and loses every session on exit; give a file path');
  const maxTtl = v['max-ttl'];
  for (const flag of ['default-ttl', 'default-idle-timeout'] as const) {
    const ms = v[flag];
    if (maxTtl !== undefined && ms !== undefined && ms > maxTtl) problems.push(`${flag} (${formatDuration(ms)}) is above max-ttl (${formatDuration(maxTtl)})`);
  }
  checkMessageSizes(v, problems);
  checkBackend(v, problems);
  const [keepaliveTime, keepaliveTimeout] = [v['keepalive-time'], v['keepalive-timeout']];
  if (keepaliveTime !== undefined && keepaliveTimeout !== undefined && keepaliveTimeout >= keepaliveTime) problems.push('keepalive-timeout must be shorter than keepalive-time');
}

/** The database URL goes with the postgres backend, and is checked without ever being quoted: it holds a password. */
function checkBackend(v: Given, problems: string[]): void {
  const url = v['database-url'];
  if (v['storage'] === 'postgres') {
    if (url === '') problems.push('storage postgres needs database-url (SESSIOND_DATABASE_URL), e.g. postgres://sessiond:PASSWORD@db:5432/sessiond');
    else if (url !== undefined) {
      const problem = databaseUrlProblem(url);
      if (problem) problems.push(`database-url ${problem}`);
    }
  } else if (v['storage'] === 'sqlite' && url !== undefined && url !== '') {
    problems.push('database-url is set but storage is sqlite: set storage postgres to use it, or unset database-url');
  }
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

function checkMessageSizes(v: Given, problems: string[]): void {
  const max = v['max-message-bytes'];
  const page = v['max-page-bytes'];
  const [maxAttributes, maxAttributeKeyBytes, maxAttributeValueBytes] = [v['max-attributes'], v['max-attribute-key-bytes'], v['max-attribute-value-bytes']];
  if (max === undefined || maxAttributes === undefined || maxAttributeKeyBytes === undefined || maxAttributeValueBytes === undefined) return;
  const policy: SessionPolicy = { ...DEFAULT_POLICY, maxAttributes, maxAttributeKeyBytes, maxAttributeValueBytes };
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
function checkCallers(v: Given, problems: string[]): void {
  const token = v['admin-token'];
  if (token !== undefined && token !== '' && token.length < 16) problems.push('admin-token must be at least 16 characters (it is an API key of the admin principal)');
  const file = v['principals-file'];
  let principals = token ? 1 : 0;
  let fileProblems = false;
  if (file) {
    const read = readPrincipalsFile(file);
    for (const p of read.problems) problems.push(`principals-file ${file}: ${p}`);
    fileProblems = read.problems.length > 0;
    principals += read.entries.length;
  }
  const allow = v['allow-unauthenticated'] === true;
  // A listen address that is not host:port is a problem of its own (checkCombinations).
  const listen = v['listen'] !== undefined && isHostPort(v['listen']) ? v['listen'] : undefined;
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
function checkTls(v: Given, problems: string[]): void {
  const [certFile, keyFile, clientCaFile] = (['tls-cert', 'tls-key', 'tls-client-ca'] as const).map((f) => v[f] || undefined);
  if (certFile && !keyFile) problems.push('tls-cert is set without tls-key: TLS needs the certificate chain and its private key');
  if (keyFile && !certFile) problems.push('tls-key is set without tls-cert: TLS needs the certificate chain and its private key');
  if (clientCaFile && !certFile) problems.push('tls-client-ca (mTLS) needs tls-cert and tls-key: client certificates are only asked for over TLS');
  problems.push(...checkServerTlsFiles({ certFile, keyFile, clientCaFile }));
}

function isHostPort(s: string): boolean {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(s);
  return m !== null && Number(m[2]) <= 65535;
}

function deepFreeze<T>(o: T): T {
  for (const v of Object.values(o as object)) if (v && typeof v === 'object') deepFreeze(v);
  return Object.freeze(o);
}

/** The configuration for the start-up log line, with secrets masked. */
export function redactedConfig(config: Config): unknown {
  return {
    ...config,
    server: { ...config.server, adminToken: config.server.adminToken ? '[redacted]' : undefined },
    postgres: config.postgres && { ...config.postgres, url: redactedUrl(config.postgres.url) },
  };
}
