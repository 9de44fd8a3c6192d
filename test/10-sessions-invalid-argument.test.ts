import test from 'ava';
import { status } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { rejectsWithCode } from './helpers/grpc';
import { InvalidReason } from '../generated/sessions/v1/session_service';
import { MAX_ID_BYTES, MAX_USER_AGENT_BYTES, MAX_ATTRIBUTES, MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_TTL_MS, server, snapshot, expectStatus, stillServingUnchanged, fullCreate } from './helpers/sessions-e2e';

/*
 * End-to-end SessionService: every bad input gets INVALID_ARGUMENT naming the
 * field, stores nothing, and leaves the server serving.
 */

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
