import type { ServiceDefinition } from '@grpc/grpc-js';
import type { SessionRecord } from '../domain/session';
import type { ValidateResult } from '../domain/session-manager';
import { reasonToProto } from './convert';
import { varintSize, writeVarint } from '../shared/varint';

/*
 * Responses that carry sessions, encoded straight from SessionRecords into one
 * buffer: the same bytes the generated (ts-proto) encoders write from
 * sessionToProto's objects, without those objects, their seven Dates, and the
 * writer's fork/join per sub-message and one Uint8Array per string. Those
 * cost ValidateSession more server CPU than writing the bytes directly does,
 * and a ListSessions page carries a hundred sessions.
 *
 * The field numbers are those of proto/sessions/v1/session.proto and
 * session_service.proto; test/07-session-wire.test.ts fails when a message
 * gains a field this file does not write, and compares bytes with the
 * generated encoders. A record whose values the fast path does not cover (a
 * time before 1970 or a fractional millisecond, which only a hand-edited row
 * holds) returns undefined, and the caller falls back to the generated encoder.
 */

/** Message fields this file writes, by message: checked against the descriptor set by the test. */
export const WIRE_FIELDS = {
  'sessions.v1.Session': [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
  'sessions.v1.ValidateSessionResponse': [1, 2, 3],
  'sessions.v1.GetSessionResponse': [1],
  'sessions.v1.TouchSessionResponse': [1],
  'sessions.v1.UpdateSessionResponse': [1],
  'sessions.v1.CreateSessionResponse': [1, 2],
  'sessions.v1.RotateSessionTokenResponse': [1, 2],
  'sessions.v1.ListSessionsResponse': [1, 2, 3],
  'sessions.v1.ValidateSessionStreamAnswer': [1, 2, 3, 4, 5, 6],
  // Batched responses carry answers (7) only; fields 1-6 answer the single form, through the generated encoder.
  'sessions.v1.ValidateSessionStreamResponse': [1, 2, 3, 4, 5, 6, 7],
} as const;

const LEN = 2;
const tag = (field: number, wireType: number) => (field << 3) | wireType;

const strSize = (s: string) => {
  if (s === '') return 0;
  const n = Buffer.byteLength(s, 'utf8');
  return 1 + varintSize(n) + n;
};

function writeStr(buf: Buffer, pos: number, field: number, s: string): number {
  if (s === '') return pos;
  buf[pos++] = tag(field, LEN);
  pos = writeVarint(buf, pos, Buffer.byteLength(s, 'utf8'));
  return pos + buf.write(s, pos, 'utf8');
}

/** Body size of a Timestamp or Duration of `ms` milliseconds (seconds = 1, nanos = 2). */
function timeBodySize(ms: number): number {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  return (seconds !== 0 ? 1 + varintSize(seconds) : 0) + (nanos !== 0 ? 1 + varintSize(nanos) : 0);
}

function writeTime(buf: Buffer, pos: number, field: number, ms: number): number {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  buf[pos++] = tag(field, LEN);
  // The body is at most 11 bytes: its length is one byte.
  buf[pos++] = timeBodySize(ms);
  if (seconds !== 0) {
    buf[pos++] = tag(1, 0);
    pos = writeVarint(buf, pos, seconds);
  }
  if (nanos !== 0) {
    buf[pos++] = tag(2, 0);
    pos = writeVarint(buf, pos, nanos);
  }
  return pos;
}

const isMs = (ms: number) => Number.isSafeInteger(ms) && ms >= 0;

/** Whether the fast path writes exactly what the generated encoder would. */
function covered(r: SessionRecord): boolean {
  return isMs(r.createTime) && isMs(r.updateTime) && isMs(r.expireTime) && isMs(r.idleExpireTime)
    && isMs(r.lastActiveTime) && isMs(r.idleTimeoutMs) && isMs(r.tokenRotateTime) && Number.isSafeInteger(r.version);
}

const etag = (r: SessionRecord) => `"${r.version}"`;

/** A Timestamp or Duration field: tag, one length byte, body. */
const timeFieldSize = (ms: number) => 2 + timeBodySize(ms);

function sessionBodySize(r: SessionRecord): number {
  let size = strSize(r.id) + strSize(r.serverId) + strSize(r.subject) + strSize(r.ip) + strSize(r.userAgent) + strSize(etag(r));
  for (const key in r.attributes) {
    const entry = strSize(key) + strSize(r.attributes[key]!);
    size += 1 + varintSize(entry) + entry;
  }
  return size + timeFieldSize(r.createTime) + timeFieldSize(r.updateTime) + timeFieldSize(r.expireTime) + timeFieldSize(r.idleExpireTime)
    + timeFieldSize(r.lastActiveTime) + timeFieldSize(r.idleTimeoutMs) + timeFieldSize(r.tokenRotateTime);
}

/** Session as a length-delimited field `field`, bodySize from sessionBodySize. */
function writeSession(buf: Buffer, pos: number, field: number, r: SessionRecord, bodySize: number): number {
  buf[pos++] = tag(field, LEN);
  pos = writeVarint(buf, pos, bodySize);
  pos = writeStr(buf, pos, 1, r.id);
  pos = writeStr(buf, pos, 2, r.serverId);
  pos = writeStr(buf, pos, 3, r.subject);
  for (const key in r.attributes) {
    const value = r.attributes[key]!;
    buf[pos++] = tag(4, LEN);
    pos = writeVarint(buf, pos, strSize(key) + strSize(value));
    pos = writeStr(buf, pos, 1, key);
    pos = writeStr(buf, pos, 2, value);
  }
  pos = writeStr(buf, pos, 5, r.ip);
  pos = writeStr(buf, pos, 6, r.userAgent);
  pos = writeTime(buf, pos, 7, r.createTime);
  pos = writeTime(buf, pos, 8, r.updateTime);
  pos = writeTime(buf, pos, 9, r.expireTime);
  pos = writeTime(buf, pos, 10, r.idleExpireTime);
  pos = writeTime(buf, pos, 11, r.lastActiveTime);
  pos = writeTime(buf, pos, 12, r.idleTimeoutMs);
  pos = writeTime(buf, pos, 13, r.tokenRotateTime);
  return writeStr(buf, pos, 14, etag(r));
}

const sessionFieldSize = (body: number) => 1 + varintSize(body) + body;

/**
 * { Session session = 1; string token = 2; }: CreateSession and
 * RotateSessionToken with a token; Get, Touch and Update without.
 * undefined: not covered, use the generated encoder.
 */
export function encodeSessionResponse(r: SessionRecord, token = ''): Buffer | undefined {
  if (!covered(r)) return undefined;
  const body = sessionBodySize(r);
  const buf = Buffer.allocUnsafe(sessionFieldSize(body) + strSize(token));
  const end = writeStr(buf, writeSession(buf, 0, 1, r, body), 2, token);
  return end === buf.length ? buf : undefined;
}

/** ValidateSessionResponse { bool valid = 1; Session session = 2; InvalidReason reason = 3; } */
export function encodeValidateResponse(result: ValidateResult): Buffer | undefined {
  if (!result.valid) {
    const reason = reasonToProto(result.reason);
    return Buffer.from([tag(3, 0), reason]);
  }
  const r = result.session;
  if (!covered(r)) return undefined;
  const body = sessionBodySize(r);
  const buf = Buffer.allocUnsafe(2 + sessionFieldSize(body));
  buf[0] = tag(1, 0);
  buf[1] = 1;
  const end = writeSession(buf, 2, 2, r, body);
  return end === buf.length ? buf : undefined;
}

/** ListSessionsResponse { repeated Session sessions = 1; string next_page_token = 2; uint64 sequence = 3; } */
export function encodeListResponse(records: readonly SessionRecord[], nextPageToken: string, sequence: number): Buffer | undefined {
  if (!records.every(covered) || !Number.isSafeInteger(sequence) || sequence < 0) return undefined;
  const bodies = records.map(sessionBodySize);
  const sequenceSize = sequence !== 0 ? 1 + varintSize(sequence) : 0;
  const buf = Buffer.allocUnsafe(bodies.reduce((n, b) => n + sessionFieldSize(b), 0) + strSize(nextPageToken) + sequenceSize);
  let pos = 0;
  records.forEach((r, i) => (pos = writeSession(buf, pos, 1, r, bodies[i]!)));
  pos = writeStr(buf, pos, 2, nextPageToken);
  if (sequenceSize > 0) {
    buf[pos++] = tag(3, 0);
    pos = writeVarint(buf, pos, sequence);
  }
  return pos === buf.length ? buf : undefined;
}

/**
 * ValidateSessionStreamAnswer { uint64 correlation_id = 1; bool valid = 2;
 * Session session = 3; InvalidReason reason = 4; } for a validation that was
 * answered; correlation ids up to 2^53 (what the generated decoder reads).
 */
export function encodeStreamAnswer(correlationId: number, result: ValidateResult): Buffer | undefined {
  if (!Number.isSafeInteger(correlationId) || correlationId < 0) return undefined;
  const idSize = correlationId !== 0 ? 1 + varintSize(correlationId) : 0;
  if (!result.valid) {
    const buf = Buffer.allocUnsafe(idSize + 2);
    let pos = 0;
    if (idSize > 0) {
      buf[pos++] = tag(1, 0);
      pos = writeVarint(buf, pos, correlationId);
    }
    buf[pos++] = tag(4, 0);
    buf[pos] = reasonToProto(result.reason);
    return buf;
  }
  const r = result.session;
  if (!covered(r)) return undefined;
  const body = sessionBodySize(r);
  const buf = Buffer.allocUnsafe(idSize + 2 + sessionFieldSize(body));
  let pos = 0;
  if (idSize > 0) {
    buf[pos++] = tag(1, 0);
    pos = writeVarint(buf, pos, correlationId);
  }
  buf[pos++] = tag(2, 0);
  buf[pos++] = 1;
  pos = writeSession(buf, pos, 3, r, body);
  return pos === buf.length ? buf : undefined;
}

/**
 * A batched ValidateSessionStreamResponse: each encoded answer as one entry of
 * `repeated ValidateSessionStreamAnswer answers = 7`.
 */
export function encodeStreamAnswers(answers: readonly Buffer[]): Buffer {
  let size = 0;
  for (const a of answers) size += 1 + varintSize(a.length) + a.length;
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  for (const a of answers) {
    buf[pos++] = tag(7, LEN);
    pos = writeVarint(buf, pos, a.length);
    pos += a.copy(buf, pos);
  }
  return buf;
}

/**
 * grpc-js hands whatever a handler answers to the method's responseSerialize:
 * with this, a Buffer (from the encoders above) goes out as it is, and
 * anything else through the generated encoder.
 */
export function acceptPreEncoded<D extends ServiceDefinition>(definition: D): D {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    const serialize = method.responseSerialize as (value: unknown) => Buffer;
    out[name] = { ...method, responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : serialize(value)) };
  }
  return out as D;
}

/**
 * A pre-encoded answer where the handler's type wants the message object;
 * only for services added through acceptPreEncoded.
 */
export function preEncoded<T>(bytes: Buffer): T {
  return bytes as unknown as T;
}
