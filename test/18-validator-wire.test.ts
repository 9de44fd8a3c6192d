import test from 'ava';
import { createFileRegistry, fromBinary } from '@bufbuild/protobuf';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Session } from '../generated/sessions/v1/session';
import {
  InvalidReason, ValidateSessionStreamRequest, ValidateSessionStreamResponse, type ValidateSessionStreamAnswer, type ValidateSessionStreamItem,
} from '../generated/sessions/v1/session_service';
import type { SessionRecord } from '../src/domain/session';
import { encodeStreamAnswer, encodeStreamAnswers } from '../src/transport/session-wire';
import { decodeStreamResponse, encodeStreamRequest, READ_FIELDS, WRITTEN_FIELDS } from '../src/client/validator-wire';

/*
 * The client's hand-written ValidateSessionStream codec must agree with the
 * generated one on every input: the same objects for what it reads, the same
 * error (through its fallback) for what it cannot, the same bytes for what it
 * writes.
 */

const generatedDecode = (b: Buffer) => ValidateSessionStreamResponse.decode(b);
const generatedEncode = (r: ValidateSessionStreamRequest) => Buffer.from(ValidateSessionStreamRequest.encode(r).finish());

/** Both decoders give deep-equal objects, or both throw the same message. */
function agree(t: import('ava').ExecutionContext, b: Buffer, label: string): 'decoded' | 'threw' {
  let expected: ValidateSessionStreamResponse | undefined;
  let expectedError: string | undefined;
  try {
    expected = generatedDecode(b);
  } catch (err) {
    expectedError = (err as Error).message;
  }
  if (expectedError !== undefined) {
    const err = t.throws(() => decodeStreamResponse(b), undefined, `${label}: the generated decoder threw "${expectedError}"`);
    t.is(err?.message, expectedError, label);
    return 'threw';
  }
  t.deepEqual(decodeStreamResponse(b), expected!, label);
  return 'decoded';
}

/**
 * Runs fn with the generated codec disabled: what it returns was made by the
 * fast path alone. (Synchronous, so no other test runs meanwhile.)
 */
function fastPathOnly<T>(fn: () => T): T | 'fell back' {
  const decode = ValidateSessionStreamResponse.decode;
  const encode = ValidateSessionStreamRequest.encode;
  const marker = new Error('fell back');
  ValidateSessionStreamResponse.decode = () => { throw marker; };
  ValidateSessionStreamRequest.encode = () => { throw marker; };
  try {
    return fn();
  } catch (err) {
    if (err === marker) return 'fell back';
    throw err;
  } finally {
    ValidateSessionStreamResponse.decode = decode;
    ValidateSessionStreamRequest.encode = encode;
  }
}

const session = (over: Partial<Session> = {}): Session => ({
  id: '0193a1b2c3d4-AAAAAAAAAAAAAAAAAAA',
  serverId: 'web-1',
  subject: 'user-1',
  attributes: { role: 'member', plan: 'pro' },
  ip: '203.0.113.9',
  userAgent: 'Mozilla/5.0',
  createTime: new Date(1_764_000_000_123),
  updateTime: new Date(1_764_000_001_000),
  expireTime: new Date(1_764_086_400_123),
  idleExpireTime: new Date(1_764_003_600_999),
  lastActiveTime: new Date(1_764_000_000_001),
  idleTimeout: { seconds: 3600, nanos: 0 },
  tokenRotateTime: new Date(1_764_000_000_123),
  etag: '"1"',
  ...over,
});

const answer = (over: Partial<ValidateSessionStreamAnswer> = {}): ValidateSessionStreamAnswer => ({
  correlationId: 7, valid: true, session: session(), reason: 0, errorCode: 0, errorMessage: '', ...over,
});

const response = (over: Partial<ValidateSessionStreamResponse> = {}): ValidateSessionStreamResponse => ({
  correlationId: 0, valid: false, session: undefined, reason: 0, errorCode: 0, errorMessage: '', answers: [], ...over,
});

const encoded = (r: ValidateSessionStreamResponse) => Buffer.from(ValidateSessionStreamResponse.encode(r).finish());

test('the fields the codec reads and writes are every field of those messages (a new field must be added here)', (t) => {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(join(__dirname, '..', 'descriptors', 'sessiond.binpb')));
  const registry = createFileRegistry(set);
  for (const [name, fields] of Object.entries({ ...READ_FIELDS, ...WRITTEN_FIELDS })) {
    const message = registry.getMessage(name);
    if (!message) return t.fail(`${name} is not in the descriptor set`);
    const all = message.fields.map((f) => f.number).sort((a, b) => a - b);
    // The request's single form (1-3) goes to the generated encoder on purpose.
    const expected = name === 'sessions.v1.ValidateSessionStreamRequest' ? all.filter((n) => n > 3) : all;
    t.deepEqual([...fields], expected, name);
  }
});

const SHAPES: [string, ValidateSessionStreamResponse][] = [
  ['empty message', response()],
  ['a batch of valid answers', response({ answers: [answer(), answer({ correlationId: 8 }), answer({ correlationId: 2 ** 40 })] })],
  ['invalid answers, each reason', response({
    answers: [InvalidReason.INVALID_REASON_NOT_FOUND, InvalidReason.INVALID_REASON_EXPIRED, InvalidReason.INVALID_REASON_IDLE_TIMEOUT,
      InvalidReason.INVALID_REASON_REVOKED].map((reason, i) => answer({ correlationId: i + 1, valid: false, session: undefined, reason })),
  })],
  ['error answers', response({ answers: [answer({ valid: false, session: undefined, errorCode: 3, errorMessage: 'token is required' })] })],
  ['the single form, valid', response({ correlationId: 42, valid: true, session: session() })],
  ['the single form, an error', response({ correlationId: 1, errorCode: 14, errorMessage: 'storage is unavailable: disk I/O error' })],
  ['a session with no optional fields', response({ answers: [answer({ session: { ...session(), attributes: {}, ip: '', userAgent: '', etag: '',
    createTime: undefined, updateTime: undefined, expireTime: undefined, idleExpireTime: undefined, lastActiveTime: undefined,
    idleTimeout: undefined, tokenRotateTime: undefined } })] })],
  ['zero times and sub-millisecond nanos', response({ answers: [answer({ session: session({
    createTime: new Date(0), expireTime: new Date(8.64e15), idleTimeout: { seconds: 0, nanos: 999_999_999 } }) })] })],
  ['non-ASCII, odd keys, empty key and value, a leading U+FEFF', response({ answers: [answer({ session: session({
    subject: 'Zoë 日本 🎉', etag: '\uFEFF"1"', userAgent: 'Ünïcödé/1.0', attributes: { 'clé': 'valeur ✓', emoji: '👩‍💻', '': 'empty key', b: '', 10: 'ten' } }) })] })],
  ['long values (multi-byte lengths)', response({ answers: [answer({ session: session({ userAgent: 'x'.repeat(300), attributes: { big: 'y'.repeat(20_000) } }) })] })],
];

for (const [name, r] of SHAPES) {
  test(`decodes what the generated decoder decodes: ${name}`, (t) => {
    const b = encoded(r);
    t.is(agree(t, b, name), 'decoded');
    t.deepEqual(fastPathOnly(() => decodeStreamResponse(b)), r, 'the fast path alone decodes it, and it is the message encoded');
  });
}

test('decodes the server\'s own batch encoding as the generated decoder does', (t) => {
  const rec: SessionRecord = {
    id: 'AAAAAAAAAAAAAAAAAAAAAA', serverId: 'web-1', subject: 'user-1', attributes: { role: 'member' }, ip: '203.0.113.9', userAgent: 'Mozilla/5.0',
    createTime: 1_764_000_000_123, updateTime: 1_764_000_001_000, expireTime: 1_764_086_400_123, idleExpireTime: 1_764_003_600_999,
    lastActiveTime: 1_764_000_000_001, idleTimeoutMs: 3_600_000, tokenRotateTime: 1_764_000_000_123, revokeTime: null, version: 3,
  };
  const answers = [
    encodeStreamAnswer(1, { valid: true, session: rec }),
    encodeStreamAnswer(2, { valid: false, reason: 'revoked' }),
    encodeStreamAnswer(3, { valid: true, session: { ...rec, attributes: {}, ip: '' } }),
  ];
  if (answers.some((a) => a === undefined)) return t.fail('the server\'s encoder took its fallback');
  const bytes = encodeStreamAnswers(answers as Buffer[]);
  t.is(agree(t, bytes, 'server batch'), 'decoded');
  const out = fastPathOnly(() => decodeStreamResponse(bytes));
  if (out === 'fell back') return t.fail('the server\'s batch took the fallback');
  t.deepEqual(out.answers.map((a) => [a.correlationId, a.valid, a.reason]), [[1, true, 0], [2, false, InvalidReason.INVALID_REASON_REVOKED], [3, true, 0]]);
  t.deepEqual(out.answers[0]!.session!.createTime, new Date(rec.createTime));
});

/** Fields of every wire type with numbers no message here uses. */
function unknownFields(w: BinaryWriter): BinaryWriter {
  return w.uint32((900 << 3) | 0).uint64(123456789012345n)
    .uint32((901 << 3) | 1).fixed64(42n)
    .uint32((902 << 3) | 2).bytes(new Uint8Array([1, 2, 3]))
    .uint32((903 << 3) | 5).fixed32(7);
}

test('skips unknown fields at every level, as the generated decoder does', (t) => {
  const time = () => unknownFields(new BinaryWriter().uint32(8).int64(1_764_000_000).uint32(16).int32(5_000_000)).finish();
  const entry = unknownFields(new BinaryWriter().uint32(10).string('k').uint32(18).string('v')).finish();
  const sess = unknownFields(new BinaryWriter()
    .uint32(10).string('id-1')
    .uint32(34).bytes(entry)
    .uint32(58).bytes(time())
    .uint32(98).bytes(unknownFields(new BinaryWriter().uint32(8).int64(60)).finish())
    .uint32(106).bytes(time())).finish();
  const ans = unknownFields(new BinaryWriter().uint32(8).uint64(5).uint32(16).bool(true).uint32(26).bytes(sess)).finish();
  const msg = Buffer.from(unknownFields(new BinaryWriter().uint32(58).bytes(ans).uint32(58).bytes(ans)).finish());
  t.is(agree(t, msg, 'unknown fields'), 'decoded');
  const out = fastPathOnly(() => decodeStreamResponse(msg));
  if (out === 'fell back') return t.fail('unknown fields took the fallback');
  t.is(out.answers.length, 2);
  t.deepEqual(out.answers[0]!.session!.attributes, { k: 'v' });
  t.deepEqual(out.answers[0]!.session!.createTime, new Date(1_764_000_000_005));
});

test('what the fast path leaves to the generated decoder comes out the same, answer or error', (t) => {
  const withSession = (build: (w: BinaryWriter) => BinaryWriter) =>
    Buffer.from(new BinaryWriter().uint32(58).bytes(new BinaryWriter().uint32(8).uint64(1).uint32(26).bytes(build(new BinaryWriter()).finish()).finish()).finish());
  const cases: [string, Buffer, 'decoded' | 'threw'][] = [
    ['a time before 1970', withSession((w) => w.uint32(58).bytes(new BinaryWriter().uint32(8).int64(-5).finish())), 'decoded'],
    ['negative nanos', withSession((w) => w.uint32(58).bytes(new BinaryWriter().uint32(16).int32(-1).finish())), 'decoded'],
    ['"__proto__" as an attribute key', withSession((w) => w.uint32(34).bytes(new BinaryWriter().uint32(10).string('__proto__').uint32(18).string('x').finish())), 'decoded'],
    ['a known field at another wire type', withSession((w) => w.uint32((1 << 3) | 0).uint32(5).uint32(18).string('web-1')), 'decoded'],
    ['a negative reason', Buffer.from(new BinaryWriter().uint32(32).int32(-3).finish()), 'decoded'],
    ['a correlation id above 2^53', Buffer.from(new BinaryWriter().uint32(8).uint64(2n ** 60n).finish()), 'threw'],
    ['a cut-off message', encoded(response({ answers: [answer()] })).subarray(0, 40), 'threw'],
    ['a length past the end', Buffer.from([58, 100, 8, 1]), 'threw'],
    ['a group', Buffer.from([(900 << 3 | 3) & 0x7f | 0x80, (900 << 3 | 3) >> 7, (900 << 3 | 4) & 0x7f | 0x80, (900 << 3 | 4) >> 7]), 'decoded'],
  ];
  for (const [label, b, outcome] of cases) {
    t.is(agree(t, b, label), outcome, label);
    t.is(fastPathOnly(() => decodeStreamResponse(b)), 'fell back', `${label}: left to the generated decoder`);
  }
});

/** A small deterministic generator, so that a failure names the seed that reproduces it. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

test('damaged messages: both decoders give the same answer or the same error (3000 seeded mutations)', (t) => {
  const base = [
    encoded(SHAPES[1]![1]), encoded(SHAPES[4]![1]), encoded(SHAPES[8]![1]), encoded(SHAPES[2]![1]),
  ];
  const counts = { decoded: 0, threw: 0, fast: 0 };
  for (let seed = 1; seed <= 3000; seed++) {
    const rnd = prng(seed);
    const b = Buffer.from(base[seed % base.length]!);
    const edits = 1 + Math.floor(rnd() * 3);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(rnd() * b.length);
      const kind = rnd();
      if (kind < 0.6) b[at] = Math.floor(rnd() * 256);
      else if (kind < 0.8) b[at] = b[at]! ^ (1 << Math.floor(rnd() * 8));
      else b[at] = [0x00, 0x80, 0xff, 0xef, 0xbb, 0xbf, 0xc3][Math.floor(rnd() * 7)]!;
    }
    const cut = rnd() < 0.2 ? b.subarray(0, Math.floor(rnd() * b.length)) : b;
    counts[agree(t, cut, `seed ${seed}`)]++;
    try {
      if (fastPathOnly(() => decodeStreamResponse(cut)) !== 'fell back') counts.fast++;
    } catch {
      // The fast path's own errors are those of Buffer; agree() checked what callers see.
    }
  }
  // Answers, errors and the fast path were all exercised, or the test proves little.
  t.true(counts.decoded > 300 && counts.threw > 300 && counts.fast > 300, JSON.stringify(counts));
});

const item = (correlationId: number, token: string, touch = false): ValidateSessionStreamItem => ({ correlationId, token, touch });
const batch = (items: ValidateSessionStreamItem[]): ValidateSessionStreamRequest => ({ correlationId: 0, token: '', touch: false, items });

test('writes batches byte for byte as the generated encoder does', (t) => {
  const requests: [string, ValidateSessionStreamRequest][] = [
    ['one item', batch([item(1, 'tok_abc')])],
    ['touch, zero id, empty token', batch([item(0, '', true), item(2, 'x', true), item(3, '')])],
    ['non-ASCII token', batch([item(4, 'jeton-é-日本-🎉')])],
    ['large ids', batch([item(2 ** 32, 'a'), item(Number.MAX_SAFE_INTEGER, 'b')])],
    ['long token (multi-byte lengths)', batch([item(5, 't'.repeat(5000))])],
    ['256 items', batch(Array.from({ length: 256 }, (_, i) => item(i + 1, `token-${i}-${'z'.repeat(i % 50)}`, i % 3 === 0)))],
    ['the single form', { correlationId: 9, token: 'tok', touch: true, items: [] }],
    ['an empty request', batch([])],
  ];
  for (const [label, r] of requests) {
    t.deepEqual(encodeStreamRequest(r), generatedEncode(r), label);
    const batched = r.items.length > 0;
    t.is(fastPathOnly(() => encodeStreamRequest(r)) === 'fell back', !batched, `${label}: ${batched ? 'written by the fast path' : 'left to the generated encoder'}`);
    t.deepEqual(ValidateSessionStreamRequest.decode(encodeStreamRequest(r)), r, `${label}: decodes back`);
  }
  // Items are the client's pending validations: fields beyond the item's own are not written.
  const pending = { ...item(6, 'tok'), resolve() {}, reject() {} };
  t.deepEqual(encodeStreamRequest(batch([pending])), generatedEncode(batch([item(6, 'tok')])));
});
