import test from 'ava';
import { status } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { server, snapshot, expectStatus, stillServingUnchanged, fullCreate } from './helpers/sessions-e2e';

/*
 * End-to-end SessionService: unknown, expired and revoked sessions are
 * NOT_FOUND; a stale etag is FAILED_PRECONDITION and changes nothing.
 */

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
