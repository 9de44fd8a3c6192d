import test from 'ava';
import { Metadata, status } from '@grpc/grpc-js';
import { SessiondClient } from '../src/client/client';
import { UnauthenticatedError } from '../src/domain/errors';
import { Callers, isLoopbackPeer, type IncomingCall } from '../src/transport/callers';
import { rejectsWithCode } from './helpers/grpc';
import { runServerToExit } from './helpers/process';
import { startTestServer } from './helpers/server';

/*
 * Protected mode, as docs/security.md states it: with no principals configured, only
 * loopback peers are served, with every permission; a non-loopback listen
 * address refuses to start unless --allow-unauthenticated says so; and a
 * loopback peer whose call came through a forwarding proxy (a sidecar makes
 * every caller look local) is not local.
 */

function fakeCall(peer: string, headers: Record<string, string> = {}): IncomingCall {
  const metadata = new Metadata();
  for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
  return { metadata, getPeer: () => peer, getAuthContext: () => ({}) };
}

test('protected mode: a loopback caller may call every SessionService and AdminService RPC', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  t.is(s.config.server.principalsFile, undefined);
  const created = await s.client.createSession({ serverId: 'web-1', subject: 'alice' });
  t.true((await s.client.validateSession(created.token)).valid);
  t.is((await s.client.listSessions({})).sessions.length, 1);
  t.is((await s.client.getStorageStatus()).journalMode, 'wal');
  t.true((await s.client.purgeExpiredSessions({})).purgedCount >= 0);
  t.true((await s.client.checkpoint({})).logFrames >= 0);
});

test('protected mode: a loopback call that carries a forwarding proxy\'s headers is refused, with a reason', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  for (const header of ['x-forwarded-for', 'x-forwarded-proto', 'x-envoy-attempt-count', 'forwarded', 'x-real-ip', 'via']) {
    const md = new Metadata();
    md.set(header, '203.0.113.9');
    await rejectsWithCode(t, s.client.createSession({ serverId: 'web-1' }, { metadata: md }), status.UNAUTHENTICATED, /protected mode.*proxy/);
    await rejectsWithCode(t, s.client.getStorageStatus({ metadata: md }), status.UNAUTHENTICATED, /protected mode/);
  }
  // Health needs no credentials, proxy or not.
  const md = new Metadata();
  md.set('x-forwarded-for', '203.0.113.9');
  t.is((await s.client.health('', { metadata: md })).status, 1);
});

test('protected mode: a non-loopback listen address without principals does not start, and says why', async (t) => {
  for (const listen of ['0.0.0.0:0', '[::]:0', '192.0.2.10:0']) {
    const r = await runServerToExit({ SESSIOND_LISTEN: listen, SESSIOND_DB_PATH: '/nonexistent/never-opened.db' });
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, /not a loopback address and no principals are configured/);
    t.regex(r.stderr, /principals-file/);
  }
});

test('protected mode: --allow-unauthenticated serves every peer, with a warning at every start', async (t) => {
  const s = await startTestServer({ env: { SESSIOND_ALLOW_UNAUTHENTICATED: 'true' } });
  t.teardown(() => s.close());
  t.true(s.logs.some((l) => l['level'] === 'warn' && /allow-unauthenticated/.test(String(l['msg']))), 'a warning names the setting');
  const md = new Metadata();
  md.set('x-forwarded-for', '203.0.113.9');
  t.truthy((await s.client.createSession({ serverId: 'web-1' }, { metadata: md })).token);
  const open = new Callers({ allowUnauthenticated: true });
  t.is(open.identify(fakeCall('10.0.0.1:5000')).name, 'unauthenticated');
});

// grpc-js's server-side call.getPeer() is `${socket.remoteAddress}:${socket.remotePort}`: IPv6 comes
// unbracketed ("::1:5000"); the bracketed and "ipv4:"/"ipv6:"-prefixed forms are what grpc-js uses elsewhere.
const LOOPBACK = [
  '127.0.0.1:5000',
  '127.0.0.1',
  '127.5.6.7:1',
  '127.255.255.254:65535',
  'ipv4:127.0.0.1:5000',
  '[::1]:5000',
  '[::1]',
  'ipv6:[::1]:5000',
  '::1:5000',
  '::1',
  '::ffff:127.0.0.1:5000',
  '::ffff:127.0.0.1',
  '::FFFF:127.0.0.1:5000',
  '[::ffff:127.0.0.1]:5000',
  '::ffff:127.5.6.7:443',
];
const REMOTE = [
  '10.0.0.1:5000',
  '10.0.0.1',
  '192.0.2.2:5000',
  '128.0.0.1:5000',
  '1127.0.0.1:5000',
  '127.0.0.1.example.com:5000',
  '[2001:db8::1]:5000',
  '[2001:db8::1]',
  '2001:db8::1:5000',
  'fd00::2:5000',
  '::2:5000',
  '[::2]:5000',
  '::ffff:10.0.0.1:5000',
  '[::ffff:10.0.0.1]:5000',
  '[::ffff:127.0.0.1.evil]:5000',
  'unknown',
  '',
];

test('isLoopbackPeer: 127.0.0.0/8 and ::1 in every peer form grpc-js produces', (t) => {
  for (const peer of LOOPBACK) t.true(isLoopbackPeer(peer), `${JSON.stringify(peer)} should be loopback`);
});

test('isLoopbackPeer: other addresses and unknown peers are not loopback', (t) => {
  for (const peer of REMOTE) t.false(isLoopbackPeer(peer), `${JSON.stringify(peer)} should not be loopback`);
});


test('Callers with no principals: loopback peers are served unless a proxy header says otherwise; others are UNAUTHENTICATED', (t) => {
  const callers = new Callers({ allowUnauthenticated: false });
  for (const peer of LOOPBACK) t.is(callers.identify(fakeCall(peer)).name, 'loopback', peer);
  for (const peer of LOOPBACK) t.throws(() => callers.identify(fakeCall(peer, { 'x-forwarded-for': '10.0.0.9' })), { instanceOf: UnauthenticatedError }, peer);
  for (const peer of REMOTE) t.throws(() => callers.identify(fakeCall(peer)), { instanceOf: UnauthenticatedError, message: /protected mode/ }, peer);
  // A bearer header changes nothing for a remote peer: there is no principal to match it.
  t.throws(() => callers.identify(fakeCall('10.0.0.1:5000', { authorization: 'Bearer some-key-of-some-length' })), { instanceOf: UnauthenticatedError });
});

test('a client of the default protected-mode server needs no key', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const keyed = new SessiondClient(s.address, { apiKey: 'sk_sessiond_ignored-in-protected-mode', defaultDeadlineMs: 10_000 });
  t.teardown(() => keyed.close());
  t.truthy((await keyed.createSession({ serverId: 'web-1' })).token, 'a stray key does not turn a loopback caller away');
});
