import test from 'ava';
import { status } from '@grpc/grpc-js';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { AdminServiceService } from '../../generated/sessions/v1/admin_service';
import { CreateSessionRequest, SessionServiceService } from '../../generated/sessions/v1/session_service';
import { strictlyDecodedPaths } from '../../src/transport/request-decoding';
import { NEVER, quietServer, stillServing, StoreWatcher } from '../helpers/badweather';
import { SMALL_MESSAGES } from '../helpers/server';
import { duration, frame, lfield, mapEntry, message, RawGrpc, vfield } from '../helpers/raw-grpc';

/*
 * Hostile input, sent as raw HTTP/2 gRPC so that nothing
 * (no generated encoder, no client-side check) tidies it up first. Every case
 * names the status it must get; a rejected case must write nothing (seen
 * through a read-only connection of our own), and the server must answer a
 * valid call after each.
 */

const S = '/sessions.v1.SessionService/';
const A = '/sessions.v1.AdminService/';
const HEALTH = '/grpc.health.v1.Health/Check';

const IA = status.INVALID_ARGUMENT;
const NF = status.NOT_FOUND;
const OK = status.OK;

/** Bytes that are not UTF-8: a stray 0xff 0xfe, an overlong NUL, a UTF-16 surrogate, a cut sequence. */
const BAD_UTF8: Record<string, Buffer> = {
  'ff fe': Buffer.from([0x61, 0xff, 0xfe, 0x62]),
  'overlong NUL': Buffer.from([0x61, 0xc0, 0x80]),
  surrogate: Buffer.from([0xed, 0xa0, 0x80]),
  'cut sequence': Buffer.from([0x61, 0xe2, 0x82]),
};
const HUGE = 'x'.repeat(40_000); // over every field limit, under the 64 KiB message limit set below
const NUL = 'a\0b';
const ID22 = 'AAAAAAAAAAAAAAAAAAAAAA';

interface Case {
  name: string;
  path: string;
  body: Buffer | Buffer[];
  headers?: Record<string, string>;
  want: number[];
  /** Answered by grpc-js itself, before any of our code runs. */
  grpcJs?: boolean;
}

/** Every string field of every request: empty, huge, NUL bytes, invalid UTF-8. */
function stringFieldCases(): Case[] {
  const cases: Case[] = [];
  const add = (name: string, path: string, want: Record<'empty' | 'huge' | 'nul' | 'utf8', number[]>, build: (v: string | Buffer) => Buffer) => {
    cases.push({ name: `${name}: empty`, path, body: frame(build('')), want: want.empty });
    cases.push({ name: `${name}: huge`, path, body: frame(build(HUGE)), want: want.huge });
    cases.push({ name: `${name}: NUL`, path, body: frame(build(NUL)), want: want.nul });
    for (const [label, bytes] of Object.entries(BAD_UTF8)) {
      cases.push({ name: `${name}: invalid UTF-8 (${label})`, path, body: frame(build(bytes)), want: want.utf8 });
    }
  };
  const createWith = (field: number) => (v: string | Buffer) => message(field === 1 ? Buffer.alloc(0) : lfield(1, 'web-1'), lfield(field, v));
  add('CreateSession.server_id', `${S}CreateSession`, { empty: [IA], huge: [IA], nul: [IA], utf8: [IA] }, createWith(1));
  add('CreateSession.subject', `${S}CreateSession`, { empty: [OK], huge: [IA], nul: [IA], utf8: [IA] }, createWith(2));
  add('CreateSession.ip', `${S}CreateSession`, { empty: [OK], huge: [IA], nul: [IA], utf8: [IA] }, createWith(4));
  add('CreateSession.user_agent', `${S}CreateSession`, { empty: [OK], huge: [IA], nul: [IA], utf8: [IA] }, createWith(5));
  add('CreateSession.request_id', `${S}CreateSession`, { empty: [OK], huge: [IA], nul: [IA], utf8: [IA] }, createWith(8));
  add('CreateSession.attributes key', `${S}CreateSession`, { empty: [IA], huge: [IA], nul: [IA], utf8: [IA] },
    (v) => message(lfield(1, 'web-1'), mapEntry(3, v, 'value')));
  add('CreateSession.attributes value', `${S}CreateSession`, { empty: [OK], huge: [IA], nul: [IA], utf8: [IA] },
    (v) => message(lfield(1, 'web-1'), mapEntry(3, 'key', v)));
  for (const rpc of ['GetSession', 'TouchSession', 'RotateSessionToken', 'DeleteSession', 'UpdateSession']) {
    add(`${rpc}.id`, `${S}${rpc}`, { empty: [IA], huge: [IA], nul: [IA], utf8: [IA] }, (v) => lfield(1, v));
  }
  // An unknown token is a normal answer (valid=false), even one with a NUL in it.
  add('ValidateSession.token', `${S}ValidateSession`, { empty: [IA], huge: [IA], nul: [OK], utf8: [IA] }, (v) => lfield(1, v));
  // A stale (or absurd) etag is FAILED_PRECONDITION: the etag is compared, never stored.
  add('UpdateSession.etag', `${S}UpdateSession`, { empty: [NF], huge: [status.FAILED_PRECONDITION, NF], nul: [status.FAILED_PRECONDITION, NF], utf8: [IA] },
    (v) => message(lfield(1, ID22), lfield(5, v)));
  add('UpdateSession.attributes value', `${S}UpdateSession`, { empty: [NF], huge: [IA], nul: [IA], utf8: [IA] },
    (v) => message(lfield(1, ID22), mapEntry(2, 'k', v)));
  add('UpdateSession.remove_attributes', `${S}UpdateSession`, { empty: [NF], huge: [IA], nul: [IA], utf8: [IA] },
    (v) => message(lfield(1, ID22), vfield(3, 1), lfield(4, v)));
  for (const [field, name] of [[1, 'server_id'], [2, 'subject']] as const) {
    add(`ListSessions.${name}`, `${S}ListSessions`, { empty: [OK], huge: [IA], nul: [IA], utf8: [IA] }, (v) => lfield(field, v));
    add(`RevokeSessions.${name}`, `${S}RevokeSessions`, { empty: [IA], huge: [IA], nul: [IA], utf8: [IA] }, (v) => lfield(field, v));
  }
  add('ListSessions.page_token', `${S}ListSessions`, { empty: [OK], huge: [IA], nul: [IA], utf8: [IA] }, (v) => lfield(4, v));
  // Health: "" is the whole server; an unknown service name is NOT_FOUND.
  add('Health.Check.service', HEALTH, { empty: [OK], huge: [NF], nul: [NF], utf8: [NF, IA] }, (v) => lfield(1, v));
  return cases;
}

function durationCases(): Case[] {
  const cases: Case[] = [];
  const bad: [string, Buffer][] = [
    ['negative seconds', duration(-60)],
    ['negative nanos', duration(0, -500_000_000)],
    ['mixed signs (+s, -ns)', duration(5, -1)],
    ['mixed signs (-s, +ns)', duration(-5, 1)],
    ['nanos over 999,999,999', duration(1, 1_000_000_000)],
    ['nanos at int32 max', duration(0, 2_147_483_647)],
    ['seconds beyond the Duration range', duration(315_576_000_001n)],
    ['seconds beyond 2^53 (ts-proto refuses to decode it)', duration(2n ** 60n)],
    ['seconds at int64 max', duration(2n ** 63n - 1n)],
    ['seconds at int64 min', duration(-(2n ** 63n))],
    ['one nanosecond (under 1 ms)', duration(0, 1)],
    ['over the server maximum (31 days)', duration(31 * 86_400)],
    ['an 11-byte varint', Buffer.concat([Buffer.from([0x08]), Buffer.alloc(10, 0xff), Buffer.from([0x01])])],
  ];
  for (const [field, name] of [[6, 'ttl'], [7, 'idle_timeout']] as const) {
    for (const [label, d] of bad) {
      cases.push({ name: `CreateSession.${name}: ${label}`, path: `${S}CreateSession`, body: frame(message(lfield(1, 'web-1'), lfield(field, d))), want: [IA] });
    }
  }
  return cases;
}

function enumAndNumberCases(): Case[] {
  const c: Case[] = [];
  for (const mode of [5, 99, -1, 2_147_483_647, -2_147_483_648]) {
    c.push({ name: `Checkpoint.mode ${mode} (unknown enum number)`, path: `${A}Checkpoint`, body: frame(vfield(1, mode)), want: [IA] });
  }
  for (const size of [-1, 1001, 2_147_483_647, -2_147_483_648]) {
    c.push({ name: `ListSessions.page_size ${size}`, path: `${S}ListSessions`, body: frame(vfield(3, size)), want: [IA] });
  }
  for (const size of [-1, 10_001, 2_147_483_647]) {
    c.push({ name: `PurgeExpiredSessions.batch_size ${size}`, path: `${A}PurgeExpiredSessions`, body: frame(vfield(1, size)), want: [IA] });
  }
  return c;
}

/** Page tokens: forged, edited, or issued for other filters. */
function pageTokenCases(tokenForA: string): Case[] {
  const list = (filterFields: Buffer, token: string) => frame(message(filterFields, vfield(3, 1), lfield(4, token)));
  const a = lfield(1, 'srv-a');
  const flipped = tokenForA.slice(0, 5) + (tokenForA[5] === 'A' ? 'B' : 'A') + tokenForA.slice(6);
  return [
    { name: 'page_token: random base64url', path: `${S}ListSessions`, body: list(a, Buffer.from('not a token at all').toString('base64url')), want: [IA] },
    { name: 'page_token: one character edited', path: `${S}ListSessions`, body: list(a, flipped), want: [IA] },
    { name: 'page_token: truncated', path: `${S}ListSessions`, body: list(a, tokenForA.slice(0, -3)), want: [IA] },
    { name: 'page_token: not base64url', path: `${S}ListSessions`, body: list(a, 'p1.1.abc.def'), want: [IA] },
    { name: 'page_token: from another server_id', path: `${S}ListSessions`, body: list(lfield(1, 'srv-b'), tokenForA), want: [IA] },
    { name: 'page_token: with an added subject filter', path: `${S}ListSessions`, body: list(message(a, lfield(2, 'alice')), tokenForA), want: [IA] },
    { name: 'page_token: with no filter at all', path: `${S}ListSessions`, body: list(Buffer.alloc(0), tokenForA), want: [IA] },
  ];
}

/** Framing: garbage, truncation, compression flags, sizes, several messages. */
function framingCases(): Case[] {
  const valid = Buffer.from(CreateSessionRequest.encode(CreateSessionRequest.fromPartial({ serverId: 'web-framing' })).finish());
  const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34, 0x0b, 0xad]);
  return [
    { name: 'garbage bytes in a valid frame (CreateSession)', path: `${S}CreateSession`, body: frame(garbage), want: [IA] },
    { name: 'garbage bytes in a valid frame (ValidateSession)', path: `${S}ValidateSession`, body: frame(garbage), want: [IA] },
    { name: 'garbage bytes in a valid frame (Checkpoint)', path: `${A}Checkpoint`, body: frame(garbage), want: [IA] },
    { name: 'garbage bytes in a valid frame (Health.Check)', path: HEALTH, body: frame(garbage), want: [IA] },
    { name: 'wire type 7 (does not exist)', path: `${S}GetSession`, body: frame(Buffer.from([0x0f, 0x01])), want: [IA] },
    { name: 'field number 0', path: `${S}CreateSession`, body: frame(message(lfield(1, 'web-1'), Buffer.from([0x00, 0x01]))), want: [IA] },
    { name: 'a stray end-group tag', path: `${S}CreateSession`, body: frame(message(lfield(1, 'web-1'), Buffer.from([0x0c]))), want: [IA] },
    { name: 'a string longer than the message', path: `${S}CreateSession`, body: frame(Buffer.from([0x0a, 0x7f, 0x61])), want: [IA] },
    { name: 'a nested Duration longer than the message', path: `${S}CreateSession`, body: frame(message(lfield(1, 'web-1'), Buffer.from([0x32, 0x10, 0x08]))), want: [IA] },
    { name: 'truncated frame: length prefix beyond the data, then END_STREAM', path: `${S}CreateSession`, body: frame(valid, { declaredLength: valid.length + 100 }), want: [IA] },
    { name: 'truncated frame: half a prefix', path: `${S}CreateSession`, body: frame(valid).subarray(0, 3), want: [IA] },
    { name: 'no message at all (END_STREAM at once)', path: `${S}CreateSession`, body: Buffer.alloc(0), want: [IA] },
    { name: 'truncated protobuf inside a whole frame', path: `${S}CreateSession`, body: frame(valid.subarray(0, valid.length - 2)), want: [IA] },
    { name: 'two messages on a unary call', path: `${S}CreateSession`, body: [frame(valid), frame(valid)], want: [IA] },
    { name: 'compressed flag without grpc-encoding: a gzip payload', path: `${S}CreateSession`, body: frame(gzipSync(valid), { compressed: true }), want: [IA] },
    { name: 'compressed flag without grpc-encoding: garbage', path: `${S}CreateSession`, body: frame(garbage, { compressed: true }), want: [IA] },
    // The one INTERNAL left: grpc-js inflates before any code of ours runs, and
    // answers a stream that does not inflate itself ("Failed to decompress message").
    { name: 'compressed flag with grpc-encoding gzip: bytes that do not inflate', path: `${S}CreateSession`, body: frame(garbage, { compressed: true }), headers: { 'grpc-encoding': 'gzip' }, want: [status.INTERNAL], grpcJs: true },
    { name: 'compressed flag with an unsupported grpc-encoding', path: `${S}CreateSession`, body: frame(valid, { compressed: true }), headers: { 'grpc-encoding': 'br' }, want: [status.UNIMPLEMENTED] },
    { name: 'message over --max-message-bytes', path: `${S}CreateSession`, body: frame(message(lfield(1, 'web-1'), lfield(2, 'y'.repeat(70 * 1024)))), want: [status.RESOURCE_EXHAUSTED] },
    { name: 'length prefix claiming 4 GiB', path: `${S}CreateSession`, body: frame(valid, { declaredLength: 0xffffffff }), want: [status.RESOURCE_EXHAUSTED] },
    { name: 'gzip bomb over --max-message-bytes', path: `${S}CreateSession`, body: frame(gzipSync(message(lfield(1, 'web-1'), lfield(2, 'z'.repeat(1024 * 1024)))), { compressed: true }), headers: { 'grpc-encoding': 'gzip' }, want: [status.RESOURCE_EXHAUSTED] },
  ];
}

test('every hostile request gets its status, rejected ones write nothing, and the server keeps serving', async (t) => {
  const s = await quietServer({ ...SMALL_MESSAGES });
  t.teardown(() => s.close());
  const known = await s.client.createSession({ serverId: 'srv-a', subject: 'known' });
  const knownId = known.session!.id;
  await s.client.createSession({ serverId: 'srv-a', subject: 'other' });
  const page = await s.client.listSessions({ serverId: 'srv-a', pageSize: 1 });
  t.not(page.nextPageToken, '');
  const watcher = new StoreWatcher(s.dbPath);
  t.teardown(() => watcher.close());
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());

  const cases = [...framingCases(), ...stringFieldCases(), ...durationCases(), ...enumAndNumberCases(), ...pageTokenCases(page.nextPageToken)];
  t.true(cases.length > 150, `${cases.length} cases`);
  // Every case runs, and the failure lists them all.
  const problems: string[] = [];
  for (const c of cases) {
    const before = watcher.fingerprint();
    const versionBefore = watcher.dataVersion();
    const answer = await raw.call(c.path, c.body, c.headers);
    const got = `${status[answer.code] ?? answer.code} "${answer.details}"`;
    if (!c.grpcJs && NEVER.has(answer.code)) problems.push(`${c.name}: got ${got}`);
    else if (!c.want.includes(answer.code)) problems.push(`${c.name}: want ${c.want.map((w) => status[w]).join('|')}, got ${got}`);
    if (answer.code !== OK) {
      if (watcher.fingerprint() !== before || watcher.dataVersion() !== versionBefore) problems.push(`${c.name}: rejected, yet something was written`);
      if (/at .*\.ts:\d+|SQLITE_|Error:/.test(answer.details)) problems.push(`${c.name}: internals in "${answer.details}"`);
    }
    await stillServing(t, s, knownId, c.name);
  }
  t.deepEqual(problems, []);
});

test('invalid UTF-8 is refused, and the message says so; a real U+FFFD is accepted as text', async (t) => {
  const s = await quietServer();
  t.teardown(() => s.close());
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());
  const bad = await raw.call(`${S}CreateSession`, frame(message(lfield(1, 'web-1'), lfield(2, Buffer.from([0x61, 0xff, 0xfe])))));
  t.is(bad.code, IA);
  t.regex(bad.details, /CreateSession request message: a string field is not valid UTF-8/);
  // The replacement character itself is valid UTF-8 (ef bf bd): stored and returned as sent.
  const ok = await s.client.createSession({ serverId: 'web-1', subject: 'a\uFFFDb' });
  t.is(ok.session?.subject, 'a\uFFFDb');
});

test('durations at the edges: 1 ms and the maximum are accepted, with nanos carried into milliseconds', async (t) => {
  const s = await quietServer();
  t.teardown(() => s.close());
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());
  for (const d of [duration(0, 1_000_000), duration(30 * 86_400), duration(59, 999_999_999)]) {
    const r = await raw.call(`${S}CreateSession`, frame(message(lfield(1, 'web-1'), lfield(6, d))));
    t.is(r.code, OK, r.details);
  }
});

test('unknown fields of every wire type are ignored (proto3); the known ones still count', async (t) => {
  const s = await quietServer();
  t.teardown(() => s.close());
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());
  const watcher = new StoreWatcher(s.dbPath);
  t.teardown(() => watcher.close());
  const unknown = message(
    vfield(99, 12345),
    lfield(100, Buffer.from([0xff, 0xfe, 0x00])), // not a string to us: opaque bytes, even invalid UTF-8
    Buffer.from([0xa5, 0x06, 1, 2, 3, 4]), // field 100, fixed32
    Buffer.from([0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]), // field 100, fixed64
    Buffer.from([0xab, 0x06, 0x08, 0x01, 0xac, 0x06]), // field 101 as a group (start, a varint, end)
  );
  const created = await raw.call(`${S}CreateSession`, frame(message(unknown, lfield(1, 'web-unknown'), unknown, lfield(2, 'carol'))));
  t.is(created.code, OK, created.details);
  t.is(watcher.count('server_id = ? AND subject = ?', 'web-unknown', 'carol'), 1);
  const get = await raw.call(`${S}GetSession`, frame(message(unknown, lfield(1, ID22))));
  t.is(get.code, NF, 'the id is read past the unknown fields');
  const checkpoint = await raw.call(`${A}Checkpoint`, frame(message(unknown, vfield(1, 1))));
  t.is(checkpoint.code, OK, checkpoint.details);
});

test('a page token with a recomputed checksum only moves the cursor: tokens carry no secret and grant nothing', async (t) => {
  const s = await quietServer();
  t.teardown(() => s.close());
  for (let i = 0; i < 3; i++) await s.client.createSession({ serverId: 'srv-a' });
  const tag = createHash('sha256').update('srv-a\0').digest('base64url').slice(0, 11);
  const body = `p1.${(2).toString(36)}.${tag}`;
  const forged = Buffer.from(`${body}.${createHash('sha256').update(body).digest('base64url').slice(0, 6)}`).toString('base64url');
  const page = await s.client.listSessions({ serverId: 'srv-a', pageToken: forged });
  t.is(page.sessions.length, 1, 'the third session only: the cursor skipped two, within the same filter');
  t.true(page.sessions.every((x) => x.serverId === 'srv-a'));
});

test('a malformed message on ValidateSessionStream ends that stream with INVALID_ARGUMENT; other streams go on', async (t) => {
  const s = await quietServer();
  t.teardown(() => s.close());
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());
  const answer = await raw.call(`${S}ValidateSessionStream`, [frame(message(vfield(1, 7), lfield(2, 'unknown-token'))), frame(Buffer.from([0x0f]))]);
  t.is(answer.code, IA, answer.details);
  const validator = s.client.openValidator();
  t.teardown(() => validator.close());
  const r = await validator.validate('still-unknown');
  t.false(r.valid);
  // correlation_id is a uint64, held as a JS number by the generated code: up to 2^53 - 1 works, beyond is refused.
  const edge = await raw.call(`${S}ValidateSessionStream`, frame(message(vfield(1, 2n ** 53n - 1n), lfield(2, 'x'))));
  t.is(edge.code, OK, edge.details);
  t.is(edge.messages.length, 1);
  const beyond = await raw.call(`${S}ValidateSessionStream`, frame(message(vfield(1, 2n ** 53n), lfield(2, 'x'))));
  t.is(beyond.code, IA);
  t.regex(beyond.details, /MAX_SAFE_INTEGER/);
});

test('every RPC of ours is decoded strictly (a new RPC must be added to request-decoding.ts)', (t) => {
  const ours = [...Object.values(SessionServiceService), ...Object.values(AdminServiceService)].map((m) => m.path).sort();
  t.deepEqual(strictlyDecodedPaths().sort(), ours);
});
