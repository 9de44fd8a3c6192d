import { DEFAULT_POLICY } from '../domain/session';
import { DEFAULT_STORAGE_OPTIONS } from '../storage/sqlite/pragmas';
import { formatDuration, parseDuration, parseSize } from '../shared/units';

/*
 * Every server setting, and how one value of it is parsed. The table is the
 * one source of --help, the SESSIOND_* variable names and the defaults; the
 * config loader (config.ts) composes the parsed values into a Config.
 */

export type Kind = 'string' | 'duration' | 'size' | 'int' | 'number' | 'bool' | readonly string[];

export interface Spec {
  /** Flag name; the variable is SESSIOND_ + upper snake case of it. */
  readonly flag: string;
  readonly kind: Kind;
  readonly default: string;
  readonly help: string;
  readonly min?: number;
  readonly max?: number;
  /** Its value is never printed: not in --help, not in a parse error, not in the start-up log. */
  readonly secret?: boolean;
}

const S = DEFAULT_STORAGE_OPTIONS;
const P = DEFAULT_POLICY;

/** Every setting, in the order the README's table and --help list them. */
export const SETTINGS = [
  { flag: 'listen', kind: 'string', default: '127.0.0.1:50051', help: 'host:port to serve gRPC on (0.0.0.0:50051 in containers; a non-loopback address needs principals, see docs/security.md)' },
  { flag: 'principals-file', kind: 'string', default: '', help: 'YAML or JSON file of the principals (API keys, mTLS identities) allowed to call, reloaded on SIGHUP and when it changes; empty: protected mode (loopback callers only)' },
  { flag: 'allow-unauthenticated', kind: 'bool', default: 'false', help: 'with no principals, serve every caller with every permission, on any listen address (only behind something that authenticates; logged at every start)' },
  { flag: 'admin-token', kind: 'string', default: '', secret: true, help: 'shorthand for one principal with the admin permission whose API key is this token' },
  { flag: 'db-path', kind: 'string', default: './data/sessions.db', help: 'SQLite database file (created if missing, 0600 in a 0700 folder)' },
  { flag: 'journal-mode', kind: ['wal', 'delete', 'truncate', 'persist'], default: S.journalMode, help: 'PRAGMA journal_mode' },
  { flag: 'synchronous', kind: ['off', 'normal', 'full', 'extra'], default: S.synchronous, help: 'PRAGMA synchronous (see Durability)' },
  // Bounded to a 32-bit int: the pragma is applied with `| 0`, which would silently wrap (and flip the sign of) larger values.
  { flag: 'cache-size', kind: 'int', default: String(S.cacheSize), min: -2_147_483_648, max: 2_147_483_647, help: 'PRAGMA cache_size (negative: KiB, positive: pages)' },
  { flag: 'busy-timeout', kind: 'duration', default: `${S.busyTimeoutMs}ms`, max: 600_000, help: 'PRAGMA busy_timeout: how long a write waits for a lock held elsewhere' },
  { flag: 'wal-autocheckpoint', kind: 'int', default: String(S.walAutocheckpoint), min: 0, max: 2_147_483_647, help: 'PRAGMA wal_autocheckpoint, in pages (0: off)' },
  { flag: 'journal-size-limit', kind: 'size', default: `${S.journalSizeLimit / 1024 / 1024}MiB`, min: -1, help: 'PRAGMA journal_size_limit: the WAL is cut back to this after a checkpoint (-1: never)' },
  { flag: 'max-db-size', kind: 'size', default: String(S.maxDbSize), min: 0, help: 'largest the database may grow (PRAGMA max_page_count, in whole pages); past it writes fail with RESOURCE_EXHAUSTED and nothing is written (0: no limit)' },
  { flag: 'max-pending-writes', kind: 'int', default: String(S.maxPendingWrites), min: 1, max: 1_000_000, help: 'writes that may wait to be committed at once; past it a write is refused with UNAVAILABLE (retryable) instead of waiting' },
  { flag: 'group-commit', kind: 'bool', default: String(S.groupCommit), help: 'writes arriving in one event-loop turn share one transaction; false commits each alone (only to measure it, make bench)' },
  { flag: 'off-loop-fsync', kind: 'bool', default: String(S.offLoopFsync), help: 'with synchronous=full in WAL mode, commit at NORMAL and fsync the -wal file on the thread pool before answering; false lets SQLite fsync inside each commit on the main thread (only to measure it, make bench)' },
  { flag: 'durable-revocations', kind: 'bool', default: 'true', help: 'fsync revocations and token rotations before answering them, at every synchronous setting; false answers them at commit, as other writes (only to measure it, make bench)' },
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
  { flag: 'revoke-batch-size', kind: 'int', default: '500', min: 1, max: 100_000, help: 'sessions RevokeSessions revokes per transaction; other calls are served between batches' },
  { flag: 'health-probe-interval', kind: 'duration', default: '5s', min: 100, help: 'how often storage is probed for health (journal mode, a tiny write)' },
  { flag: 'max-message-bytes', kind: 'size', default: '1MiB', min: 1024, max: 64 * 1024 * 1024, help: 'largest request or response message; must hold the largest legitimate request (a full batch of tokens, a session with every attribute at its limit)' },
  { flag: 'max-page-bytes', kind: 'size', default: '256KiB', min: 1024, max: 32 * 1024 * 1024, help: 'ListSessions stops a page before its sessions reach this many bytes (at least one session a page), so that a page always fits max-message-bytes' },
  { flag: 'max-concurrent-streams', kind: 'int', default: '128', min: 1, max: 65_535, help: 'calls one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)' },
  { flag: 'max-connection-memory', kind: 'size', default: '16MiB', min: 1024 * 1024, max: 1024 * 1024 * 1024, help: "memory one client connection's HTTP/2 session may hold (buffered frames and headers); past it new streams are refused" },
  { flag: 'max-connection-idle', kind: 'duration', default: '30m', min: 0, help: 'a client connection with no call for this long is closed with GOAWAY (0: never)' },
  { flag: 'max-connection-age', kind: 'duration', default: '0', min: 0, help: 'a client connection is asked to reconnect (GOAWAY) after this long, so load spreads over new replicas (0: never)' },
  { flag: 'max-connection-age-grace', kind: 'duration', default: '5m', min: 0, help: 'after max-connection-age, how long calls already open may go on before the connection is closed' },
  { flag: 'keepalive-time', kind: 'duration', default: '2h', min: 10_000, help: 'idle time before the server pings a client connection' },
  { flag: 'keepalive-timeout', kind: 'duration', default: '20s', min: 1000, help: 'how long a keepalive ping may go unanswered' },
  { flag: 'drain-timeout', kind: 'duration', default: '10s', min: 0, help: 'on SIGTERM, how long in-flight calls may finish before they are cancelled' },
  { flag: 'reflection', kind: 'bool', default: 'true', help: 'serve gRPC server reflection' },
  { flag: 'tls-cert', kind: 'string', default: '', help: 'PEM certificate chain to serve TLS with (needs --tls-key); empty: plaintext' },
  { flag: 'tls-key', kind: 'string', default: '', help: 'PEM private key of --tls-cert (unencrypted)' },
  { flag: 'tls-client-ca', kind: 'string', default: '', help: 'PEM CA bundle: with it, clients must present a certificate it signed (mTLS); a SAN of it can name a principal (tls_identity)' },
  { flag: 'log-level', kind: ['debug', 'info', 'warn', 'error', 'silent'], default: 'info', help: 'least severe log level written to stderr' },
  { flag: 'slow-call-threshold', kind: 'duration', default: '500ms', min: 0, help: 'unary calls taking at least this long are logged as warnings (0: off)' },
  { flag: 'metrics-listen', kind: 'string', default: '', help: 'host:port to serve Prometheus metrics on over HTTP, at /metrics (e.g. 0.0.0.0:9464); empty: off' },
  // Benchmark only: make bench starts its servers with it; nothing else should.
  { flag: 'bench-service', kind: 'bool', default: 'false', help: 'benchmark only: serve sessiond.bench.v1.Bench (an empty RPC and event-loop delay figures for make bench); leave off in production' },
] as const satisfies readonly Spec[];

export type SettingName = (typeof SETTINGS)[number]['flag'];

export type Parsed = { readonly ok: true; readonly value: string | number | boolean } | { readonly ok: false; readonly problem: string };

export function envName(flag: string): string {
  return `SESSIOND_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * One value of one setting. A problem names what was expected; it quotes the
 * value given only when the setting is not secret.
 */
export function parseSetting(s: Spec, text: string): Parsed {
  const shown = (t: string) => (s.secret ? 'the value given' : JSON.stringify(t));
  const bad = (expected: string): Parsed => ({ ok: false, problem: `${shown(text)} is not ${expected}` });
  const range = (n: number, label: string): Parsed => {
    const what = s.secret ? 'the value given' : label;
    if (s.min !== undefined && n < s.min) return { ok: false, problem: `${what} is below the minimum of ${s.min}` };
    if (s.max !== undefined && n > s.max) return { ok: false, problem: `${what} is above the maximum of ${s.max}` };
    return { ok: true, value: n };
  };
  if (Array.isArray(s.kind)) {
    const v = text.trim().toLowerCase();
    return s.kind.includes(v) ? { ok: true, value: v } : bad(`one of ${s.kind.join(', ')}`);
  }
  switch (s.kind) {
    case 'string':
      return { ok: true, value: text };
    case 'bool':
      if (/^(true|1|yes|on)$/i.test(text.trim())) return { ok: true, value: true };
      if (/^(false|0|no|off)$/i.test(text.trim())) return { ok: true, value: false };
      return bad('a boolean (true or false)');
    case 'int':
      if (!/^-?\d+$/.test(text.trim())) return bad('an integer');
      return range(Number(text), text.trim());
    case 'number': {
      const n = Number(text);
      if (text.trim() === '' || !Number.isFinite(n)) return bad('a number');
      return range(n, text.trim());
    }
    case 'duration': {
      const ms = parseDuration(text);
      if (ms === undefined) return bad('a duration (e.g. 250ms, 30s, 5m, 24h, 7d)');
      return range(ms, `${text.trim()} (${ms}ms)`);
    }
    case 'size': {
      const n = parseSize(text);
      if (n === undefined) return bad('a size (e.g. 4096, 64KiB, 8MiB)');
      return range(n, text.trim());
    }
  }
  return { ok: false, problem: 'unsupported setting kind' };
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
