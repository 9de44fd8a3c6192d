import type { Duration } from '../../generated/google/protobuf/duration';
import type { Session } from '../../generated/sessions/v1/session';
import {
  ValidateSessionStreamRequest, ValidateSessionStreamResponse, type ValidateSessionStreamAnswer,
} from '../../generated/sessions/v1/session_service';
import { varintSize, writeVarint } from '../shared/varint';

/*
 * The ValidateSessionStream messages as the TypeScript client writes and reads
 * them: the same objects the generated (ts-proto) codec makes, without its
 * reader and writer objects, a TextDecoder call per string, and a Long-safe
 * conversion per timestamp. On a gateway's stream the generated codec takes
 * a large share of the client's JavaScript time, mostly decoding answers,
 * each with a whole Session and its seven times.
 *
 * The fast path reads a strict subset of the wire format: every field at its
 * declared wire type, varints below 2^49, no "__proto__" attribute key,
 * nothing cut short. Anything else (negative or huge numbers,
 * groups, a field at another wire type, a truncated message) goes to the
 * generated decoder, which then gives its own answer or its own error, so the
 * two never disagree. test/18-validator-wire.test.ts compares them on
 * messages of every shape, and fails when one of these messages gains a field
 * this file does not read.
 */

/** Fields read here, by message: checked against the descriptor set by the test. */
export const READ_FIELDS = {
  'sessions.v1.ValidateSessionStreamResponse': [1, 2, 3, 4, 5, 6, 7],
  'sessions.v1.ValidateSessionStreamAnswer': [1, 2, 3, 4, 5, 6],
  'sessions.v1.Session': [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
  'google.protobuf.Timestamp': [1, 2],
  'google.protobuf.Duration': [1, 2],
} as const;

/** Fields written here, by message (the request's single form, 1-3, is left to the generated encoder). */
export const WRITTEN_FIELDS = {
  'sessions.v1.ValidateSessionStreamRequest': [4],
  'sessions.v1.ValidateSessionStreamItem': [1, 2, 3],
} as const;

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** Thrown inside the fast path when the input is outside its subset; never escapes this file. */
class OutsideFastPath extends Error {}
const OUTSIDE = new OutsideFastPath();

/** Where the fast path is in the buffer; one per message decoded. */
class Cursor {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  /** Varints up to 7 bytes (below 2^49: safe integers, as every value this client meets is). */
  varint(end: number): number {
    const buf = this.buf;
    let pos = this.pos;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 7; i++) {
      if (pos >= end) throw OUTSIDE;
      const b = buf[pos++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) {
        this.pos = pos;
        return value;
      }
      scale *= 128;
    }
    throw OUTSIDE;
  }

  /** int32 fields: the generated decoder wraps values of 2^31 and up to negatives; those go to it. */
  int32(end: number): number {
    const n = this.varint(end);
    if (n > 0x7fffffff) throw OUTSIDE;
    return n;
  }

  /** The end of a length-delimited field that starts here. */
  lengthEnd(end: number): number {
    const len = this.varint(end);
    const stop = this.pos + len;
    if (stop > end) throw OUTSIDE;
    return stop;
  }

  string(end: number): string {
    const stop = this.lengthEnd(end);
    const start = this.pos;
    this.pos = stop;
    // Both decode malformed UTF-8 to U+FFFD the WHATWG way, and keep a leading
    // U+FEFF (the generated reader's TextDecoder is made with ignoreBOM).
    return stop === start ? '' : this.buf.toString('utf8', start, stop);
  }

  skip(wireType: number, end: number): void {
    switch (wireType) {
      case VARINT:
        for (let i = 0; ; i++) {
          if (this.pos >= end || i === 10) throw OUTSIDE;
          if (this.buf[this.pos++]! < 0x80) return;
        }
      case I64:
        this.pos += 8;
        break;
      case LEN:
        this.pos = this.lengthEnd(end);
        return;
      case I32:
        this.pos += 4;
        break;
      default:
        throw OUTSIDE;
    }
    if (this.pos > end) throw OUTSIDE;
  }

  /** Reads a tag, or throws for tags the generated decoder treats specially (0, end-group). */
  tag(end: number): number {
    const tag = this.varint(end);
    if (tag === 0 || (tag & 7) === 4) throw OUTSIDE;
    return tag;
  }
}

/** Timestamp and Duration are one shape on the wire: int64 seconds = 1, int32 nanos = 2. */
function readSecondsNanos(c: Cursor, end: number, into: Duration): Duration {
  while (c.pos < end) {
    const tag = c.tag(end);
    if (tag === 8) into.seconds = c.varint(end);
    else if (tag === 16) into.nanos = c.int32(end);
    else if (tag >>> 3 === 1 || tag >>> 3 === 2) throw OUTSIDE;
    else c.skip(tag & 7, end);
  }
  return into;
}

// Reused for every time read: each is turned into a Date at once, and decoding is synchronous.
const timeParts: Duration = { seconds: 0, nanos: 0 };

function readTime(c: Cursor, end: number): Date {
  timeParts.seconds = 0;
  timeParts.nanos = 0;
  readSecondsNanos(c, end, timeParts);
  // The generated fromTimestamp's arithmetic, in its order, so the milliseconds round alike.
  return new Date(timeParts.seconds * 1_000 + timeParts.nanos / 1_000_000);
}

const readDuration = (c: Cursor, end: number): Duration => readSecondsNanos(c, end, { seconds: 0, nanos: 0 });

function readAttribute(c: Cursor, end: number, into: { [key: string]: string }): void {
  let key = '';
  let value = '';
  while (c.pos < end) {
    const tag = c.tag(end);
    if (tag === 10) key = c.string(end);
    else if (tag === 18) value = c.string(end);
    else if (tag >>> 3 === 1 || tag >>> 3 === 2) throw OUTSIDE;
    else c.skip(tag & 7, end);
  }
  // A plain object's "__proto__" is its prototype, not a key: what the
  // generated decoder does with one is its own affair.
  if (key === '__proto__') throw OUTSIDE;
  into[key] = value;
}

function readSession(c: Cursor, end: number): Session {
  // The same literal as the generated createBaseSession, so both make objects of one shape.
  const s: Session = {
    id: '', serverId: '', subject: '', attributes: {}, ip: '', userAgent: '', createTime: undefined, updateTime: undefined,
    expireTime: undefined, idleExpireTime: undefined, lastActiveTime: undefined, idleTimeout: undefined, tokenRotateTime: undefined, etag: '',
  };
  while (c.pos < end) {
    const tag = c.tag(end);
    switch (tag) {
      case 10: s.id = c.string(end); continue;
      case 18: s.serverId = c.string(end); continue;
      case 26: s.subject = c.string(end); continue;
      case 34: readAttribute(c, c.lengthEnd(end), s.attributes); continue;
      case 42: s.ip = c.string(end); continue;
      case 50: s.userAgent = c.string(end); continue;
      case 58: s.createTime = readTime(c, c.lengthEnd(end)); continue;
      case 66: s.updateTime = readTime(c, c.lengthEnd(end)); continue;
      case 74: s.expireTime = readTime(c, c.lengthEnd(end)); continue;
      case 82: s.idleExpireTime = readTime(c, c.lengthEnd(end)); continue;
      case 90: s.lastActiveTime = readTime(c, c.lengthEnd(end)); continue;
      case 98: s.idleTimeout = readDuration(c, c.lengthEnd(end)); continue;
      case 106: s.tokenRotateTime = readTime(c, c.lengthEnd(end)); continue;
      case 114: s.etag = c.string(end); continue;
    }
    if (tag >>> 3 <= 14) throw OUTSIDE;
    c.skip(tag & 7, end);
  }
  return s;
}

/** Fields 1-6, which an answer and the response's single form share; false for any other tag. */
function readAnswerField(c: Cursor, tag: number, end: number, a: ValidateSessionStreamAnswer): boolean {
  switch (tag) {
    case 8: a.correlationId = c.varint(end); return true;
    case 16: a.valid = c.varint(end) !== 0; return true;
    case 26: a.session = readSession(c, c.lengthEnd(end)); return true;
    case 32: a.reason = c.int32(end); return true;
    case 40: a.errorCode = c.int32(end); return true;
    case 50: a.errorMessage = c.string(end); return true;
  }
  return false;
}

function readAnswer(c: Cursor, end: number): ValidateSessionStreamAnswer {
  const a: ValidateSessionStreamAnswer = { correlationId: 0, valid: false, session: undefined, reason: 0, errorCode: 0, errorMessage: '' };
  while (c.pos < end) {
    const tag = c.tag(end);
    if (readAnswerField(c, tag, end, a)) continue;
    if (tag >>> 3 <= 6) throw OUTSIDE;
    c.skip(tag & 7, end);
  }
  return a;
}

/** grpc-js's deserialize for ValidateSessionStream: what ValidateSessionStreamResponse.decode returns. */
export function decodeStreamResponse(buf: Buffer): ValidateSessionStreamResponse {
  const r: ValidateSessionStreamResponse = { correlationId: 0, valid: false, session: undefined, reason: 0, errorCode: 0, errorMessage: '', answers: [] };
  const c = new Cursor(buf);
  const end = buf.length;
  try {
    while (c.pos < end) {
      const tag = c.tag(end);
      if (tag === 58) r.answers.push(readAnswer(c, c.lengthEnd(end)));
      else if (readAnswerField(c, tag, end, r)) continue;
      else if (tag >>> 3 <= 7) throw OUTSIDE;
      else c.skip(tag & 7, end);
    }
    return r;
  } catch (err) {
    if (err !== OUTSIDE) throw err;
    return ValidateSessionStreamResponse.decode(buf);
  }
}

const safeId = (n: number) => Number.isSafeInteger(n) && n >= 0;

/**
 * grpc-js's serialize for ValidateSessionStream: the bytes
 * ValidateSessionStreamRequest.encode writes. Batches (items only) are written
 * here; the single form, and ids beyond 2^53, by the generated encoder.
 */
export function encodeStreamRequest(req: ValidateSessionStreamRequest): Buffer {
  const items = req.items;
  if (req.correlationId !== 0 || req.token !== '' || req.touch || items.length === 0) return generated(req);
  let size = 0;
  const bodies = new Array<number>(items.length);
  const tokenBytes = new Array<number>(items.length);
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    if (!safeId(it.correlationId)) return generated(req);
    const tb = Buffer.byteLength(it.token, 'utf8');
    tokenBytes[i] = tb;
    const body = (it.correlationId !== 0 ? 1 + varintSize(it.correlationId) : 0) + (tb !== 0 ? 1 + varintSize(tb) + tb : 0) + (it.touch ? 2 : 0);
    bodies[i] = body;
    size += 1 + varintSize(body) + body;
  }
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    buf[pos++] = 34;
    pos = writeVarint(buf, pos, bodies[i]!);
    if (it.correlationId !== 0) {
      buf[pos++] = 8;
      pos = writeVarint(buf, pos, it.correlationId);
    }
    const tb = tokenBytes[i]!;
    if (tb !== 0) {
      buf[pos++] = 18;
      pos = writeVarint(buf, pos, tb);
      pos += buf.write(it.token, pos, tb, 'utf8');
    }
    if (it.touch) {
      buf[pos++] = 24;
      buf[pos++] = 1;
    }
  }
  return buf;
}

function generated(req: ValidateSessionStreamRequest): Buffer {
  const bytes = ValidateSessionStreamRequest.encode(req).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
