import test from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { InvalidReason } from '../generated/sessions/v1/session_service';
import { server } from './helpers/sessions-e2e';

/*
 * --max-sessions-per-subject through the generated client, with both
 * policies, also under concurrent creates. Test 71 runs this file on
 * PostgreSQL too.
 */

const limited = (policy: string, max = 2) => ({ SESSIOND_MAX_SESSIONS_PER_SUBJECT: String(max), SESSIOND_SESSION_LIMIT_POLICY: policy });

test('evict-oldest: a create past the limit revokes the oldest live session of that subject and server_id', async (t) => {
  const s = await server(t, limited('evict-oldest'));
  const [a1, a2] = [await s.client.createSession({ serverId: 'web', subject: 'alice' }), await s.client.createSession({ serverId: 'web', subject: 'alice' })];
  const elsewhere = await s.client.createSession({ serverId: 'api', subject: 'alice' });
  const anonymous = await Promise.all(Array.from({ length: 3 }, () => s.client.createSession({ serverId: 'web' })));
  const a3 = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  t.is((await s.client.validateSession(a1.token)).reason, InvalidReason.INVALID_REASON_REVOKED, 'the oldest went');
  for (const c of [a2, a3, elsewhere, ...anonymous]) t.true((await s.client.validateSession(c.token)).valid);
  t.is((await s.client.listSessions({ serverId: 'web', subject: 'alice' })).sessions.length, 2);
});

test('refuse: a create past the limit is RESOURCE_EXHAUSTED naming the subject and the limit, and writes nothing; a revoke makes room', async (t) => {
  const s = await server(t, limited('refuse'));
  const first = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const err = await t.throwsAsync(s.client.createSession({ serverId: 'web', subject: 'alice', requestId: 'r-1' })) as ServiceError;
  t.is(err.code, status.RESOURCE_EXHAUSTED);
  t.regex(err.details, /^subject "alice" of server_id "web" already has 2 live sessions, the most max-sessions-per-subject allows \(policy refuse\)/);
  t.is((await s.client.listSessions({ subject: 'alice' })).sessions.length, 2);
  await s.client.deleteSession(first.session!.id);
  const retried = await s.client.createSession({ serverId: 'web', subject: 'alice', requestId: 'r-1' });
  t.truthy(retried.token, 'the refused request_id was not used up');
});

test('the limit is exact under concurrent creates, with either policy', async (t) => {
  for (const policy of ['evict-oldest', 'refuse']) {
    const s = await server(t, limited(policy, 3));
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => s.client.createSession({ serverId: 'web', subject: 'racer' })));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    t.is(ok, policy === 'refuse' ? 3 : 30, policy);
    for (const r of results) if (r.status === 'rejected') t.is((r.reason as ServiceError).code, status.RESOURCE_EXHAUSTED);
    t.is((await s.client.listSessions({ subject: 'racer' })).sessions.length, 3, `${policy}: never more than the limit live`);
  }
});
