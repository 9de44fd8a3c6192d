import test, { type ExecutionContext } from 'ava';
import { status } from '@grpc/grpc-js';
import { rejectsWithCode } from './helpers/grpc';
import { startTestServer } from './helpers/server';

/*
 * A CreateSession retry with a known request_id answers the first token only
 * to the caller that asked, for exactly the same request, while the session
 * still holds that token. Anything else gets ALREADY_EXISTS and no token.
 */

const REQUEST: { serverId: string; subject: string; attributes: Record<string, string>; ip: string; userAgent: string; ttl: { seconds: number; nanos: number }; requestId: string } = { serverId: 'web-1', subject: 'alice', attributes: { role: 'admin', plan: 'pro' }, ip: '203.0.113.7', userAgent: 'ua/1', ttl: { seconds: 3600, nanos: 0 }, requestId: 'login-42' };

async function server(t: ExecutionContext) {
  const s = await startTestServer({
    principals: [
      { name: 'web-a', permissions: ['sessions.read', 'sessions.write'], serverIds: ['web-*'] },
      { name: 'web-b', permissions: ['sessions.read', 'sessions.write'], serverIds: ['web-*'] },
    ],
  });
  t.teardown(() => s.close());
  return s;
}

test('the same caller repeating the same request gets the same session and token, concurrently or after', async (t) => {
  const s = await server(t);
  const [one, two] = await Promise.all([s.client.createSession(REQUEST), s.client.createSession(REQUEST)]);
  t.is(one.session!.id, two.session!.id);
  t.is(one.token, two.token);
  // The attributes in another key order are the same request.
  const again = await s.client.createSession({ ...REQUEST, attributes: { plan: 'pro', role: 'admin' } });
  t.is(again.token, one.token);
  t.is((await s.client.listSessions({ serverId: 'web-1' })).sessions.length, 1);
});

test('a replay by another principal gets no token, even with the same server_ids and fields', async (t) => {
  const s = await server(t);
  const first = await s.client.createSession(REQUEST);
  const err = await rejectsWithCode(t, s.clientAs('web-b').createSession(REQUEST), status.ALREADY_EXISTS, /request_id "login-42" already created session/);
  t.false(err.details.includes(first.token));
  t.is((await s.client.listSessions({ serverId: 'web-1' })).sessions.length, 1, 'nothing new was created');
});

test('a replay with any field changed gets no token', async (t) => {
  const s = await server(t);
  await s.client.createSession(REQUEST);
  const changes: Partial<typeof REQUEST & { idleTimeout: { seconds: number; nanos: number } }>[] = [
    { subject: 'mallory' }, { attributes: { role: 'admin' } }, { attributes: { role: 'admin', plan: 'free' } }, { ip: '198.51.100.1' },
    { userAgent: 'ua/2' }, { ttl: { seconds: 7200, nanos: 0 } }, { idleTimeout: { seconds: 60, nanos: 0 } },
  ];
  for (const change of changes) {
    await rejectsWithCode(t, s.client.createSession({ ...REQUEST, ...change }), status.ALREADY_EXISTS, /already used for a create with other fields/);
  }
  // Another server_id is another key: a new session, not a replay.
  t.not((await s.client.createSession({ ...REQUEST, serverId: 'web-2' })).token, '');
});

test('a replay after the token was rotated, or the session revoked, gets no token', async (t) => {
  const s = await server(t);
  const first = await s.client.createSession(REQUEST);
  await s.client.rotateSessionToken(first.session!.id);
  const err = await rejectsWithCode(t, s.client.createSession(REQUEST), status.ALREADY_EXISTS, /has since been rotated, revoked or expired/);
  t.false(err.details.includes(first.token));

  const other = await s.client.createSession({ ...REQUEST, requestId: 'login-43' });
  await s.client.deleteSession(other.session!.id);
  await rejectsWithCode(t, s.client.createSession({ ...REQUEST, requestId: 'login-43' }), status.ALREADY_EXISTS, /has since been rotated, revoked or expired/);

  const third = await s.client.createSession({ ...REQUEST, requestId: 'login-44', ttl: { seconds: 60, nanos: 0 } });
  s.clock.advance(61_000);
  await rejectsWithCode(t, s.client.createSession({ ...REQUEST, requestId: 'login-44', ttl: { seconds: 60, nanos: 0 } }), status.ALREADY_EXISTS);
  t.false((await s.client.validateSession(third.token)).valid);
});

test('a create that failed is not replayed: the retry tries again', async (t) => {
  const s = await server(t);
  await rejectsWithCode(t, s.client.createSession({ ...REQUEST, ip: 'not-an-ip' }), status.INVALID_ARGUMENT);
  t.truthy((await s.client.createSession(REQUEST)).token);
});
