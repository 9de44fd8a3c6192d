import { DEFAULT_POLICY, SESSION_LIMIT_POLICIES } from '../domain/session';
import { LOG_LEVELS } from './log';
import { helpFor } from '../shared/settings-describe';
import { envName as prefixedEnvName, parseValue, TIMER_MAX_MS, type Parsed, type Spec, type Values } from '../shared/settings-engine';
import { DEFAULT_POSTGRES_OPTIONS, DEFAULT_STORAGE_OPTIONS, JOURNAL_MODES, STORAGE_BACKENDS, SYNCHRONOUS_MODES } from '../storage/options';
import { formatDuration } from '../shared/units';

/*
 * Every server setting, and how one value of it is parsed. The table is the
 * one source of --help, the SESSIOND_* variable names, the defaults and
 * docs/configuration.md (scripts/configuration-doc.ts writes it); the config
 * loader (config.ts) composes the parsed values into a Config.
 */

export type { Kind, Parsed, Spec } from '../shared/settings-engine';

export const ENV_PREFIX = 'SESSIOND_';

const S = DEFAULT_STORAGE_OPTIONS;
const PG = DEFAULT_POSTGRES_OPTIONS;
const P = DEFAULT_POLICY;

// grpc-js draws the age timer up to 10 % longer, to spread reconnections: 22 days stays within a Node timer after that.
const AGE_MAX = 22 * 86_400_000;
// Not timers: lifetimes are stored as expiry times. A longer one is a slip of the unit, not a policy.
const LIFETIME_MAX = 3650 * 86_400_000;

/** --workers at most: past the cores of any host, more processes only add contention for the write lock. */
export const MAX_WORKERS = 256;

const CALLERS = 'Listening and callers';
const TLS = 'TLS';
const BACKEND = 'Storage backend';
const STORAGE = 'Storage (SQLite)';
const POSTGRES = 'Storage (PostgreSQL)';
const SESSIONS = 'Sessions';
const EVENTS = 'Session events';
const BACKGROUND = 'Background work';
const CONNECTIONS = 'Connections and messages';
const OBSERVING = 'Logs and metrics';
const MEASURING = 'Measurement only';

/** Every setting, in the order --help and docs/configuration.md list them (by group). */
export const SETTINGS = [
  { group: CALLERS, flag: 'listen', kind: 'string', allowed: 'host:port', default: '127.0.0.1:50051', help: 'host:port to serve gRPC on (0.0.0.0:50051 in containers; a non-loopback address needs principals, see docs/security.md)' },
  { group: CALLERS, flag: 'workers', kind: 'string', allowed: `a count from 1 to ${MAX_WORKERS}, or auto`, default: '1', help: 'server processes serving the listen port, each with its own connection to the database; auto: one per core this process may use (see docs/workers.md)' },
  { group: CALLERS, flag: 'principals-file', kind: 'string', allowed: 'file path, or empty', default: '', help: 'YAML or JSON file of the principals (API keys, mTLS identities) allowed to call, reloaded on SIGHUP and when it changes; empty: protected mode (loopback callers only)' },
  { group: CALLERS, flag: 'allow-unauthenticated', kind: 'bool', default: 'false', help: 'with no principals, serve every caller with every permission, on any listen address (only behind something that authenticates; logged at every start)' },
  { group: CALLERS, flag: 'admin-token', kind: 'string', allowed: 'at least 16 characters, or empty', default: '', secret: true, help: 'shorthand for one principal with the admin permission whose API key is this token' },
  { group: CALLERS, flag: 'reflection', kind: 'bool', default: 'true', help: 'serve gRPC server reflection' },
  { group: TLS, flag: 'tls-cert', kind: 'string', allowed: 'PEM file path, or empty', default: '', help: 'PEM certificate chain to serve TLS with (needs --tls-key); empty: plaintext' },
  { group: TLS, flag: 'tls-key', kind: 'string', allowed: 'PEM file path, or empty', default: '', help: 'PEM private key of --tls-cert (unencrypted)' },
  { group: TLS, flag: 'tls-client-ca', kind: 'string', allowed: 'PEM file path, or empty', default: '', help: 'PEM CA bundle: with it, clients must present a certificate it signed (mTLS); a SAN of it can name a principal (tls_identity)' },
  { group: BACKEND, flag: 'storage', kind: STORAGE_BACKENDS, default: 'sqlite', help: 'where sessions live: sqlite (one embedded file, one server) or postgres (any number of replicas on one database, see docs/deploying.md)' },
  { group: BACKEND, flag: 'max-pending-writes', kind: 'int', default: String(S.maxPendingWrites), min: 1, max: 1_000_000, help: 'writes that may wait to be committed at once (SQLite: for the group commit; PostgreSQL: in flight on the pool); past it a write is refused with UNAVAILABLE (retryable) instead of waiting' },
  { group: STORAGE, flag: 'db-path', kind: 'string', allowed: 'file path', default: './data/sessions.db', help: 'SQLite database file (created if missing, 0600 in a 0700 folder)' },
  { group: STORAGE, flag: 'journal-mode', kind: JOURNAL_MODES, default: S.journalMode, help: 'PRAGMA journal_mode' },
  { group: STORAGE, flag: 'synchronous', kind: SYNCHRONOUS_MODES, default: S.synchronous, help: 'PRAGMA synchronous: what a commit waits for before the call is answered (see docs/durability.md)' },
  // Bounded to a 32-bit int: the pragma is applied with `| 0`, which would silently wrap (and flip the sign of) larger values.
  { group: STORAGE, flag: 'cache-size', kind: 'int', default: String(S.cacheSize), min: -2_147_483_648, max: 2_147_483_647, help: 'PRAGMA cache_size (negative: KiB, positive: pages)' },
  { group: STORAGE, flag: 'busy-timeout', kind: 'duration', default: `${S.busyTimeoutMs}ms`, min: 0, max: 600_000, help: 'PRAGMA busy_timeout: how long a write waits for a lock held elsewhere' },
  { group: STORAGE, flag: 'wal-autocheckpoint', kind: 'int', default: String(S.walAutocheckpoint), min: 0, max: 2_147_483_647, help: 'PRAGMA wal_autocheckpoint, in pages (0: off)' },
  { group: STORAGE, flag: 'journal-size-limit', kind: 'size', default: `${S.journalSizeLimit / 1024 / 1024}MiB`, min: -1, help: 'PRAGMA journal_size_limit: the WAL is cut back to this after a checkpoint (-1: never)' },
  { group: STORAGE, flag: 'max-db-size', kind: 'size', default: String(S.maxDbSize), min: 0, help: 'largest the database may grow (PRAGMA max_page_count, in whole pages); past it writes fail with RESOURCE_EXHAUSTED and nothing is written; creates and updates stop an eighth (at most 64MiB) short of it, which revocations keep for their events (0: no limit)' },
  { group: STORAGE, flag: 'backup-dir', kind: 'string', allowed: 'folder path, or empty', default: S.backupDir, help: 'folder the Backup admin call writes into (created 0700; each backup 0600); empty: Backup is refused' },
  { group: STORAGE, flag: 'backup-retention', kind: 'int', default: String(S.backupRetention), min: 1, max: 10_000, help: 'backups kept in backup-dir; older ones are removed after each new backup' },
  { group: POSTGRES, flag: 'database-url', kind: 'string', allowed: 'postgres:// URL, or empty', default: '', secret: true, help: 'libpq-style URL of the PostgreSQL database (with --storage postgres); several hosts with target_session_attrs=read-write for failover (postgres://user:pw@h1:5432,h2:5432/db?target_session_attrs=read-write)' },
  { group: POSTGRES, flag: 'database-pool-size', kind: 'int', default: String(PG.poolSize), min: 1, max: 1000, help: 'connections this replica opens to PostgreSQL at most' },
  { group: POSTGRES, flag: 'database-statement-timeout', kind: 'duration', default: formatDuration(PG.statementTimeoutMs), min: 100, max: 600_000, help: 'PostgreSQL statement_timeout (and idle_in_transaction_session_timeout) of every connection: a statement past it fails with UNAVAILABLE' },
  { group: POSTGRES, flag: 'database-connect-timeout', kind: 'duration', default: formatDuration(PG.connectTimeoutMs), min: 100, max: 600_000, help: 'how long opening one connection to PostgreSQL may take before the call waiting for it fails with UNAVAILABLE' },
  { group: SESSIONS, flag: 'default-ttl', kind: 'duration', default: formatDuration(P.defaultTtlMs), min: 1000, max: LIFETIME_MAX, help: 'absolute lifetime when CreateSession sets none' },
  { group: SESSIONS, flag: 'default-idle-timeout', kind: 'duration', default: formatDuration(P.defaultIdleTimeoutMs), min: 1000, max: LIFETIME_MAX, help: 'idle window when CreateSession sets none' },
  { group: SESSIONS, flag: 'max-ttl', kind: 'duration', default: formatDuration(P.maxTtlMs), min: 1000, max: LIFETIME_MAX, help: 'largest ttl or idle_timeout a client may ask for' },
  { group: SESSIONS, flag: 'touch-threshold', kind: 'number', default: String(P.touchThreshold), min: 0, max: 1, help: 'fraction of the idle window that must pass before a touch writes' },
  { group: SESSIONS, flag: 'max-attributes', kind: 'int', default: String(P.maxAttributes), min: 0, max: 10_000, help: 'attributes per session' },
  { group: SESSIONS, flag: 'max-attribute-key-bytes', kind: 'int', default: String(P.maxAttributeKeyBytes), min: 1, max: 65_536, help: 'bytes per attribute key' },
  { group: SESSIONS, flag: 'max-attribute-value-bytes', kind: 'int', default: String(P.maxAttributeValueBytes), min: 0, max: 1_048_576, help: 'bytes per attribute value' },
  { group: SESSIONS, flag: 'max-sessions-per-subject', kind: 'int', default: String(P.maxSessionsPerSubject), min: 0, max: 1_000_000, help: 'live sessions one subject of one server_id may have at once, exactly, also under concurrent creates (0: no limit; sessions without a subject are not counted)' },
  { group: SESSIONS, flag: 'session-limit-policy', kind: SESSION_LIMIT_POLICIES, default: P.sessionLimitPolicy, help: 'a create past max-sessions-per-subject: evict-oldest revokes the subject\'s oldest live session, refuse answers RESOURCE_EXHAUSTED' },
  { group: EVENTS, flag: 'session-events', kind: 'bool', default: String(S.sessionEvents), help: 'write an event for every change of a session, in its transaction, for WatchSessionEvents; false writes none and refuses watches (every replica must agree; turning it back on invalidates resume points)' },
  { group: EVENTS, flag: 'events-retention', kind: 'duration', default: '7d', min: 60_000, max: LIFETIME_MAX, help: 'events older than this are pruned by the sweep; resuming from before what is kept is OUT_OF_RANGE' },
  { group: EVENTS, flag: 'events-retention-count', kind: 'int', default: '1000000', min: 1000, max: 1_000_000_000, help: 'events kept at most; the oldest beyond it are pruned by the sweep' },
  { group: EVENTS, flag: 'events-poll-interval', kind: 'duration', default: '100ms', min: 10, max: 60_000, help: 'how often open event streams look for new events (commits by this process, another process on the file, or another replica)' },
  { group: EVENTS, flag: 'events-progress-interval', kind: 'duration', default: '10s', min: 100, max: TIMER_MAX_MS, help: 'with progress_events, a PROGRESS event is sent after this long without one' },
  { group: EVENTS, flag: 'events-stall-timeout', kind: 'duration', default: '30s', min: 100, max: TIMER_MAX_MS, help: 'an event stream whose consumer reads nothing for this long while events wait is ended with RESOURCE_EXHAUSTED (it resumes from its last sequence)' },
  { group: EVENTS, flag: 'max-event-streams', kind: 'int', default: '256', min: 1, max: 100_000, help: 'WatchSessionEvents streams open at once; past it a new one is refused with RESOURCE_EXHAUSTED' },
  { group: BACKGROUND, flag: 'sweep-interval', kind: 'duration', default: '1m', min: 100, max: TIMER_MAX_MS, help: 'how often expired and revoked sessions are purged' },
  { group: BACKGROUND, flag: 'sweep-batch-size', kind: 'int', default: '250', min: 1, max: 100_000, help: 'rows deleted per purge transaction (run on the checkpoint worker thread, with a checkpoint between batches whenever the WAL reaches wal-autocheckpoint)' },
  { group: BACKGROUND, flag: 'revoke-batch-size', kind: 'int', default: '500', min: 1, max: 100_000, help: 'sessions RevokeSessions revokes per transaction; other calls are served between batches' },
  { group: BACKGROUND, flag: 'health-probe-interval', kind: 'duration', default: '5s', min: 100, max: TIMER_MAX_MS, help: 'how often storage is probed for health (journal mode, a tiny write)' },
  { group: CONNECTIONS, flag: 'max-message-bytes', kind: 'size', default: '1MiB', min: 1024, max: 64 * 1024 * 1024, help: 'largest request or response message; must hold the largest legitimate request (a full batch of tokens, a session with every attribute at its limit)' },
  { group: CONNECTIONS, flag: 'max-page-bytes', kind: 'size', default: '256KiB', min: 1024, max: 32 * 1024 * 1024, help: 'ListSessions stops a page before its sessions reach this many bytes (at least one session a page), so that a page always fits max-message-bytes' },
  { group: CONNECTIONS, flag: 'max-concurrent-streams', kind: 'int', default: '128', min: 1, max: 65_535, help: 'calls one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)' },
  { group: CONNECTIONS, flag: 'max-connection-memory', kind: 'size', default: '16MiB', min: 1024 * 1024, max: 1024 * 1024 * 1024, help: "memory one client connection's HTTP/2 session may hold (buffered frames and headers); past it new streams are refused" },
  { group: CONNECTIONS, flag: 'max-connection-idle', kind: 'duration', default: '30m', min: 0, max: TIMER_MAX_MS, help: 'a client connection with no call for this long is closed with GOAWAY (0: never)' },
  { group: CONNECTIONS, flag: 'max-connection-age', kind: 'duration', default: '0', min: 0, max: AGE_MAX, help: 'a client connection is asked to reconnect (GOAWAY) after this long, so load spreads over new replicas (0: never)' },
  { group: CONNECTIONS, flag: 'max-connection-age-grace', kind: 'duration', default: '5m', min: 0, max: TIMER_MAX_MS, help: 'after max-connection-age, how long calls already open may go on before the connection is closed' },
  { group: CONNECTIONS, flag: 'keepalive-time', kind: 'duration', default: '2h', min: 10_000, max: TIMER_MAX_MS, help: 'idle time before the server pings a client connection' },
  { group: CONNECTIONS, flag: 'keepalive-timeout', kind: 'duration', default: '20s', min: 1000, max: TIMER_MAX_MS, help: 'how long a keepalive ping may go unanswered (shorter than keepalive-time)' },
  { group: CONNECTIONS, flag: 'drain-timeout', kind: 'duration', default: '10s', min: 0, max: TIMER_MAX_MS, help: 'on SIGTERM, how long in-flight calls may finish before they are cancelled' },
  { group: OBSERVING, flag: 'log-level', kind: LOG_LEVELS, default: 'info', help: 'least severe log level written to stderr' },
  { group: OBSERVING, flag: 'slow-call-threshold', kind: 'duration', default: '500ms', min: 0, max: TIMER_MAX_MS, help: 'unary calls taking at least this long are logged as warnings (0: off)' },
  { group: OBSERVING, flag: 'metrics-listen', kind: 'string', allowed: 'host:port, or empty', default: '', help: 'host:port to serve Prometheus metrics on over HTTP, at /metrics (e.g. 0.0.0.0:9464); empty: off' },
  // What make bench switches to measure what a mechanism buys; in production each stays at its default.
  { group: MEASURING, measurementOnly: true, flag: 'group-commit', kind: 'bool', default: String(S.groupCommit), help: 'writes arriving in one event-loop turn share one transaction; false commits each alone' },
  { group: MEASURING, measurementOnly: true, flag: 'off-loop-fsync', kind: 'bool', default: String(S.offLoopFsync), help: 'with synchronous=full in WAL mode, commit at NORMAL and fsync the -wal file on the thread pool before answering; false lets SQLite fsync inside each commit on the main thread' },
  { group: MEASURING, measurementOnly: true, flag: 'durable-revocations', kind: 'bool', default: String(S.durableRevocations), help: 'fsync revocations and token rotations before answering them, at every synchronous setting; false answers them at commit, as other writes' },
  { group: MEASURING, measurementOnly: true, flag: 'checkpoint-worker', kind: 'bool', default: String(S.checkpointWorker), help: 'run WAL checkpoints on a worker thread; false runs them inside commits on the main thread' },
  { group: MEASURING, measurementOnly: true, flag: 'bench-service', kind: 'bool', default: 'false', help: 'serve sessiond.bench.v1.Bench (an empty RPC and event-loop delay figures for make bench); leave off in production' },
] as const satisfies readonly Spec[];

export type SettingName = (typeof SETTINGS)[number]['flag'];

/** Every setting's parsed value, typed by its kind. */
export type SettingValues = Values<typeof SETTINGS>;

export function envName(flag: string): string {
  return prefixedEnvName(ENV_PREFIX, flag);
}

/** One value of one setting; a problem quotes the value only when the setting is not secret. */
export function parseSetting(s: Spec, text: string): Parsed {
  return parseValue(s, text);
}

/** The --help text: every flag but the measurement-only ones, its variable, default and meaning. */
export function helpText(): string {
  return helpFor(SETTINGS, ENV_PREFIX, [
    'Usage: sessiond [--flag value ...]',
    '',
    'Every flag can also be set as an environment variable; flags win. A boolean flag alone means true',
    '(--reflection), or takes a value (--reflection false, --reflection=false). Every setting, with the',
    'measurement-only ones: docs/configuration.md.',
  ]);
}
