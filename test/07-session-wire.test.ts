import test from 'ava';
import { createFileRegistry, fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CreateSessionResponse, GetSessionResponse, InvalidReason as ProtoReason, ListSessionsResponse, ValidateSessionResponse,
  ValidateSessionStreamAnswer, ValidateSessionStreamResponse,
} from '../generated/sessions/v1/session_service';
import type { SessionRecord } from '../src/domain/session';
import type { InvalidReason } from '../src/domain/session-manager';
import { reasonToProto, sessionToProto } from '../src/transport/convert';
import {
  acceptPreEncoded, encodeListResponse, encodeSessionResponse, encodeStreamAnswer, encodeStreamAnswers, encodeValidateResponse, WIRE_FIELDS,
} from '../src/transport/session-wire';
import { SessionServiceService } from '../generated/sessions/v1/session_service';

/*
 * session-wire.ts writes responses by hand, for speed: byte for byte what the
 * generated encoders write, and it must learn about every new field.
 */

const bytes = (w: { finish(): Uint8Array }) => Buffer.from(w.finish());

function rec(over: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id: 'AAAAAAAAAAAAAAAAAAAAAA',
    serverId: 'web-1',
    subject: 'user-1',
    attributes: { role: 'member', plan: 'pro' },
    ip: '203.0.113.9',
    userAgent: 'Mozilla/5.0',
    createTime: 1_764_000_000_123,
    updateTime: 1_764_000_001_000,
    expireTime: 1_764_086_400_123,
    idleExpireTime: 1_764_003_600_999,
    lastActiveTime: 1_764_000_000_001,
    idleTimeoutMs: 3_600_000,
    tokenRotateTime: 1_764_000_000_123,
    revokeTime: null,
    version: 1,
    ...over,
  };
}

/** Shapes the generated encoder treats differently: empty strings, zero times, odd keys, non-ASCII, long values. */
const CASES: [string, SessionRecord][] = [
  ['typical', rec()],
  ['no attributes, empty optional strings', rec({ attributes: {}, ip: '', userAgent: '', subject: '' })],
  ['zero times and idle timeout', rec({ createTime: 0, updateTime: 0, expireTime: 0, idleExpireTime: 0, lastActiveTime: 0, tokenRotateTime: 0, idleTimeoutMs: 0 })],
  ['whole seconds (no nanos)', rec({ createTime: 1_764_000_000_000, idleTimeoutMs: 1000 })],
  ['latest time a Date holds', rec({ expireTime: 8.64e15, idleExpireTime: 8.64e15 - 1 })],
  ['integer-like and odd keys, empty key and value', rec({ attributes: { 10: 'ten', 2: 'two', b: '', '': 'empty key', __proto__x: 'p' } as Record<string, string> })],
  ['non-ASCII', rec({ subject: 'Zoë 日本 🎉', attributes: { 'clé': 'valeur ✓', emoji: '👩‍💻' }, userAgent: 'Ünïcödé/1.0' })],
  ['long values (multi-byte lengths)', rec({ userAgent: 'x'.repeat(300), attributes: { big: 'y'.repeat(20_000) } })],
  ['large version', rec({ version: 2 ** 40 })],
];

for (const [name, r] of CASES) {
  test(`session responses are byte for byte the generated encoding: ${name}`, (t) => {
    t.deepEqual(encodeSessionResponse(r), bytes(GetSessionResponse.encode({ session: sessionToProto(r) })));
    t.deepEqual(encodeSessionResponse(r, 'tok_123'), bytes(CreateSessionResponse.encode({ session: sessionToProto(r), token: 'tok_123' })));
    t.deepEqual(
      encodeValidateResponse({ valid: true, session: r }),
      bytes(ValidateSessionResponse.encode({ valid: true, session: sessionToProto(r), reason: 0 })),
    );
    // And what the client decodes is the session.
    t.deepEqual(GetSessionResponse.decode(encodeSessionResponse(r)!).session, sessionToProto(r));
  });
}

test('invalid validations carry only the reason, as the generated encoder writes it', (t) => {
  for (const reason of ['not-found', 'expired', 'idle-timeout', 'revoked'] as InvalidReason[]) {
    t.deepEqual(
      encodeValidateResponse({ valid: false, reason }),
      bytes(ValidateSessionResponse.encode({ valid: false, session: undefined, reason: reasonToProto(reason) })),
      reason,
    );
  }
});

test('list pages are byte for byte the generated encoding (empty, one, a hundred; with and without a next token and a sequence)', (t) => {
  const many = Array.from({ length: 100 }, (_, i) => rec({ id: `id-${i}`, attributes: { i: String(i) }, version: i + 1 }));
  const cases: [SessionRecord[], string, number][] = [[[], '', 0], [[rec()], '', 1], [many, 'next-page', 300], [[], 'x', 2 ** 53 - 1]];
  for (const [records, next, sequence] of cases) {
    t.deepEqual(
      encodeListResponse(records, next, sequence),
      bytes(ListSessionsResponse.encode({ sessions: records.map(sessionToProto), nextPageToken: next, sequence })),
    );
  }
  t.is(encodeListResponse([], '', 2 ** 53), undefined, 'a sequence past 2^53 goes through the generated encoder');
});

test('batched stream answers are byte for byte the generated encoding, correlation ids up to 2^53 included', (t) => {
  const answer = (correlationId: number, over: Partial<ValidateSessionStreamAnswer>): ValidateSessionStreamAnswer => ({
    correlationId, valid: false, session: undefined, reason: ProtoReason.INVALID_REASON_UNSPECIFIED, errorCode: 0, errorMessage: '', ...over,
  });
  const ids = [0, 1, 127, 128, 300, 2 ** 32, 2 ** 53 - 1];
  const expected: ValidateSessionStreamAnswer[] = [];
  const encoded: Buffer[] = [];
  for (const [i, id] of ids.entries()) {
    const r = CASES[i % CASES.length]![1];
    expected.push(answer(id, { valid: true, session: sessionToProto(r) }));
    encoded.push(encodeStreamAnswer(id, { valid: true, session: r })!);
    expected.push(answer(id, { reason: reasonToProto('revoked') }));
    encoded.push(encodeStreamAnswer(id, { valid: false, reason: 'revoked' })!);
  }
  encoded.forEach((b, i) => t.deepEqual(b, bytes(ValidateSessionStreamAnswer.encode(expected[i]!)), `answer ${i}`));
  const response = { correlationId: 0, valid: false, session: undefined, reason: ProtoReason.INVALID_REASON_UNSPECIFIED, errorCode: 0, errorMessage: '', answers: expected };
  t.deepEqual(encodeStreamAnswers(encoded), bytes(ValidateSessionStreamResponse.encode(response)));
  t.deepEqual(encodeStreamAnswers([]), Buffer.alloc(0));
  // Ids the generated decoder would not read back exactly are left to the generated encoder.
  t.is(encodeStreamAnswer(2 ** 53, { valid: false, reason: 'expired' }), undefined);
  t.is(encodeStreamAnswer(-1, { valid: false, reason: 'expired' }), undefined);
});

test('values the fast path does not cover (only a hand-edited row has them) fall back to the generated encoder', (t) => {
  for (const odd of [rec({ createTime: -1 }), rec({ lastActiveTime: 1.5 }), rec({ idleTimeoutMs: 1000.25 }), rec({ expireTime: Number.NaN })]) {
    t.is(encodeSessionResponse(odd), undefined);
    t.is(encodeValidateResponse({ valid: true, session: odd }), undefined);
    t.is(encodeListResponse([rec(), odd], '', 0), undefined);
  }
});

test('every field of the messages written by hand is known to session-wire.ts (a new proto field fails here)', (t) => {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(join(__dirname, '..', 'descriptors', 'sessiond.binpb')));
  const registry = createFileRegistry(set);
  for (const [name, fields] of Object.entries(WIRE_FIELDS)) {
    const message = registry.getMessage(name);
    t.truthy(message, `${name} is in the descriptor set`);
    t.deepEqual(message!.fields.map((f) => f.number).sort((a, b) => a - b), [...fields], `${name}: update session-wire.ts for the new field`);
  }
});

test('acceptPreEncoded passes Buffers through and encodes anything else with the generated serializer', (t) => {
  const def = acceptPreEncoded(SessionServiceService);
  const pre = Buffer.from([1, 2, 3]);
  t.is(def.getSession.responseSerialize(pre as never), pre);
  const res = { session: sessionToProto(rec()) };
  t.deepEqual(def.getSession.responseSerialize(res), SessionServiceService.getSession.responseSerialize(res));
});
