import test from 'ava';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import {
  InvalidReason, SessionServiceClient, type ValidateSessionStreamResponse,
} from '../generated/sessions/v1/session_service';
import { rejectsWithCode } from './helpers/grpc';
import { startTestServer } from './helpers/server';

test('a retried CreateSession with the same request_id returns the first answer, token included', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const first = await s.client.createSession({ serverId: 'web-1', subject: 'a', requestId: 'req-1' });
  const retry = await s.client.createSession({ serverId: 'web-1', subject: 'a', requestId: 'req-1' });
  t.is(retry.session?.id, first.session?.id);
  t.is(retry.token, first.token);
  const other = await s.client.createSession({ serverId: 'web-2', subject: 'a', requestId: 'req-1' });
  t.not(other.session?.id, first.session?.id, 'request ids are scoped per server_id');
  const listed = await s.client.listSessions({ serverId: 'web-1' });
  t.is(listed.sessions.length, 1, 'the retry created nothing');
});

test('once the cached answer is gone, the retry is refused with ALREADY_EXISTS and still creates nothing', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const first = await s.client.createSession({ serverId: 'web-1', requestId: 'req-2' });
  s.clock.advance(11 * 60_000);
  const err = await rejectsWithCode(t, s.client.createSession({ serverId: 'web-1', requestId: 'req-2' }), status.ALREADY_EXISTS, /request_id/);
  t.true(err.details.includes(first.session!.id));
  t.is((await s.client.listSessions({ serverId: 'web-1' })).sessions.length, 1);
});

test('an oversized request_id is INVALID_ARGUMENT', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  await rejectsWithCode(t, s.client.createSession({ serverId: 'web-1', requestId: 'x'.repeat(129) }), status.INVALID_ARGUMENT, /request_id/);
});

test('ValidateSessionStream answers every request with its correlation id, errors included, on one stream', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const live = await s.client.createSession({ serverId: 'gw' });
  const raw = new SessionServiceClient(s.address, credentials.createInsecure());
  t.teardown(() => raw.close());
  const call = raw.validateSessionStream(new Metadata());
  const answers: ValidateSessionStreamResponse[] = [];
  const done = new Promise<void>((resolve, reject) => {
    call.on('data', (r: ValidateSessionStreamResponse) => answers.push(r));
    call.on('end', resolve);
    call.on('error', reject);
  });
  const n = 300;
  for (let i = 1; i <= n; i++) {
    const token = i % 3 === 0 ? live.token : i % 3 === 1 ? `unknown-${i}` : '';
    call.write({ correlationId: i, token, touch: false, items: [] });
  }
  call.end();
  await done;
  t.is(answers.length, n);
  const byId = new Map(answers.map((a) => [a.correlationId, a]));
  t.is(byId.size, n, 'every correlation id answered once');
  for (let i = 1; i <= n; i++) {
    const a = byId.get(i)!;
    if (i % 3 === 0) {
      t.true(a.valid);
      t.is(a.session?.id, live.session?.id);
    } else if (i % 3 === 1) {
      t.false(a.valid);
      t.is(a.reason, InvalidReason.INVALID_REASON_NOT_FOUND);
      t.is(a.errorCode, 0);
    } else {
      t.is(a.errorCode, status.INVALID_ARGUMENT);
      t.regex(a.errorMessage, /token/);
    }
  }
});

test('the TypeScript client multiplexes validations over one stream', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const a = await s.client.createSession({ serverId: 'gw', subject: 'a' });
  const b = await s.client.createSession({ serverId: 'gw', subject: 'b' });
  const v = s.client.openValidator();
  t.teardown(() => v.close());
  const [ra, rb, rx] = await Promise.all([v.validate(a.token), v.validate(b.token, true), v.validate('nope')]);
  t.is(ra.session?.subject, 'a');
  t.is(rb.session?.subject, 'b');
  t.false(rx.valid);
  t.is(rx.reason, InvalidReason.INVALID_REASON_NOT_FOUND);
});

test('shutdown ends an open validation stream promptly instead of waiting out the drain deadline', async (t) => {
  const s = await startTestServer({ env: { SESSIOND_DRAIN_TIMEOUT: '30s' } });
  const live = await s.client.createSession({ serverId: 'gw' });
  const v = s.client.openValidator();
  t.true((await v.validate(live.token)).valid);
  const started = Date.now();
  await s.close();
  t.true(Date.now() - started < 5000, `shutdown took ${Date.now() - started}ms with a 30s drain deadline`);
  await t.throwsAsync(v.validate(live.token), undefined, 'the stream is over after shutdown');
});
