import test from 'ava';
import { status } from '@grpc/grpc-js';
import { startTestServer } from './helpers/server';
import { rejectsWithCode } from './helpers/grpc';

test('create, validate, get, delete through the generated client', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const created = await s.client.createSession({ serverId: 'web-1', subject: 'alice', attributes: { role: 'admin' } });
  t.truthy(created.token);
  const v = await s.client.validateSession(created.token);
  t.true(v.valid);
  t.is(v.session?.id, created.session?.id);
  const got = await s.client.getSession(created.session!.id);
  t.deepEqual(got.session?.attributes, { role: 'admin' });
  await s.client.deleteSession(created.session!.id);
  await rejectsWithCode(t, s.client.getSession(created.session!.id), status.NOT_FOUND);
});
