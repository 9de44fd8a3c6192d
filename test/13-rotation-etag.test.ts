import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { startTestServer, type TestServer } from './helpers/server';
import { rejectsWithCode } from './helpers/grpc';
import { InvalidReason } from '../generated/sessions/v1/session_service';

/* Token rotation and etag (AIP-154) concurrency control, end to end. */

const MIN = 60_000;
const ms = (d: Date | undefined): number => {
  if (!d) throw new Error('timestamp unset');
  return d.getTime();
};

async function server(t: ExecutionContext): Promise<TestServer> {
  const s = await startTestServer();
  t.teardown(() => s.close());
  return s;
}

test('rotation: old token NOT_FOUND, new token valid, same id, token_rotate_time set, etag unchanged', async (t) => {
  const s = await server(t);
  const t0 = s.clock.now();
  const c = await s.client.createSession({ serverId: 'web', subject: 'alice', attributes: { role: 'user' } });
  const id = c.session!.id;
  t.is(ms(c.session!.tokenRotateTime), t0, 'token_rotate_time equals create_time until a rotation');

  s.clock.advance(5 * MIN);
  const r = await s.client.rotateSessionToken(id);
  t.is(r.session!.id, id);
  t.not(r.token, c.token);
  t.regex(r.token, /^[A-Za-z0-9_-]{43,}$/);
  t.is(ms(r.session!.tokenRotateTime), t0 + 5 * MIN);
  t.is(r.session!.etag, c.session!.etag, 'rotation must keep the etag');
  t.is(ms(r.session!.createTime), t0);
  t.is(ms(r.session!.updateTime), t0, 'rotation is not an attribute update');
  t.deepEqual(r.session!.attributes, { role: 'user' });
  t.is(r.session!.subject, 'alice');
  t.is(ms(r.session!.expireTime), ms(c.session!.expireTime));

  const oldV = await s.client.validateSession(c.token);
  t.false(oldV.valid);
  t.is(oldV.reason, InvalidReason.INVALID_REASON_NOT_FOUND);
  t.is(oldV.session, undefined);
  t.is((await s.client.validateSession(c.token, true)).reason, InvalidReason.INVALID_REASON_NOT_FOUND);
  const newV = await s.client.validateSession(r.token);
  t.true(newV.valid);
  t.is(newV.session!.id, id);

  const got = await s.client.getSession(id);
  t.is(ms(got.session!.tokenRotateTime), t0 + 5 * MIN);
  t.is(got.session!.etag, c.session!.etag);
  t.false(JSON.stringify(got).includes(r.token));

  // A second rotation retires the second token too.
  s.clock.advance(MIN);
  const r2 = await s.client.rotateSessionToken(id);
  t.false((await s.client.validateSession(r.token)).valid);
  t.true((await s.client.validateSession(r2.token)).valid);
  t.is(ms(r2.session!.tokenRotateTime), t0 + 6 * MIN);
  t.is(new Set([c.token, r.token, r2.token]).size, 3);
});

test('rotation leaves other sessions alone', async (t) => {
  const s = await server(t);
  const a = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const b = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  await s.client.rotateSessionToken(a.session!.id);
  const v = await s.client.validateSession(b.token);
  t.true(v.valid);
  t.is(v.session!.id, b.session!.id);
});

test('rotation of a revoked, expired or deleted session is NOT_FOUND and issues no working token', async (t) => {
  const s = await server(t);
  const revoked = await s.client.createSession({ serverId: 'web', subject: 'bob' });
  await s.client.revokeSessions({ subject: 'bob' });
  await rejectsWithCode(t, s.client.rotateSessionToken(revoked.session!.id), status.NOT_FOUND, /not found/);
  const deleted = await s.client.createSession({ serverId: 'web' });
  await s.client.deleteSession(deleted.session!.id);
  await rejectsWithCode(t, s.client.rotateSessionToken(deleted.session!.id), status.NOT_FOUND, /not found/);
  const expiring = await s.client.createSession({ serverId: 'web', ttl: { seconds: 60, nanos: 0 } });
  s.clock.advance(MIN);
  await rejectsWithCode(t, s.client.rotateSessionToken(expiring.session!.id), status.NOT_FOUND, /not found/);
  // Their old tokens keep reporting why they are dead (the hash was not replaced).
  t.is((await s.client.validateSession(revoked.token)).reason, InvalidReason.INVALID_REASON_REVOKED);
  t.is((await s.client.validateSession(deleted.token)).reason, InvalidReason.INVALID_REASON_REVOKED);
  t.is((await s.client.validateSession(expiring.token)).reason, InvalidReason.INVALID_REASON_EXPIRED);
});

test('rotation and deletion race: after both, neither token validates', async (t) => {
  const s = await server(t);
  const c = await s.client.createSession({ serverId: 'web' });
  const [rot] = await Promise.allSettled([s.client.rotateSessionToken(c.session!.id), s.client.deleteSession(c.session!.id)]);
  t.false((await s.client.validateSession(c.token)).valid);
  if (rot.status === 'fulfilled') t.false((await s.client.validateSession(rot.value.token)).valid);
  else t.is((rot.reason as ServiceError).code, status.NOT_FOUND);
});

test('the etag changes on every update, but not on touch, validate-with-touch or rotation', async (t) => {
  const s = await server(t);
  const c = await s.client.createSession({ serverId: 'web', idleTimeout: { seconds: 600, nanos: 0 } });
  const id = c.session!.id;
  const e0 = c.session!.etag;
  t.true(e0.length > 0);

  s.clock.advance(2 * MIN);
  const touched = await s.client.touchSession(id);
  t.true(ms(touched.session!.idleExpireTime) > ms(c.session!.idleExpireTime), 'the touch wrote (precondition)');
  t.is(touched.session!.etag, e0);
  s.clock.advance(2 * MIN);
  const validated = await s.client.validateSession(c.token, true);
  t.true(ms(validated.session!.idleExpireTime) > ms(touched.session!.idleExpireTime), 'the validation touched (precondition)');
  t.is(validated.session!.etag, e0);
  const rotated = await s.client.rotateSessionToken(id);
  t.is(rotated.session!.etag, e0);
  t.is((await s.client.getSession(id)).session!.etag, e0);

  // The original etag is still current after all that, so an update with it succeeds.
  const u1 = await s.client.updateSession({ id, attributes: { a: '1' }, etag: e0 });
  t.not(u1.session!.etag, e0);
  // Even an update that sets the same attributes again is a new version.
  const u2 = await s.client.updateSession({ id, attributes: { a: '1' }, etag: u1.session!.etag });
  t.not(u2.session!.etag, u1.session!.etag);
  const u3 = await s.client.updateSession({ id, attributes: {}, merge: true });
  t.not(u3.session!.etag, u2.session!.etag);
  t.is(new Set([e0, u1.session!.etag, u2.session!.etag, u3.session!.etag]).size, 4);
  t.is((await s.client.getSession(id)).session!.etag, u3.session!.etag);

  // The first etag is stale now.
  await rejectsWithCode(t, s.client.updateSession({ id, attributes: { b: '2' }, etag: e0 }), status.FAILED_PRECONDITION, /etag/);
  // The current etag stays current across a touch and a rotation.
  s.clock.advance(2 * MIN);
  await s.client.touchSession(id);
  await s.client.rotateSessionToken(id);
  await t.notThrowsAsync(s.client.updateSession({ id, attributes: { b: '2' }, etag: u3.session!.etag }));
});

test('two concurrent updates with the same etag: exactly one succeeds, the other is FAILED_PRECONDITION', async (t) => {
  const s = await server(t);
  const c = await s.client.createSession({ serverId: 'web', attributes: { who: 'nobody' } });
  const id = c.session!.id;
  for (let round = 0; round < 10; round++) {
    const etag = (await s.client.getSession(id)).session!.etag;
    const results = await Promise.allSettled([
      s.client.updateSession({ id, attributes: { who: `left-${round}` }, etag }),
      s.client.updateSession({ id, attributes: { who: `right-${round}` }, merge: true, etag }),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    t.is(ok.length, 1, `round ${round}: exactly one update must win`);
    t.is(failed.length, 1);
    t.is((failed[0]!.reason as ServiceError).code, status.FAILED_PRECONDITION, `round ${round}: ${String(failed[0]?.reason)}`);
    t.regex((failed[0]!.reason as ServiceError).details, /etag/);
    const winner = (ok[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof s.client.updateSession>>>).value;
    const stored = (await s.client.getSession(id)).session!;
    t.deepEqual(stored.attributes, winner.session!.attributes, 'the stored attributes are the winner\'s');
    t.is(stored.etag, winner.session!.etag);
    t.not(stored.etag, etag);
  }
});

test('many concurrent updates with the same etag: exactly one wins; unconditional updates all apply', async (t) => {
  const s = await server(t);
  const c = await s.client.createSession({ serverId: 'web' });
  const id = c.session!.id;
  const etag = c.session!.etag;
  const results = await Promise.allSettled(
    Array.from({ length: 20 }, (_, i) => s.client.updateSession({ id, attributes: { [`k${i}`]: 'v' }, merge: true, etag })),
  );
  t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of results) if (r.status === 'rejected') t.is((r.reason as ServiceError).code, status.FAILED_PRECONDITION);
  t.is(Object.keys((await s.client.getSession(id)).session!.attributes).length, 1);

  // Without an etag, concurrent merges are all applied (each in its own transaction).
  const merges = await Promise.all(
    Array.from({ length: 20 }, (_, i) => s.client.updateSession({ id, attributes: { [`m${i}`]: 'v' }, merge: true })),
  );
  t.is(new Set(merges.map((m) => m.session!.etag)).size, 20, 'each update produced its own version');
  const attrs = (await s.client.getSession(id)).session!.attributes;
  for (let i = 0; i < 20; i++) t.is(attrs[`m${i}`], 'v');
});

test('a stale etag leaves attributes, etag and update_time as they were', async (t) => {
  const s = await server(t);
  const c = await s.client.createSession({ serverId: 'web', attributes: { x: '1' } });
  const id = c.session!.id;
  s.clock.advance(1000);
  const u = await s.client.updateSession({ id, attributes: { x: '2' } });
  const before = (await s.client.getSession(id)).session!;
  s.clock.advance(1000);
  await rejectsWithCode(t, s.client.updateSession({ id, attributes: { x: '3' }, etag: c.session!.etag }), status.FAILED_PRECONDITION, /etag/);
  const after = (await s.client.getSession(id)).session!;
  t.deepEqual(after, before);
  t.is(after.etag, u.session!.etag);
  t.is(ms(after.updateTime), ms(u.session!.updateTime));
});

test('a stale-etag update fails alone among concurrent writes: the others apply, it changes nothing', async (t) => {
  const s = await server(t);
  const a = await s.client.createSession({ serverId: 'web', attributes: { n: 'a0' } });
  const b = await s.client.createSession({ serverId: 'web', attributes: { n: 'b0' } });
  const c = await s.client.createSession({ serverId: 'web', attributes: { n: 'c0' } });
  const staleB = b.session!.etag;
  await s.client.updateSession({ id: b.session!.id, attributes: { n: 'b1' } });
  const bBefore = (await s.client.getSession(b.session!.id)).session!;
  const fill: Record<string, string> = {};
  for (let i = 0; i < 64; i++) fill[`f${i}`] = 'x'; // 64 + the existing key is over the default limit
  const cBefore = (await s.client.getSession(c.session!.id)).session!;

  // Sent together, so the server is free to run them in one transaction.
  const [ua, ub, uc, created, rotated] = await Promise.allSettled([
    s.client.updateSession({ id: a.session!.id, attributes: { n: 'a1' }, etag: a.session!.etag }),
    s.client.updateSession({ id: b.session!.id, attributes: { n: 'stale' }, etag: staleB }),
    s.client.updateSession({ id: c.session!.id, attributes: fill, merge: true }),
    s.client.createSession({ serverId: 'web', subject: 'new' }),
    s.client.rotateSessionToken(a.session!.id),
  ]);
  t.is(ua.status, 'fulfilled');
  t.is(ub.status, 'rejected');
  t.is(((ub as PromiseRejectedResult).reason as ServiceError).code, status.FAILED_PRECONDITION);
  t.is(uc.status, 'rejected');
  t.is(((uc as PromiseRejectedResult).reason as ServiceError).code, status.INVALID_ARGUMENT);
  t.is(created.status, 'fulfilled');
  t.is(rotated.status, 'fulfilled');

  t.deepEqual((await s.client.getSession(a.session!.id)).session!.attributes, { n: 'a1' });
  t.deepEqual((await s.client.getSession(b.session!.id)).session, bBefore);
  t.deepEqual((await s.client.getSession(c.session!.id)).session, cBefore);
  const newOne = (created as PromiseFulfilledResult<Awaited<ReturnType<typeof s.client.createSession>>>).value;
  t.true((await s.client.validateSession(newOne.token)).valid);
  const rot = (rotated as PromiseFulfilledResult<Awaited<ReturnType<typeof s.client.rotateSessionToken>>>).value;
  t.true((await s.client.validateSession(rot.token)).valid);
  t.false((await s.client.validateSession(a.token)).valid);
});
