import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from './helpers/server';
import { rejectsWithCode } from './helpers/grpc';
import { InvalidReason } from '../generated/sessions/v1/session_service';
import type { Session } from '../src/client/client';

/*
 * End-to-end SessionService: every RPC's success path and every error status
 * the contract (API.md, proto comments) names, through the generated client
 * against a real server over a real SQLite file.
 */

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

/** Limits stated in the proto comments (server defaults). */
const MAX_ID_BYTES = 256;
const MAX_USER_AGENT_BYTES = 1024;
const MAX_ATTRIBUTES = 64;
const MAX_KEY_BYTES = 256;
const MAX_VALUE_BYTES = 4096;
const MAX_TTL_MS = 30 * DAY;

const ms = (d: Date | undefined): number => {
  if (!d) throw new Error('timestamp unset');
  return d.getTime();
};

async function server(t: ExecutionContext, env?: Record<string, string>): Promise<TestServer> {
  const s = await startTestServer({ env });
  t.teardown(() => s.close());
  return s;
}

/** Every live session as ListSessions returns it (one page is enough for these tests). */
async function snapshot(s: TestServer): Promise<Session[]> {
  const page = await s.client.listSessions({ pageSize: 1000 });
  t_assert(page.nextPageToken === '', 'snapshot expects a single page');
  return page.sessions;
}

function t_assert(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Asserts the code and that the message names `field`; labels every assertion with the case. */
async function expectStatus(t: ExecutionContext, label: string, p: Promise<unknown>, code: status, field: RegExp): Promise<void> {
  let err: ServiceError | undefined;
  try {
    await p;
  } catch (e) {
    err = e as ServiceError;
  }
  if (!err) {
    t.fail(`${label}: expected ${status[code]}, but the call succeeded`);
    return;
  }
  t.is(err.code, code, `${label}: expected ${status[code]}, got ${status[err.code]}: ${err.details}`);
  t.regex(err.details, field, `${label}: the message does not name the field: ${err.details}`);
}

/** After an error: the server still serves, and what was stored is unchanged. */
async function stillServingUnchanged(t: ExecutionContext, s: TestServer, label: string, before: Session[], probeToken: string) {
  const v = await s.client.validateSession(probeToken);
  t.true(v.valid, `${label}: a valid call after the error failed`);
  t.deepEqual(await snapshot(s), before, `${label}: stored sessions changed after a rejected call`);
}

function fullCreate(overrides: Record<string, unknown> = {}) {
  return {
    serverId: 'web-1',
    subject: 'alice',
    attributes: { role: 'admin', theme: 'dark' },
    ip: '203.0.113.7',
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64)',
    ttl: { seconds: 2 * 3600, nanos: 0 },
    idleTimeout: { seconds: 15 * 60, nanos: 500_000_000 },
    ...overrides,
  };
}

// ---------------------------------------------------------------- success paths

test('CreateSession with every field returns the session and a strong token', async (t) => {
  const s = await server(t);
  const now = s.clock.now();
  const res = await s.client.createSession(fullCreate());
  const ses = res.session!;
  t.truthy(ses);
  t.is(ses.serverId, 'web-1');
  t.is(ses.subject, 'alice');
  t.deepEqual(ses.attributes, { role: 'admin', theme: 'dark' });
  t.is(ses.ip, '203.0.113.7');
  t.is(ses.userAgent, 'Mozilla/5.0 (X11; Linux x86_64)');
  t.is(ms(ses.createTime), now);
  t.is(ms(ses.updateTime), now);
  t.is(ms(ses.tokenRotateTime), now);
  t.is(ms(ses.lastActiveTime), now);
  t.is(ms(ses.expireTime), now + 2 * HOUR);
  t.is(ms(ses.idleExpireTime), now + 15 * MIN + 500);
  t.deepEqual(ses.idleTimeout, { seconds: 15 * 60, nanos: 500_000_000 });
  t.true(ses.etag.length > 0);
  // Id: URL-safe, not the token.
  t.regex(ses.id, /^[A-Za-z0-9_-]+$/);
  // Token: >= 128 bits from a CSPRNG, base64url: at least 43 characters (256 bits).
  t.regex(res.token, /^[A-Za-z0-9_-]{43,}$/);
  t.true(Buffer.from(res.token, 'base64url').length >= 16);
  t.not(res.token, ses.id);
  t.false(res.token.includes(ses.id), 'the token must not embed the id');
  t.false(ses.id.includes(res.token.slice(0, 16)), 'the id must not embed the token');
  // The server never logs the token.
  t.false(JSON.stringify(s.logs).includes(res.token), 'the token appears in the server log');
});

test('tokens and ids are distinct across sessions', async (t) => {
  const s = await server(t);
  const created = await Promise.all(Array.from({ length: 50 }, () => s.client.createSession({ serverId: 'web-1' })));
  const tokens = new Set(created.map((c) => c.token));
  const ids = new Set(created.map((c) => c.session!.id));
  t.is(tokens.size, 50);
  t.is(ids.size, 50);
  for (const id of ids) t.false(tokens.has(id));
});

test('CreateSession with only server_id: anonymous session with empty optional fields', async (t) => {
  const s = await server(t);
  const res = await s.client.createSession({ serverId: 'api' });
  t.is(res.session!.subject, '');
  t.deepEqual(res.session!.attributes, {});
  t.is(res.session!.ip, '');
  t.is(res.session!.userAgent, '');
});

test('CreateSession accepts limits exactly at the boundary, IPv6 and multi-byte strings', async (t) => {
  const s = await server(t);
  const attributes: Record<string, string> = {};
  for (let i = 0; i < MAX_ATTRIBUTES - 1; i++) attributes[`k${i}`] = 'v';
  attributes['k'.repeat(MAX_KEY_BYTES)] = 'v'.repeat(MAX_VALUE_BYTES);
  const res = await s.client.createSession({
    serverId: 's'.repeat(MAX_ID_BYTES),
    subject: 'é'.repeat(MAX_ID_BYTES / 2), // 2 bytes each: exactly the limit
    userAgent: 'u'.repeat(MAX_USER_AGENT_BYTES),
    ip: '2001:db8::1',
    attributes,
    ttl: { seconds: MAX_TTL_MS / 1000, nanos: 0 },
    idleTimeout: { seconds: MAX_TTL_MS / 1000, nanos: 0 },
  });
  const got = await s.client.getSession(res.session!.id);
  t.is(Object.keys(got.session!.attributes).length, MAX_ATTRIBUTES);
  t.is(got.session!.subject, 'é'.repeat(MAX_ID_BYTES / 2));
  t.is(got.session!.ip, '2001:db8::1');
  t.is(ms(got.session!.expireTime), s.clock.now() + MAX_TTL_MS);
});

test('GetSession returns the stored session without its token', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession(fullCreate());
  const got = await s.client.getSession(created.session!.id);
  t.deepEqual(got.session, created.session);
  t.false(JSON.stringify(got).includes(created.token));
});

test('ValidateSession without touch resolves the token and writes nothing', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession(fullCreate());
  s.clock.advance(5 * MIN);
  const v = await s.client.validateSession(created.token, false);
  t.true(v.valid);
  t.is(v.reason, InvalidReason.INVALID_REASON_UNSPECIFIED);
  t.deepEqual(v.session, created.session);
  const got = await s.client.getSession(created.session!.id);
  t.deepEqual(got.session, created.session, 'validate without touch changed the stored session');
});

test('ValidateSession with touch slides the idle expiry', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession(fullCreate());
  s.clock.advance(5 * MIN);
  const now = s.clock.now();
  const v = await s.client.validateSession(created.token, true);
  t.true(v.valid);
  t.is(v.session!.id, created.session!.id);
  t.is(ms(v.session!.idleExpireTime), now + 15 * MIN + 500);
  t.is(ms(v.session!.lastActiveTime), now);
  const got = await s.client.getSession(created.session!.id);
  t.is(ms(got.session!.idleExpireTime), now + 15 * MIN + 500);
  t.is(got.session!.etag, created.session!.etag, 'a touch must not change the etag');
});

test('TouchSession extends the idle expiry from now', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession(fullCreate({ idleTimeout: { seconds: 600, nanos: 0 } }));
  s.clock.advance(3 * MIN);
  const now = s.clock.now();
  const touched = await s.client.touchSession(created.session!.id);
  t.is(ms(touched.session!.idleExpireTime), now + 10 * MIN);
  t.is(ms(touched.session!.lastActiveTime), now);
  t.is(ms(touched.session!.expireTime), ms(created.session!.expireTime));
  t.deepEqual((await s.client.getSession(created.session!.id)).session, touched.session);
  t.false(JSON.stringify(touched).includes(created.token));
});

test('UpdateSession replace, merge, merge+remove, with the right etag and with an empty etag', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession(fullCreate({ attributes: { a: '1', b: '2' } }));
  const id = created.session!.id;

  s.clock.advance(1000);
  const replaced = await s.client.updateSession({ id, attributes: { c: '3' }, etag: created.session!.etag });
  t.deepEqual(replaced.session!.attributes, { c: '3' });
  t.not(replaced.session!.etag, created.session!.etag);
  t.is(ms(replaced.session!.updateTime), s.clock.now());
  t.is(ms(replaced.session!.createTime), ms(created.session!.createTime));

  s.clock.advance(1000);
  const merged = await s.client.updateSession({ id, attributes: { d: '4', c: '33' }, merge: true, etag: replaced.session!.etag });
  t.deepEqual(merged.session!.attributes, { c: '33', d: '4' });
  t.not(merged.session!.etag, replaced.session!.etag);

  const removed = await s.client.updateSession({ id, attributes: { e: '5' }, merge: true, removeAttributes: ['c', 'missing'], etag: merged.session!.etag });
  t.deepEqual(removed.session!.attributes, { d: '4', e: '5' });

  // Empty etag: unconditional.
  const unconditional = await s.client.updateSession({ id, attributes: { z: '26' }, etag: '' });
  t.deepEqual(unconditional.session!.attributes, { z: '26' });
  const etags = [created, replaced, merged, removed, unconditional].map((r) => r.session!.etag);
  t.is(new Set(etags).size, etags.length, 'every update must produce a new etag');

  // Replace with nothing clears the map.
  const cleared = await s.client.updateSession({ id, attributes: {} });
  t.deepEqual(cleared.session!.attributes, {});

  const got = await s.client.getSession(id);
  t.deepEqual(got.session, cleared.session);
  t.false(JSON.stringify(cleared).includes(created.token));
  // The token still validates after updates.
  t.true((await s.client.validateSession(created.token)).valid);
});

test('RotateSessionToken issues a new token for the same id', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession(fullCreate());
  s.clock.advance(2 * MIN);
  const rotated = await s.client.rotateSessionToken(created.session!.id);
  t.is(rotated.session!.id, created.session!.id);
  t.regex(rotated.token, /^[A-Za-z0-9_-]{43,}$/);
  t.not(rotated.token, created.token);
  t.is(ms(rotated.session!.tokenRotateTime), s.clock.now());
  const oldV = await s.client.validateSession(created.token);
  t.false(oldV.valid);
  t.is(oldV.reason, InvalidReason.INVALID_REASON_NOT_FOUND);
  const newV = await s.client.validateSession(rotated.token);
  t.true(newV.valid);
  t.is(newV.session!.id, created.session!.id);
  t.false(JSON.stringify(s.logs).includes(rotated.token));
});

test('DeleteSession revokes; allow_missing succeeds on unknown and already deleted ids', async (t) => {
  const s = await server(t);
  const keep = await s.client.createSession({ serverId: 'web-1' });
  const created = await s.client.createSession(fullCreate());
  await s.client.deleteSession(created.session!.id);
  const v = await s.client.validateSession(created.token);
  t.false(v.valid);
  t.is(v.reason, InvalidReason.INVALID_REASON_REVOKED);
  t.is(v.session, undefined);
  await rejectsWithCode(t, s.client.getSession(created.session!.id), status.NOT_FOUND);
  await t.notThrowsAsync(s.client.deleteSession(created.session!.id, true));
  await t.notThrowsAsync(s.client.deleteSession(randomBytes(16).toString('base64url'), true));
  t.true((await s.client.validateSession(keep.token)).valid, 'deleting one session touched another');
});

test('ListSessions returns live sessions in creation order without tokens', async (t) => {
  const s = await server(t);
  const created = [];
  for (let i = 0; i < 5; i++) {
    created.push(await s.client.createSession({ serverId: i % 2 ? 'odd' : 'even', subject: `u${i}` }));
    s.clock.advance(10);
  }
  const all = await s.client.listSessions({});
  t.deepEqual(all.sessions.map((x) => x.id), created.map((c) => c.session!.id));
  t.is(all.nextPageToken, '');
  const json = JSON.stringify(all);
  for (const c of created) t.false(json.includes(c.token));
  const odd = await s.client.listSessions({ serverId: 'odd' });
  t.deepEqual(odd.sessions.map((x) => x.subject), ['u1', 'u3']);
  const one = await s.client.listSessions({ serverId: 'even', subject: 'u2' });
  t.deepEqual(one.sessions.map((x) => x.id), [created[2]!.session!.id]);
});

test('RevokeSessions by subject, by server, and by both', async (t) => {
  const s = await server(t);
  const mk = (serverId: string, subject: string) => s.client.createSession({ serverId, subject });
  const a1 = await mk('s1', 'alice');
  const a2 = await mk('s2', 'alice');
  const b1 = await mk('s1', 'bob');
  const b2 = await mk('s2', 'bob');
  const c3 = await mk('s3', 'carol');
  const c1 = await mk('s1', 'carol');
  const d2 = await mk('s2', 'dave');

  const bySubject = await s.client.revokeSessions({ subject: 'alice' });
  t.is(bySubject.revokedCount, 2);
  t.is((await s.client.validateSession(a1.token)).reason, InvalidReason.INVALID_REASON_REVOKED);
  t.is((await s.client.validateSession(a2.token)).reason, InvalidReason.INVALID_REASON_REVOKED);
  t.true((await s.client.validateSession(b1.token)).valid);

  const byBoth = await s.client.revokeSessions({ serverId: 's2', subject: 'bob' });
  t.is(byBoth.revokedCount, 1);
  t.false((await s.client.validateSession(b2.token)).valid);
  t.true((await s.client.validateSession(b1.token)).valid, 'bob on another server was revoked');
  t.true((await s.client.validateSession(d2.token)).valid, 'another subject on the same server was revoked');

  const byServer = await s.client.revokeSessions({ serverId: 's1' });
  t.is(byServer.revokedCount, 2, 'only the live sessions of s1 (bob, carol) count; alice@s1 was already revoked');
  t.false((await s.client.validateSession(b1.token)).valid);
  t.false((await s.client.validateSession(c1.token)).valid);
  t.true((await s.client.validateSession(c3.token)).valid);

  // Nothing left to revoke: zero, not an error.
  t.is((await s.client.revokeSessions({ serverId: 's1' })).revokedCount, 0);
  t.is((await s.client.revokeSessions({ subject: 'nobody' })).revokedCount, 0);
  const remaining = await s.client.listSessions({});
  t.deepEqual(remaining.sessions.map((x) => x.id), [c3.session!.id, d2.session!.id]);
});

// ---------------------------------------------------------------- INVALID_ARGUMENT

test('CreateSession rejects each invalid field with INVALID_ARGUMENT naming it, storing nothing', async (t) => {
  const s = await server(t);
  const probe = await s.client.createSession(fullCreate());
  const before = await snapshot(s);
  const tooMany: Record<string, string> = {};
  for (let i = 0; i <= MAX_ATTRIBUTES; i++) tooMany[`k${i}`] = 'v';
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['missing server_id', { serverId: '' }, /server_id/],
    ['oversized server_id', { serverId: 's'.repeat(MAX_ID_BYTES + 1) }, /server_id/],
    ['server_id over the limit in bytes, not characters', { serverId: 'é'.repeat(MAX_ID_BYTES / 2 + 1) }, /server_id/],
    ['oversized subject', { subject: 'u'.repeat(MAX_ID_BYTES + 1) }, /subject/],
    ['oversized user_agent', { userAgent: 'a'.repeat(MAX_USER_AGENT_BYTES + 1) }, /user_agent/],
    ['too many attributes', { attributes: tooMany }, /attributes/],
    ['oversized attribute key', { attributes: { ['k'.repeat(MAX_KEY_BYTES + 1)]: 'v' } }, /attributes/],
    ['oversized attribute value', { attributes: { k: 'v'.repeat(MAX_VALUE_BYTES + 1) } }, /attributes/],
    ['empty attribute key', { attributes: { '': 'v' } }, /attributes/],
    ['NUL in server_id', { serverId: 'web\0-1' }, /server_id/],
    ['NUL in subject', { subject: 'ali\0ce' }, /subject/],
    ['NUL in user_agent', { userAgent: 'agent\0' }, /user_agent/],
    ['NUL in attribute key', { attributes: { 'k\0': 'v' } }, /attributes/],
    ['NUL in attribute value', { attributes: { k: 'v\0' } }, /attributes/],
    ['NUL in ip', { ip: '1.2.3.4\0' }, /\bip\b/],
    ['bad ip (letters)', { ip: 'localhost' }, /\bip\b/],
    ['bad ip (octet > 255)', { ip: '256.1.1.1' }, /\bip\b/],
    ['bad ip (trailing space)', { ip: '10.0.0.1 ' }, /\bip\b/],
    ['bad ip (cidr)', { ip: '10.0.0.0/8' }, /\bip\b/],
    ['negative ttl', { ttl: { seconds: -60, nanos: 0 } }, /\bttl\b/],
    ['negative ttl (nanos only)', { ttl: { seconds: 0, nanos: -5 } }, /\bttl\b/],
    ['ttl above the max', { ttl: { seconds: MAX_TTL_MS / 1000 + 1, nanos: 0 } }, /\bttl\b/],
    ['ttl with mixed signs', { ttl: { seconds: 10, nanos: -1 } }, /\bttl\b/],
    ['ttl with nanos out of range', { ttl: { seconds: 0, nanos: 1_000_000_000 } }, /\bttl\b/],
    ['negative idle_timeout', { idleTimeout: { seconds: -1, nanos: 0 } }, /idle_timeout/],
    ['idle_timeout above the max', { idleTimeout: { seconds: MAX_TTL_MS / 1000 + 1, nanos: 0 } }, /idle_timeout/],
    ['oversized request_id', { requestId: 'r'.repeat(129) }, /request_id/],
    ['NUL in request_id', { requestId: 'req\0' }, /request_id/],
  ];
  for (const [label, overrides, field] of cases) {
    await expectStatus(t, label, s.client.createSession(fullCreate(overrides)), status.INVALID_ARGUMENT, field);
    await stillServingUnchanged(t, s, label, before, probe.token);
  }
});

test('the attribute limits follow the server configuration', async (t) => {
  const s = await server(t, { SESSIOND_MAX_ATTRIBUTES: '2', SESSIOND_MAX_ATTRIBUTE_VALUE_BYTES: '8' });
  await t.notThrowsAsync(s.client.createSession({ serverId: 'x', attributes: { a: '12345678', b: '' } }));
  await rejectsWithCode(t, s.client.createSession({ serverId: 'x', attributes: { a: '1', b: '2', c: '3' } }), status.INVALID_ARGUMENT, /attributes/);
  await rejectsWithCode(t, s.client.createSession({ serverId: 'x', attributes: { a: '123456789' } }), status.INVALID_ARGUMENT, /attributes/);
});

test('id-taking RPCs reject a malformed or empty id with INVALID_ARGUMENT naming id', async (t) => {
  const s = await server(t);
  const probe = await s.client.createSession(fullCreate());
  const before = await snapshot(s);
  const badIds: [string, string][] = [
    ['empty id', ''],
    ['short id', 'abc'],
    ['id with bad characters', '!'.repeat(22)],
    ['id too long', 'A'.repeat(23)],
    ['id with NUL', `${'A'.repeat(21)}\0`],
    ['a token used as an id', probe.token],
  ];
  for (const [label, id] of badIds) {
    const calls: [string, Promise<unknown>][] = [
      ['GetSession', s.client.getSession(id)],
      ['TouchSession', s.client.touchSession(id)],
      ['UpdateSession', s.client.updateSession({ id, attributes: { x: 'y' } })],
      ['RotateSessionToken', s.client.rotateSessionToken(id)],
      ['DeleteSession', s.client.deleteSession(id)],
      ['DeleteSession allow_missing', s.client.deleteSession(id, true)],
    ];
    for (const [rpc, p] of calls) {
      await expectStatus(t, `${rpc}: ${label}`, p, status.INVALID_ARGUMENT, /\bid\b/);
    }
    await stillServingUnchanged(t, s, label, before, probe.token);
  }
});

test('ValidateSession rejects only an empty or oversized token; unknown tokens are valid=false NOT_FOUND', async (t) => {
  const s = await server(t);
  const probe = await s.client.createSession(fullCreate());
  const before = await snapshot(s);
  await expectStatus(t, 'empty token', s.client.validateSession(''), status.INVALID_ARGUMENT, /token/);
  await stillServingUnchanged(t, s, 'empty token', before, probe.token);
  await expectStatus(t, 'oversized token', s.client.validateSession('a'.repeat(4096)), status.INVALID_ARGUMENT, /token/);
  await stillServingUnchanged(t, s, 'oversized token', before, probe.token);
  await expectStatus(t, 'oversized token with touch', s.client.validateSession('a'.repeat(100_000), true), status.INVALID_ARGUMENT, /token/);
  await stillServingUnchanged(t, s, 'oversized token with touch', before, probe.token);

  const unknown = [randomBytes(32).toString('base64url'), 'not-a-token', 'x', '🙂🙂', probe.session!.id, `${probe.token}x`, probe.token.slice(0, -1)];
  for (const token of unknown) {
    for (const touch of [false, true]) {
      const v = await s.client.validateSession(token, touch);
      t.false(v.valid, `unknown token ${JSON.stringify(token)} validated`);
      t.is(v.reason, InvalidReason.INVALID_REASON_NOT_FOUND);
      t.is(v.session, undefined);
    }
  }
  t.deepEqual(await snapshot(s), before);
});

test('UpdateSession rejects invalid attributes and remove_attributes without merge, changing nothing', async (t) => {
  const s = await server(t);
  const probe = await s.client.createSession(fullCreate({ attributes: { keep: 'me' } }));
  const id = probe.session!.id;
  const before = await snapshot(s);
  const tooMany: Record<string, string> = {};
  for (let i = 0; i <= MAX_ATTRIBUTES; i++) tooMany[`k${i}`] = 'v';
  // Merging this many new keys onto the existing one goes over the limit only after the merge.
  const fillUp: Record<string, string> = {};
  for (let i = 0; i < MAX_ATTRIBUTES; i++) fillUp[`n${i}`] = 'v';
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['too many attributes', { attributes: tooMany }, /attributes/],
    ['too many attributes after the merge', { attributes: fillUp, merge: true }, /attributes/],
    ['oversized attribute key', { attributes: { ['k'.repeat(MAX_KEY_BYTES + 1)]: 'v' } }, /attributes/],
    ['oversized attribute value', { attributes: { k: 'v'.repeat(MAX_VALUE_BYTES + 1) } }, /attributes/],
    ['empty attribute key', { attributes: { '': 'v' }, merge: true }, /attributes/],
    ['NUL in attribute value', { attributes: { k: 'a\0b' } }, /attributes/],
    ['remove_attributes without merge', { attributes: {}, removeAttributes: ['keep'] }, /remove_attributes/],
    ['oversized remove_attributes key', { merge: true, removeAttributes: ['k'.repeat(MAX_KEY_BYTES + 1)] }, /remove_attributes/],
  ];
  for (const [label, req, field] of cases) {
    await expectStatus(t, label, s.client.updateSession({ id, ...req }), status.INVALID_ARGUMENT, field);
    await stillServingUnchanged(t, s, label, before, probe.token);
  }
});

test('ListSessions rejects a bad page_size, a forged page_token and a token reused with other filters', async (t) => {
  const s = await server(t);
  const probe = await s.client.createSession({ serverId: 'a', subject: 'x' });
  for (let i = 0; i < 4; i++) await s.client.createSession({ serverId: 'a', subject: 'x' });
  const before = await snapshot(s);
  const first = await s.client.listSessions({ serverId: 'a', pageSize: 2 });
  t.not(first.nextPageToken, '');
  const real = first.nextPageToken;
  const flipped = real.slice(0, 5) + (real[5] === 'A' ? 'B' : 'A') + real.slice(6);
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['page_size above 1000', { pageSize: 1001 }, /page_size/],
    ['page_size far above 1000', { pageSize: 2 ** 31 - 1 }, /page_size/],
    ['negative page_size', { pageSize: -1 }, /page_size/],
    ['garbage page_token', { pageToken: 'garbage' }, /page_token/],
    ['page_token with a flipped character', { serverId: 'a', pageToken: flipped }, /page_token/],
    ['truncated page_token', { serverId: 'a', pageToken: real.slice(0, -2) }, /page_token/],
    ['page_token with invalid characters', { serverId: 'a', pageToken: `${real}!` }, /page_token/],
    ['page_token of another encoding', { pageToken: Buffer.from('p1.1.xxxxxxxxxxx.yyyyyy').toString('base64url') }, /page_token/],
    ['page_token reused with another server_id', { serverId: 'b', pageToken: real }, /page_token/],
    ['page_token reused with no filter', { pageToken: real }, /page_token/],
    ['page_token reused with an added subject', { serverId: 'a', subject: 'x', pageToken: real }, /page_token/],
    ['oversized server_id filter', { serverId: 's'.repeat(MAX_ID_BYTES + 1) }, /server_id/],
  ];
  for (const [label, req, field] of cases) {
    await expectStatus(t, label, s.client.listSessions(req), status.INVALID_ARGUMENT, field);
    await stillServingUnchanged(t, s, label, before, probe.token);
  }
  // The real token still works with its own filters, and page_size 1000 is allowed.
  const second = await s.client.listSessions({ serverId: 'a', pageSize: 2, pageToken: real });
  t.is(second.sessions.length, 2);
  t.is((await s.client.listSessions({ pageSize: 1000 })).sessions.length, 5);
});

test('RevokeSessions without a filter is INVALID_ARGUMENT and revokes nothing', async (t) => {
  const s = await server(t);
  const probe = await s.client.createSession(fullCreate());
  const before = await snapshot(s);
  await expectStatus(t, 'no filter', s.client.revokeSessions({}), status.INVALID_ARGUMENT, /server_id|subject/);
  await stillServingUnchanged(t, s, 'no filter', before, probe.token);
  await expectStatus(t, 'oversized subject', s.client.revokeSessions({ subject: 'u'.repeat(MAX_ID_BYTES + 1) }), status.INVALID_ARGUMENT, /subject/);
  await stillServingUnchanged(t, s, 'oversized subject', before, probe.token);
});

// ---------------------------------------------------------------- NOT_FOUND

test('Get/Touch/Update/Rotate/Delete of unknown, expired and revoked sessions are NOT_FOUND', async (t) => {
  const s = await server(t);
  const probe = await s.client.createSession({ serverId: 'web', ttl: { seconds: 3 * 24 * 3600, nanos: 0 }, idleTimeout: { seconds: 3 * 24 * 3600, nanos: 0 } });
  const expired = await s.client.createSession({ serverId: 'web', ttl: { seconds: 60, nanos: 0 } });
  const idle = await s.client.createSession({ serverId: 'web', idleTimeout: { seconds: 60, nanos: 0 } });
  const revoked = await s.client.createSession({ serverId: 'web' });
  const revokedByFilter = await s.client.createSession({ serverId: 'web', subject: 'mallory' });
  await s.client.deleteSession(revoked.session!.id);
  await s.client.revokeSessions({ subject: 'mallory' });
  s.clock.advance(61_000);
  const before = await snapshot(s);
  t.deepEqual(before.map((x) => x.id), [probe.session!.id]);

  const targets: [string, string][] = [
    ['unknown', randomBytes(16).toString('base64url')],
    ['expired', expired.session!.id],
    ['idle-expired', idle.session!.id],
    ['revoked', revoked.session!.id],
    ['revoked by RevokeSessions', revokedByFilter.session!.id],
  ];
  for (const [label, id] of targets) {
    const calls: [string, () => Promise<unknown>][] = [
      ['GetSession', () => s.client.getSession(id)],
      ['TouchSession', () => s.client.touchSession(id)],
      ['UpdateSession', () => s.client.updateSession({ id, attributes: { x: 'y' } })],
      ['UpdateSession with merge', () => s.client.updateSession({ id, attributes: { x: 'y' }, merge: true })],
      ['RotateSessionToken', () => s.client.rotateSessionToken(id)],
      ['DeleteSession', () => s.client.deleteSession(id)],
    ];
    for (const [rpc, call] of calls) {
      await expectStatus(t, `${rpc} of ${label}`, call(), status.NOT_FOUND, /not found/i);
      await stillServingUnchanged(t, s, `${rpc} of ${label}`, before, probe.token);
    }
    // allow_missing turns the same delete into a success, and still changes nothing.
    await t.notThrowsAsync(s.client.deleteSession(id, true), `DeleteSession allow_missing of ${label}`);
    await stillServingUnchanged(t, s, `allow_missing of ${label}`, before, probe.token);
  }
  // The dead tokens still do not validate (rotate of a dead session issued nothing usable).
  for (const c of [expired, idle, revoked, revokedByFilter]) t.false((await s.client.validateSession(c.token)).valid);
});

// ---------------------------------------------------------------- FAILED_PRECONDITION

test('UpdateSession with a stale etag is FAILED_PRECONDITION and changes nothing', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession(fullCreate({ attributes: { v: '0' } }));
  const id = created.session!.id;
  const updated = await s.client.updateSession({ id, attributes: { v: '1' }, etag: created.session!.etag });
  const before = await snapshot(s);

  const cases: [string, { attributes?: Record<string, string>; merge?: boolean; removeAttributes?: string[]; etag: string }][] = [
    ['stale etag, replace', { attributes: { v: 'stale' }, etag: created.session!.etag }],
    ['stale etag, merge', { attributes: { w: 'stale' }, merge: true, etag: created.session!.etag }],
    ['stale etag, merge+remove', { merge: true, removeAttributes: ['v'], etag: created.session!.etag }],
    ['made-up etag', { attributes: { v: 'stale' }, etag: '"not-an-etag"' }],
  ];
  for (const [label, req] of cases) {
    await expectStatus(t, label, s.client.updateSession({ id, ...req }), status.FAILED_PRECONDITION, /etag/);
    await stillServingUnchanged(t, s, label, before, created.token);
  }
  const got = await s.client.getSession(id);
  t.deepEqual(got.session!.attributes, { v: '1' });
  t.is(got.session!.etag, updated.session!.etag);
  // The current etag still works.
  const next = await s.client.updateSession({ id, attributes: { v: '2' }, etag: got.session!.etag });
  t.deepEqual(next.session!.attributes, { v: '2' });
});
