import test from 'ava';
import { status } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { rejectsWithCode } from './helpers/grpc';
import { InvalidReason } from '../generated/sessions/v1/session_service';
import { MIN, HOUR, MAX_ID_BYTES, MAX_USER_AGENT_BYTES, MAX_ATTRIBUTES, MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_TTL_MS, ms, server, fullCreate } from './helpers/sessions-e2e';

/*
 * End-to-end SessionService: every RPC's success path, through the generated
 * client against a real server over a real SQLite file.
 */

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

test('RevokeSessions with except_session_id logs out the other devices and keeps the current one', async (t) => {
  const s = await server(t);
  const mk = (serverId: string, subject: string) => s.client.createSession({ serverId, subject });
  const current = await mk('web', 'alice');
  const phone = await mk('web', 'alice');
  const laptop = await mk('web', 'alice');
  const elsewhere = await mk('api', 'alice');
  const bob = await mk('web', 'bob');
  const r = await s.client.revokeSessions({ serverId: 'web', subject: 'alice', exceptSessionId: current.session!.id });
  t.is(r.revokedCount, 2);
  t.true((await s.client.validateSession(current.token)).valid, 'the current session is kept');
  t.false((await s.client.validateSession(phone.token)).valid);
  t.false((await s.client.validateSession(laptop.token)).valid);
  t.true((await s.client.validateSession(elsewhere.token)).valid, 'outside the filter');
  t.true((await s.client.validateSession(bob.token)).valid);
  // Keeping a session the filter does not match, or one that does not exist, keeps nothing else.
  t.is((await s.client.revokeSessions({ serverId: 'api', subject: 'alice', exceptSessionId: bob.session!.id })).revokedCount, 1);
  t.is((await s.client.revokeSessions({ subject: 'bob', exceptSessionId: 'AAAAAAAAAAAAAAAAAAAAAA' })).revokedCount, 1);
  t.true((await s.client.validateSession(current.token)).valid);
  const err = await t.throwsAsync(s.client.revokeSessions({ subject: 'alice', exceptSessionId: 'not-an-id' })) as { code?: number; details?: string };
  t.is(err.code, status.INVALID_ARGUMENT);
  t.regex(err.details ?? '', /^except_session_id "not-an-id" is not a session id/);
  t.true((await s.client.validateSession(current.token)).valid, 'a refused request revokes nothing');
});
