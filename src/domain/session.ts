import { isIP } from 'node:net';
import { InvalidArgumentError, SessionLimitError } from './errors';

/** A session as stored. Times are milliseconds since the epoch. */
export interface SessionRecord {
  readonly id: string;
  readonly serverId: string;
  readonly subject: string;
  readonly attributes: Readonly<Record<string, string>>;
  readonly ip: string;
  readonly userAgent: string;
  readonly createTime: number;
  readonly updateTime: number;
  readonly expireTime: number;
  readonly idleExpireTime: number;
  readonly lastActiveTime: number;
  readonly idleTimeoutMs: number;
  readonly tokenRotateTime: number;
  /** Set once the session is revoked; revoked sessions are never live again. */
  readonly revokeTime: number | null;
  /** Incremented by every attribute update; the etag is derived from it. */
  readonly version: number;
}

/** Rules and limits for sessions, from configuration. */
export interface SessionPolicy {
  readonly defaultTtlMs: number;
  readonly defaultIdleTimeoutMs: number;
  readonly maxTtlMs: number;
  /**
   * A touch writes only once this fraction of the idle window has passed since
   * the last recorded activity, so that a busy session does not write on every request.
   */
  readonly touchThreshold: number;
  readonly maxAttributes: number;
  readonly maxAttributeKeyBytes: number;
  readonly maxAttributeValueBytes: number;
  readonly maxIdBytes: number;
  readonly maxUserAgentBytes: number;
  /** Live sessions one subject of one server_id may have at once; 0: no limit. Sessions without a subject are not counted. */
  readonly maxSessionsPerSubject: number;
  /** What a create past that limit does: revoke the subject's oldest live session, or be refused. */
  readonly sessionLimitPolicy: SessionLimitPolicy;
}

export const SESSION_LIMIT_POLICIES = ['evict-oldest', 'refuse'] as const;
export type SessionLimitPolicy = (typeof SESSION_LIMIT_POLICIES)[number];

export const DEFAULT_POLICY: SessionPolicy = Object.freeze({
  defaultTtlMs: 24 * 3600_000,
  defaultIdleTimeoutMs: 30 * 60_000,
  maxTtlMs: 30 * 24 * 3600_000,
  touchThreshold: 0.1,
  maxAttributes: 64,
  maxAttributeKeyBytes: 256,
  maxAttributeValueBytes: 4096,
  maxIdBytes: 256,
  maxUserAgentBytes: 1024,
  maxSessionsPerSubject: 0,
  sessionLimitPolicy: 'evict-oldest',
});

/** The refusal of a create past --max-sessions-per-subject (refuse policy). */
export function sessionLimitReached(s: Pick<SessionRecord, 'serverId' | 'subject'>, max: number): SessionLimitError {
  return new SessionLimitError(
    `subject ${JSON.stringify(s.subject.slice(0, 64))} of server_id ${JSON.stringify(s.serverId.slice(0, 64))} already has ${max} live session${max === 1 ? '' : 's'}, ` +
    'the most max-sessions-per-subject allows (policy refuse): revoke one first (RevokeSessions with except_session_id logs out the others)',
  );
}

export type SessionState = 'live' | 'revoked' | 'expired' | 'idle-timeout';

/** Revocation wins over expiry, and absolute expiry over idle expiry, so the reason is stable. */
export function sessionState(s: SessionRecord, now: number): SessionState {
  if (s.revokeTime !== null) return 'revoked';
  if (s.expireTime <= now) return 'expired';
  if (s.idleExpireTime <= now) return 'idle-timeout';
  return 'live';
}

/** The first moment the session is no longer live; the sweep index is built on it. */
export function deadAt(s: SessionRecord): number {
  const ends = Math.min(s.expireTime, s.idleExpireTime);
  return s.revokeTime === null ? ends : Math.min(ends, s.revokeTime);
}

export function etagOf(s: SessionRecord): string {
  return `"${s.version}"`;
}

/**
 * The idle expiry a touch at `now` would set, or undefined when the touch
 * should not write: too little of the idle window has passed, or the idle
 * expiry already sits at the absolute expiry.
 */
export function touchedIdleExpiry(s: SessionRecord, now: number, policy: SessionPolicy): number | undefined {
  const next = Math.min(now + s.idleTimeoutMs, s.expireTime);
  if (next <= s.idleExpireTime) return undefined;
  if (now - s.lastActiveTime < s.idleTimeoutMs * policy.touchThreshold) return undefined;
  return next;
}

function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** Rejects strings SQLite and most clients would mangle: NUL bytes, and oversized values. */
export function checkString(field: string, value: string, maxBytes: number, required = false): void {
  if (required && value.length === 0) {
    throw new InvalidArgumentError(field, `${field} is required`);
  }
  if (byteLength(value) > maxBytes) {
    throw new InvalidArgumentError(field, `${field} is ${byteLength(value)} bytes; the limit is ${maxBytes}`);
  }
  if (value.includes('\0')) {
    throw new InvalidArgumentError(field, `${field} must not contain NUL characters`);
  }
}

export function checkIp(ip: string): void {
  if (ip !== '' && isIP(ip) === 0) {
    throw new InvalidArgumentError('ip', `ip ${JSON.stringify(ip.slice(0, 64))} is not an IPv4 or IPv6 address`);
  }
}

export function checkAttributes(field: string, attrs: Readonly<Record<string, string>>, policy: SessionPolicy): void {
  const keys = Object.keys(attrs);
  if (keys.length > policy.maxAttributes) {
    throw new InvalidArgumentError(field, `${field} has ${keys.length} entries; the limit is ${policy.maxAttributes}`);
  }
  for (const key of keys) {
    if (key.length === 0) throw new InvalidArgumentError(field, `${field} keys must not be empty`);
    checkString(`${field} key ${JSON.stringify(key.slice(0, 32))}`, key, policy.maxAttributeKeyBytes);
    checkString(`${field}[${JSON.stringify(key.slice(0, 32))}]`, attrs[key]!, policy.maxAttributeValueBytes);
  }
}

/**
 * Resolves a requested duration against its default and the maximum.
 * `undefined` and 0 mean "use the default", as proto3 cannot tell them apart.
 */
export function resolveDuration(field: string, requestedMs: number | undefined, defaultMs: number, maxMs: number): number {
  if (requestedMs === undefined || requestedMs === 0) return defaultMs;
  if (!Number.isFinite(requestedMs) || requestedMs < 0) {
    throw new InvalidArgumentError(field, `${field} must be positive`);
  }
  if (requestedMs < 1) {
    throw new InvalidArgumentError(field, `${field} must be at least 1ms`);
  }
  if (requestedMs > maxMs) {
    throw new InvalidArgumentError(field, `${field} of ${requestedMs}ms exceeds the maximum of ${maxMs}ms`);
  }
  return Math.floor(requestedMs);
}

/*
 * Upper bounds of a Session's protobuf size, so that pages and limits can be
 * sized without encoding: a string field is its bytes, a tag and a length of at
 * most three bytes (under 2 MiB); a map entry is a nested message of two such
 * fields; the timestamps, durations, etag and framing of a Session fit in 300.
 */
const SESSION_FIXED_BYTES = 300;
const STRING_OVERHEAD = 4;
const MAP_ENTRY_OVERHEAD = 12;

/** At least the encoded size of `s` as a Session message, framing in a repeated field included. */
export function encodedSizeBound(s: SessionRecord): number {
  let n = SESSION_FIXED_BYTES;
  for (const v of [s.id, s.serverId, s.subject, s.ip, s.userAgent]) n += byteLength(v) + STRING_OVERHEAD;
  for (const key in s.attributes) n += byteLength(key) + byteLength(s.attributes[key]!) + MAP_ENTRY_OVERHEAD;
  return n;
}

/** The bound of encodedSizeBound for the largest session `policy` lets a client create. */
export function largestSessionBytes(policy: SessionPolicy): number {
  // id, server_id, subject and ip are each at most maxIdBytes (an id is 22, an ip at most 45).
  return SESSION_FIXED_BYTES + 4 * (policy.maxIdBytes + STRING_OVERHEAD) + policy.maxUserAgentBytes + STRING_OVERHEAD
    + policy.maxAttributes * (policy.maxAttributeKeyBytes + policy.maxAttributeValueBytes + MAP_ENTRY_OVERHEAD);
}
