import test from 'ava';
import { credentials, loadPackageDefinition, status, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { join } from 'node:path';
import { LOADER, call, service, seconds, withServer } from './helpers/dynamic-grpc';

/*
 * proto/ loaded dynamically, the way a client in another language would: the
 * field names and timestamps on the wire are the ones the .proto files state.
 */

const ROOT = join(__dirname, '..');

// ---------------------------------------------------------------- wire compatibility from proto/ (no generated code)

function protoClients(address: string) {
  const def = loadSync(['sessions/v1/session_service.proto', 'sessions/v1/admin_service.proto'], { ...LOADER, includeDirs: [join(ROOT, 'proto')] });
  const pkg = loadPackageDefinition(def);
  return {
    sessions: new (service(pkg, 'sessions.v1.SessionService'))(address, credentials.createInsecure()),
    admin: new (service(pkg, 'sessions.v1.AdminService'))(address, credentials.createInsecure()),
  };
}

test('wire compatibility: proto/ loaded dynamically; field names and timestamps as the .proto files name them', async (t) => {
  await withServer(async (s) => {
    const { sessions, admin } = protoClients(s.address);
    try {
      const now = s.clock.now() / 1000;
      const created = await call(sessions, 'CreateSession', {
        server_id: 'wire-1',
        subject: 'carol',
        attributes: { role: 'admin', locale: 'fr' },
        ip: '203.0.113.7',
        user_agent: 'curl/8',
        ttl: { seconds: 7200, nanos: 0 },
        idle_timeout: { seconds: 900, nanos: 0 },
      });
      t.deepEqual(Object.keys(created).sort(), ['session', 'token']);
      const sess = created['session'];
      for (const f of ['id', 'server_id', 'subject', 'attributes', 'ip', 'user_agent', 'etag', 'create_time', 'update_time', 'expire_time', 'idle_expire_time', 'last_active_time', 'idle_timeout']) {
        t.true(f in sess, `Session.${f} on the wire`);
      }
      t.is(sess.server_id, 'wire-1');
      t.is(sess.subject, 'carol');
      t.deepEqual(sess.attributes, { role: 'admin', locale: 'fr' });
      t.is(sess.ip, '203.0.113.7');
      t.is(sess.user_agent, 'curl/8');
      t.truthy(sess.etag);
      t.notRegex(sess.id, new RegExp(created['token'].slice(0, 8)), 'the public id is not derived from the token');
      // Timestamps decode as google.protobuf.Timestamp {seconds, nanos} and mean what they say.
      t.true(Math.abs(seconds(sess.create_time) - now) < 1, `create_time ${JSON.stringify(sess.create_time)} vs now ${now}`);
      t.true(sess.create_time.nanos >= 0 && sess.create_time.nanos < 1e9);
      t.is(Math.round(seconds(sess.expire_time) - seconds(sess.create_time)), 7200);
      t.is(Math.round(seconds(sess.idle_expire_time) - seconds(sess.create_time)), 900);
      t.deepEqual(sess.idle_timeout, { seconds: '900', nanos: 0 });

      const v = await call(sessions, 'ValidateSession', { token: created['token'], touch: true });
      t.true(v['valid']);
      t.is(v['session'].id, sess.id);
      t.is(v['reason'], 'INVALID_REASON_UNSPECIFIED');
      const bad = await call(sessions, 'ValidateSession', { token: 'not-a-token-anyone-was-given' });
      t.false(bad['valid']);
      t.is(bad['reason'], 'INVALID_REASON_NOT_FOUND');

      const second = await call(sessions, 'CreateSession', { server_id: 'wire-1', subject: 'dave' });
      await call(sessions, 'CreateSession', { server_id: 'wire-2', subject: 'erin' });
      const page1 = await call(sessions, 'ListSessions', { server_id: 'wire-1', page_size: 1 });
      t.deepEqual(Object.keys(page1).sort(), ['next_page_token', 'sequence', 'sessions']);
      t.is(page1['sequence'], '3', 'uint64 sequence: three creates so far, as a string with longs: String');
      t.is(page1['sessions'].length, 1);
      t.not(page1['next_page_token'], '');
      const page2 = await call(sessions, 'ListSessions', { server_id: 'wire-1', page_size: 1, page_token: page1['next_page_token'] });
      t.deepEqual([page1['sessions'][0].id, page2['sessions'][0].id].sort(), [sess.id, second['session'].id].sort());
      const last = page2['next_page_token'] === '' ? page2 : await call(sessions, 'ListSessions', { server_id: 'wire-1', page_size: 1, page_token: page2['next_page_token'] });
      t.is(last['next_page_token'], '', 'an empty next_page_token at the end');
      const byUser = await call(sessions, 'ListSessions', { subject: 'erin' });
      t.deepEqual(byUser['sessions'].map((x: { server_id: string }) => x.server_id), ['wire-2']);

      // A server stream of SessionEvent, names and enums as the .proto files have them.
      const watch = (sessions as unknown as { WatchSessionEvents(req: object): NodeJS.EventEmitter & { cancel(): void } }).WatchSessionEvents({ after_sequence: '1', server_id: 'wire-1' });
      const event = await new Promise<Record<string, any>>((resolve, reject) => {
        watch.once('data', (r: Record<string, any>) => resolve(r['event']));
        watch.once('error', reject);
      });
      watch.on('error', () => undefined);
      watch.cancel();
      t.deepEqual(Object.keys(event).sort(), ['cause', 'sequence', 'server_id', 'session_id', 'subject', 'time', 'type']);
      t.like(event, { sequence: '2', type: 'SESSION_EVENT_TYPE_CREATED', session_id: second['session'].id, server_id: 'wire-1', subject: 'dave', cause: '' });
      t.true(Math.abs(seconds(event['time']) - now) < 1);

      const cp = await call(admin, 'Checkpoint', { mode: 'CHECKPOINT_MODE_PASSIVE' });
      t.is(cp['mode'], 'CHECKPOINT_MODE_PASSIVE');
    } finally {
      sessions.close();
      admin.close();
    }
  });
});

test('wire compatibility: a bad page_token and a missing server_id are INVALID_ARGUMENT through the dynamic client', async (t) => {
  await withServer(async (s) => {
    const { sessions, admin } = protoClients(s.address);
    try {
      const e1 = await t.throwsAsync<ServiceError>(call(sessions, 'ListSessions', { page_token: 'garbage!' }));
      t.is(e1?.code, status.INVALID_ARGUMENT);
      const e2 = await t.throwsAsync<ServiceError>(call(sessions, 'CreateSession', { subject: 'no-server' }));
      t.is(e2?.code, status.INVALID_ARGUMENT);
      t.regex(e2?.details ?? '', /server_id/);
    } finally {
      sessions.close();
      admin.close();
    }
  });
});
