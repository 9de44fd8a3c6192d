import test, { type ExecutionContext } from 'ava';
import { status } from '@grpc/grpc-js';
import { startTestServer, type TestServer } from './helpers/server';
import { rejectsWithCode } from './helpers/grpc';
import { InvalidReason } from '../generated/sessions/v1/session_service';

/*
 * Expiry, touch and purge, with time moved only by the ManualClock: the
 * server never sleeps and neither does this file.
 */

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;

const ms = (d: Date | undefined): number => {
  if (!d) throw new Error('timestamp unset');
  return d.getTime();
};
const dur = (millis: number) => ({ seconds: Math.floor(millis / 1000), nanos: (millis % 1000) * 1e6 });

async function server(t: ExecutionContext, env?: Record<string, string>): Promise<TestServer> {
  const s = await startTestServer({ env });
  t.teardown(() => s.close());
  return s;
}

async function listedIds(s: TestServer): Promise<string[]> {
  const ids: string[] = [];
  for await (const x of s.client.listAllSessions({ pageSize: 1000 })) ids.push(x.id);
  return ids;
}

test('absolute expiry: valid until expire_time, then EXPIRED and gone from Get and List', async (t) => {
  const s = await server(t);
  const other = await s.client.createSession({ serverId: 'web', ttl: dur(HOUR), idleTimeout: dur(HOUR) });
  const c = await s.client.createSession({ serverId: 'web', ttl: dur(10 * MIN), idleTimeout: dur(HOUR) });
  const id = c.session!.id;
  // The idle expiry is never later than the absolute one.
  t.is(ms(c.session!.expireTime), s.clock.now() + 10 * MIN);
  t.is(ms(c.session!.idleExpireTime), ms(c.session!.expireTime));

  s.clock.advance(10 * MIN - 1);
  t.true((await s.client.validateSession(c.token)).valid, 'live 1 ms before expire_time');
  t.is((await s.client.getSession(id)).session!.id, id);
  t.deepEqual(await listedIds(s), [other.session!.id, id]);

  s.clock.advance(1);
  const v = await s.client.validateSession(c.token);
  t.false(v.valid);
  t.is(v.reason, InvalidReason.INVALID_REASON_EXPIRED);
  t.is(v.session, undefined);
  const vt = await s.client.validateSession(c.token, true);
  t.is(vt.reason, InvalidReason.INVALID_REASON_EXPIRED, 'a touch does not revive an expired session');
  await rejectsWithCode(t, s.client.getSession(id), status.NOT_FOUND);
  t.deepEqual(await listedIds(s), [other.session!.id]);
  // The row is still stored until purged; only reads hide it.
  t.truthy((await s.app.storage.repository.findById(id)));
});

test('idle expiry: IDLE_TIMEOUT once the idle window passes without a touch', async (t) => {
  const s = await server(t);
  const c = await s.client.createSession({ serverId: 'web', ttl: dur(24 * HOUR), idleTimeout: dur(5 * MIN) });
  const id = c.session!.id;
  t.is(ms(c.session!.idleExpireTime), s.clock.now() + 5 * MIN);
  s.clock.advance(5 * MIN - 1);
  // Validation without touch does not extend the window.
  t.true((await s.client.validateSession(c.token, false)).valid);
  s.clock.advance(1);
  const v = await s.client.validateSession(c.token);
  t.false(v.valid);
  t.is(v.reason, InvalidReason.INVALID_REASON_IDLE_TIMEOUT);
  t.is((await s.client.validateSession(c.token, true)).reason, InvalidReason.INVALID_REASON_IDLE_TIMEOUT);
  await rejectsWithCode(t, s.client.getSession(id), status.NOT_FOUND);
  await rejectsWithCode(t, s.client.touchSession(id), status.NOT_FOUND);
  t.deepEqual(await listedIds(s), []);
});

test('touch extends the idle expiry but never past the absolute expiry', async (t) => {
  const s = await server(t);
  const t0 = s.clock.now();
  const c = await s.client.createSession({ serverId: 'web', ttl: dur(10 * MIN), idleTimeout: dur(4 * MIN) });
  const id = c.session!.id;
  t.is(ms(c.session!.idleExpireTime), t0 + 4 * MIN);

  s.clock.advance(3 * MIN);
  const first = await s.client.touchSession(id);
  t.is(ms(first.session!.idleExpireTime), t0 + 7 * MIN);
  t.is(ms(first.session!.lastActiveTime), t0 + 3 * MIN);

  s.clock.advance(3 * MIN);
  const second = await s.client.touchSession(id);
  t.is(ms(second.session!.idleExpireTime), t0 + 10 * MIN, 'clamped to expire_time (6m + 4m = 10m exactly)');

  s.clock.advance(3 * MIN); // t0 + 9m: now + idle = 13m > the 10m lifetime
  const third = await s.client.touchSession(id);
  t.is(ms(third.session!.idleExpireTime), t0 + 10 * MIN, 'a touch never goes past expire_time');
  t.is(ms(third.session!.expireTime), t0 + 10 * MIN, 'a touch never moves expire_time');
  const stored = (await s.app.storage.repository.findById(id))!;
  t.is(stored.idleExpireTime, t0 + 10 * MIN);
  t.is(stored.expireTime, t0 + 10 * MIN);

  s.clock.advance(1 * MIN);
  t.is((await s.client.validateSession(c.token, true)).reason, InvalidReason.INVALID_REASON_EXPIRED);
  await rejectsWithCode(t, s.client.touchSession(id), status.NOT_FOUND);
});

test('touch throttling: no write until 10% of the idle window has passed since the last activity', async (t) => {
  const s = await server(t);
  const t0 = s.clock.now();
  const idle = 10 * MIN; // 10% = 1 minute
  const c = await s.client.createSession({ serverId: 'web', ttl: dur(HOUR), idleTimeout: dur(idle) });
  const id = c.session!.id;
  const created = (await s.app.storage.repository.findById(id))!;

  s.clock.advance(30 * SEC);
  const early = await s.client.touchSession(id);
  t.is(ms(early.session!.idleExpireTime), t0 + idle, 'a touch 30 s after creation must not move the idle expiry');
  t.is(ms(early.session!.lastActiveTime), t0);
  t.deepEqual((await s.app.storage.repository.findById(id)), created, 'the throttled touch wrote to the row');
  t.is(ms((await s.client.getSession(id)).session!.idleExpireTime), t0 + idle);

  s.clock.advance(30 * SEC - 1); // 1 ms short of 10%
  await s.client.touchSession(id);
  await s.client.validateSession(c.token, true);
  t.deepEqual((await s.app.storage.repository.findById(id)), created, 'a touch 1 ms before the threshold wrote to the row');

  s.clock.advance(1); // exactly 10%
  const due = await s.client.touchSession(id);
  t.is(ms(due.session!.idleExpireTime), t0 + MIN + idle);
  t.is(ms(due.session!.lastActiveTime), t0 + MIN);
  const row = (await s.app.storage.repository.findById(id))!;
  t.is(row.idleExpireTime, t0 + MIN + idle);
  t.is(row.lastActiveTime, t0 + MIN);
  t.is(row.version, created.version, 'a touch keeps the version (etag)');
  t.is(ms((await s.client.getSession(id)).session!.idleExpireTime), t0 + MIN + idle);

  // The throttle restarts from the last recorded activity.
  s.clock.advance(59 * SEC);
  await s.client.touchSession(id);
  t.is((await s.app.storage.repository.findById(id))!.idleExpireTime, t0 + MIN + idle);
  s.clock.advance(1 * SEC);
  await s.client.touchSession(id);
  t.is((await s.app.storage.repository.findById(id))!.idleExpireTime, t0 + 2 * MIN + idle);
});

test('the touch threshold follows the configuration', async (t) => {
  const s = await server(t, { SESSIOND_TOUCH_THRESHOLD: '0.5' });
  const t0 = s.clock.now();
  const c = await s.client.createSession({ serverId: 'web', ttl: dur(HOUR), idleTimeout: dur(10 * MIN) });
  s.clock.advance(4 * MIN);
  t.is(ms((await s.client.touchSession(c.session!.id)).session!.idleExpireTime), t0 + 10 * MIN);
  s.clock.advance(1 * MIN);
  t.is(ms((await s.client.touchSession(c.session!.id)).session!.idleExpireTime), t0 + 15 * MIN);
});

test('ValidateSession with touch=true slides the idle expiry and keeps the session alive', async (t) => {
  const s = await server(t);
  const t0 = s.clock.now();
  const c = await s.client.createSession({ serverId: 'web', ttl: dur(HOUR), idleTimeout: dur(5 * MIN) });
  // Validate with touch every 4 minutes for 20 minutes: the 5-minute window never lapses.
  for (let i = 1; i <= 5; i++) {
    s.clock.advance(4 * MIN);
    const v = await s.client.validateSession(c.token, true);
    t.true(v.valid, `validation ${i} at +${4 * i}m`);
    t.is(ms(v.session!.idleExpireTime), t0 + 4 * MIN * i + 5 * MIN);
    t.is((await s.app.storage.repository.findById(c.session!.id))!.idleExpireTime, t0 + 4 * MIN * i + 5 * MIN);
  }
  // Without touch, the window lapses.
  s.clock.advance(4 * MIN);
  t.true((await s.client.validateSession(c.token, false)).valid);
  s.clock.advance(1 * MIN);
  t.is((await s.client.validateSession(c.token, false)).reason, InvalidReason.INVALID_REASON_IDLE_TIMEOUT);
});

test('revoked sessions validate as REVOKED, even after they would also have expired', async (t) => {
  const s = await server(t);
  const byDelete = await s.client.createSession({ serverId: 'web', ttl: dur(10 * MIN) });
  const byRevoke = await s.client.createSession({ serverId: 'web', subject: 'eve', ttl: dur(10 * MIN) });
  await s.client.deleteSession(byDelete.session!.id);
  t.is((await s.client.revokeSessions({ subject: 'eve' })).revokedCount, 1);
  for (const c of [byDelete, byRevoke]) {
    const v = await s.client.validateSession(c.token, true);
    t.false(v.valid);
    t.is(v.reason, InvalidReason.INVALID_REASON_REVOKED);
  }
  s.clock.advance(HOUR);
  for (const c of [byDelete, byRevoke]) t.is((await s.client.validateSession(c.token)).reason, InvalidReason.INVALID_REASON_REVOKED);
});

test('PurgeExpiredSessions deletes expired, idle-expired and revoked sessions in batches; storage counts follow', async (t) => {
  const s = await server(t);
  const live = [];
  for (let i = 0; i < 4; i++) live.push(await s.client.createSession({ serverId: 'keep', ttl: dur(HOUR), idleTimeout: dur(HOUR) }));
  const expiring = [];
  for (let i = 0; i < 5; i++) expiring.push(await s.client.createSession({ serverId: 'short', ttl: dur(MIN), idleTimeout: dur(HOUR) }));
  const idling = [];
  for (let i = 0; i < 3; i++) idling.push(await s.client.createSession({ serverId: 'idle', ttl: dur(HOUR), idleTimeout: dur(MIN) }));
  const revoked = [];
  for (let i = 0; i < 3; i++) revoked.push(await s.client.createSession({ serverId: 'gone', ttl: dur(HOUR), idleTimeout: dur(HOUR) }));
  await s.client.revokeSessions({ serverId: 'gone' });

  let st = await s.client.getStorageStatus();
  t.is(st.liveSessions, 4 + 5 + 3);
  t.is(st.expiredSessions, 3);

  s.clock.advance(MIN);
  st = await s.client.getStorageStatus();
  t.is(st.liveSessions, 4);
  t.is(st.expiredSessions, 5 + 3 + 3);

  const dead = [...expiring, ...idling, ...revoked];
  const purge = await s.client.purgeExpiredSessions({ batchSize: 3 });
  t.is(purge.purgedCount, dead.length);
  t.is(purge.batches, Math.ceil(dead.length / 3));

  st = await s.client.getStorageStatus();
  t.is(st.liveSessions, 4);
  t.is(st.expiredSessions, 0);
  for (const c of dead) {
    t.is((await s.app.storage.repository.findById(c.session!.id)), undefined, 'a dead row survived the purge');
    // A purged token is simply unknown now.
    t.is((await s.client.validateSession(c.token)).reason, InvalidReason.INVALID_REASON_NOT_FOUND);
  }
  for (const c of live) t.true((await s.client.validateSession(c.token)).valid, 'the purge removed a live session');
  t.deepEqual(await listedIds(s), live.map((c) => c.session!.id));

  // Nothing left: zero, and zero batches.
  const again = await s.client.purgeExpiredSessions({ batchSize: 3 });
  t.is(again.purgedCount, 0);
  t.is(again.batches, 0);
});

test('PurgeExpiredSessions with an exact multiple of the batch size, and the default batch size', async (t) => {
  const s = await server(t);
  for (let i = 0; i < 6; i++) await s.client.createSession({ serverId: 'short', ttl: dur(MIN) });
  s.clock.advance(MIN);
  const r = await s.client.purgeExpiredSessions({ batchSize: 2 });
  t.is(r.purgedCount, 6);
  t.is(r.batches, 3);

  for (let i = 0; i < 7; i++) await s.client.createSession({ serverId: 'short', ttl: dur(MIN) });
  s.clock.advance(MIN);
  const d = await s.client.purgeExpiredSessions({});
  t.is(d.purgedCount, 7);
  t.is(d.batches, 1, 'the default batch size (1000) holds 7 rows in one batch');
});

test('PurgeExpiredSessions rejects a batch size out of range', async (t) => {
  const s = await server(t);
  await rejectsWithCode(t, s.client.purgeExpiredSessions({ batchSize: -1 }), status.INVALID_ARGUMENT, /batch_size/);
  await rejectsWithCode(t, s.client.purgeExpiredSessions({ batchSize: 10_001 }), status.INVALID_ARGUMENT, /batch_size/);
  t.is((await s.client.purgeExpiredSessions({ batchSize: 10_000 })).purgedCount, 0);
});

test('the background sweep purges dead sessions in batches of the configured size', async (t) => {
  const s = await server(t, { SESSIOND_SWEEP_BATCH_SIZE: '2' });
  const live = await s.client.createSession({ serverId: 'keep', ttl: dur(HOUR) });
  const dead = [];
  for (let i = 0; i < 5; i++) dead.push(await s.client.createSession({ serverId: 'short', ttl: dur(MIN) }));
  const revoked = await s.client.createSession({ serverId: 'gone' });
  await s.client.deleteSession(revoked.session!.id);

  // Nothing expired yet but the revoked one.
  await s.app.sweeper.runOnce();
  t.is((await s.client.getStorageStatus()).expiredSessions, 0);
  t.is((await s.app.storage.repository.findById(revoked.session!.id)), undefined);
  t.truthy((await s.app.storage.repository.findById(dead[0]!.session!.id)));

  s.clock.advance(MIN);
  t.is((await s.client.getStorageStatus()).expiredSessions, 5);
  await s.app.sweeper.runOnce();
  const st = await s.client.getStorageStatus();
  t.is(st.expiredSessions, 0);
  t.is(st.liveSessions, 1);
  for (const c of dead) t.is((await s.app.storage.repository.findById(c.session!.id)), undefined);
  t.true((await s.client.validateSession(live.token)).valid);
  const sweeps = s.logs.filter((l) => l['msg'] === 'sweep');
  t.is(sweeps.length, 2, 'one log line per sweep that purged something');
  t.is(sweeps[1]!['purged'], 5);
  t.is(sweeps[1]!['batches'], 3);
});

test('config defaults (24h ttl, 30m idle) apply when the request leaves them unset or zero', async (t) => {
  const s = await server(t);
  const now = s.clock.now();
  for (const req of [{}, { ttl: { seconds: 0, nanos: 0 }, idleTimeout: { seconds: 0, nanos: 0 } }]) {
    const c = await s.client.createSession({ serverId: 'web', ...req });
    t.is(ms(c.session!.expireTime), now + 24 * HOUR);
    t.is(ms(c.session!.idleExpireTime), now + 30 * MIN);
    t.deepEqual(c.session!.idleTimeout, { seconds: 30 * 60, nanos: 0 });
  }
  // One default, one explicit.
  const mixed = await s.client.createSession({ serverId: 'web', idleTimeout: dur(2 * MIN) });
  t.is(ms(mixed.session!.expireTime), now + 24 * HOUR);
  t.is(ms(mixed.session!.idleExpireTime), now + 2 * MIN);
});

test('configured session defaults replace the built-in ones', async (t) => {
  const s = await server(t, { SESSIOND_DEFAULT_TTL: '2h', SESSIOND_DEFAULT_IDLE_TIMEOUT: '10m', SESSIOND_MAX_TTL: '3h' });
  const now = s.clock.now();
  const c = await s.client.createSession({ serverId: 'web' });
  t.is(ms(c.session!.expireTime), now + 2 * HOUR);
  t.is(ms(c.session!.idleExpireTime), now + 10 * MIN);
  await rejectsWithCode(t, s.client.createSession({ serverId: 'web', ttl: dur(3 * HOUR + 1000) }), status.INVALID_ARGUMENT, /\bttl\b/);
  await t.notThrowsAsync(s.client.createSession({ serverId: 'web', ttl: dur(3 * HOUR) }));
});
