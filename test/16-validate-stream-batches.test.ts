import test from 'ava';
import { status } from '@grpc/grpc-js';
import { InvalidReason, ValidateSessionStreamResponse } from '../generated/sessions/v1/session_service';
import { BATCH_MAX_HEADER, MAX_BATCH_ITEMS } from '../src/shared/stream-protocol';
import { scrape, value } from './helpers/prometheus';
import { frame, lfield, message, RawGrpc, vfield } from './helpers/raw-grpc';
import { SMALL_MESSAGES } from './helpers/server';
import { S, exchange, item, answersById, server } from './helpers/validate-stream';

/*
 * ValidateSessionStream's batched form (items in, answers out) end to end
 * through a real server, next to the original one-validation messages; and
 * the TypeScript client's StreamValidator, which coalesces the validations of
 * one event-loop turn into one message, against the real server.
 */

test('a batch is answered with batched answers matched by correlation id; the headers give the item limit', async (t) => {
  const s = await server(t);
  const a = await s.client.createSession({ serverId: 'gw', subject: 'a' });
  const b = await s.client.createSession({ serverId: 'gw', subject: 'b' });
  const r = await exchange(s.address, [{ items: [item(11, a.token), item(12, b.token, true), item(13, 'never-issued'), item(14, a.token)] }]);
  t.is(r.error, undefined);
  t.is(r.headers?.get(BATCH_MAX_HEADER)[0], String(MAX_BATCH_ITEMS));
  t.is(r.responses.length, 1, 'the items of one message, all answered at once, share one response');
  const res = r.responses[0]!;
  t.like(res, { correlationId: 0, valid: false, session: undefined, errorCode: 0, errorMessage: '' }, 'the single-answer fields stay unset');
  const byId = answersById(t, r.responses);
  t.deepEqual([...byId.keys()].sort(), [11, 12, 13, 14]);
  t.like(byId.get(11), { valid: true, errorCode: 0, session: { id: a.session!.id, subject: 'a' } });
  t.like(byId.get(12), { valid: true, session: { subject: 'b' } });
  t.like(byId.get(13), { valid: false, session: undefined, reason: InvalidReason.INVALID_REASON_NOT_FOUND, errorCode: 0 });
  t.like(byId.get(14), { valid: true, session: { id: a.session!.id } });
});

test('each item is answered on its own: bad tokens get a precise error, dead sessions a reason, touches that write an answer too', async (t) => {
  const s = await server(t);
  const live = await s.client.createSession({ serverId: 'gw', subject: 'live' });
  const toTouch = await s.client.createSession({ serverId: 'gw', subject: 'touched' });
  const revoked = await s.client.createSession({ serverId: 'gw' });
  await s.client.deleteSession(revoked.session!.id);
  const idle = await s.client.createSession({ serverId: 'gw', idleTimeout: { seconds: 60, nanos: 0 } });
  // Past the idle session's window, and far enough into the others' that a touch writes.
  s.clock.advance(5 * 60_000);
  const r = await exchange(s.address, [
    {
      items: [
        item(1, live.token), item(2, ''), item(3, 'x'.repeat(513)), item(4, revoked.token),
        item(5, idle.token), item(6, toTouch.token, true), item(7, 'not-a-token'), item(8, live.token),
      ],
    },
    // The stream goes on after the bad items.
    { items: [item(9, live.token)] },
  ]);
  t.is(r.error, undefined, 'the stream ended with OK');
  const byId = answersById(t, r.responses);
  t.is(byId.size, 9);
  t.like(byId.get(1), { valid: true, errorCode: 0, session: { subject: 'live' } });
  t.like(byId.get(2), { valid: false, errorCode: status.INVALID_ARGUMENT, errorMessage: 'token is required' });
  t.like(byId.get(3), { valid: false, errorCode: status.INVALID_ARGUMENT, errorMessage: 'token is over 512 bytes' });
  t.like(byId.get(4), { valid: false, errorCode: 0, reason: InvalidReason.INVALID_REASON_REVOKED });
  t.like(byId.get(5), { valid: false, errorCode: 0, reason: InvalidReason.INVALID_REASON_IDLE_TIMEOUT });
  t.like(byId.get(6), { valid: true, errorCode: 0, session: { subject: 'touched' } });
  t.is(byId.get(6)!.session!.lastActiveTime!.getTime(), s.clock.now(), 'the touch was written');
  t.like(byId.get(7), { valid: false, reason: InvalidReason.INVALID_REASON_NOT_FOUND });
  t.like(byId.get(8), { valid: true });
  t.like(byId.get(9), { valid: true });
  for (const id of [2, 3, 4, 5, 7]) t.is(byId.get(id)!.session, undefined, `no session for item ${id}`);
  t.is((await s.client.getSession(toTouch.session!.id)).session!.lastActiveTime!.getTime(), s.clock.now());
});

test('a message over the item limit ends the stream with INVALID_ARGUMENT naming items and the limit; earlier answers still arrive', async (t) => {
  const s = await server(t);
  const live = await s.client.createSession({ serverId: 'gw' });
  const over = Array.from({ length: MAX_BATCH_ITEMS + 1 }, (_, i) => item(100 + i, live.token));
  const r = await exchange(s.address, [{ items: [item(1, live.token)] }, { items: over }]);
  t.is(r.error?.code, status.INVALID_ARGUMENT);
  t.is(r.error?.details, `items: more than ${MAX_BATCH_ITEMS} in one message; the limit is ${MAX_BATCH_ITEMS} (response header ${BATCH_MAX_HEADER})`);
  const byId = answersById(t, r.responses);
  t.deepEqual([...byId.keys()], [1], 'the message before was answered; none of the refused one was');

  // Exactly at the limit is fine, and other streams were never affected.
  const at = await exchange(s.address, [{ items: over.slice(0, MAX_BATCH_ITEMS) }]);
  t.is(at.error, undefined);
  t.is(answersById(t, at.responses).size, MAX_BATCH_ITEMS);
});

test('a message with both forms ends the stream with INVALID_ARGUMENT', async (t) => {
  const s = await server(t);
  const live = await s.client.createSession({ serverId: 'gw' });
  for (const single of [{ token: live.token }, { correlationId: 5 }, { touch: true }]) {
    const r = await exchange(s.address, [{ ...single, items: [item(1, live.token)] }]);
    t.is(r.error?.code, status.INVALID_ARGUMENT, JSON.stringify(single));
    t.regex(r.error?.details ?? '', /either one validation \(correlation_id, token, touch\) or items, not both/);
    t.is(r.responses.length, 0);
  }
});

test('items that do not decode end the stream with INVALID_ARGUMENT, before any item of the message is answered', async (t) => {
  const s = await server(t);
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());
  const good = message(vfield(1, 1), lfield(2, 'unknown'));
  const cases: [string, Buffer, RegExp][] = [
    // The generated decoder would stop at the 0 and read the rest as the request's own token.
    ['field number 0 inside an item', message(lfield(4, good), lfield(4, Buffer.concat([vfield(1, 2), Buffer.from([0x00]), lfield(2, 'x')]))), /item 1 of items: illegal tag: field no 0/],
    ['a stray end-group inside an item', message(lfield(4, Buffer.concat([vfield(1, 2), Buffer.from([0x0c])]))), /item 0 of items/],
    ['a length past the end of an item', message(lfield(4, Buffer.concat([vfield(1, 2), Buffer.from([0x12, 0x05, 0x41])]))), /item 0 of items/],
    ['invalid UTF-8 in an item token', message(lfield(4, Buffer.concat([vfield(1, 2), lfield(2, Buffer.from([0x41, 0xc3, 0x28]))]))), /not valid UTF-8/],
    ['a correlation id beyond 2^53 in an item', message(lfield(4, message(vfield(1, 2n ** 53n), lfield(2, 'x')))), /MAX_SAFE_INTEGER/],
  ];
  for (const [what, bytes, why] of cases) {
    const answer = await raw.call(`${S}ValidateSessionStream`, frame(bytes));
    t.is(answer.code, status.INVALID_ARGUMENT, `${what}: ${answer.details}`);
    t.regex(answer.details, why, what);
    t.is(answer.messages.length, 0, what);
  }
  // Unknown fields inside an item are ignored, as proto3 says.
  const unknown = await raw.call(`${S}ValidateSessionStream`, frame(message(lfield(4, Buffer.concat([good, vfield(9, 1)])))));
  t.is(unknown.code, status.OK, unknown.details);
  t.is(unknown.messages.length, 1);
});

test('messages of the original form are still answered one by one in the original form, next to batches on the same stream', async (t) => {
  const s = await server(t);
  const live = await s.client.createSession({ serverId: 'gw', subject: 'old' });
  const r = await exchange(s.address, [
    { correlationId: 1, token: live.token },
    { items: [item(2, live.token), item(3, '')] },
    { correlationId: 4, token: 'never-issued' },
    { correlationId: 5, token: '' },
  ]);
  t.is(r.error, undefined);
  const singles = r.responses.filter((x) => x.answers.length === 0);
  t.deepEqual(singles.map((x) => x.correlationId).sort(), [1, 4, 5]);
  const one = (id: number) => singles.find((x) => x.correlationId === id)!;
  t.like(one(1), { valid: true, session: { subject: 'old' }, errorCode: 0 });
  t.like(one(4), { valid: false, reason: InvalidReason.INVALID_REASON_NOT_FOUND });
  t.like(one(5), { valid: false, errorCode: status.INVALID_ARGUMENT, errorMessage: 'token is required' });
  const byId = answersById(t, r.responses);
  t.deepEqual([...byId.keys()].sort(), [2, 3]);
  t.like(byId.get(2), { valid: true });
  t.like(byId.get(3), { errorCode: status.INVALID_ARGUMENT });
});

test('answers to large sessions are spread over several responses, each within the response budget', async (t) => {
  // --max-message-bytes 64 KiB: a batched response is written once its answers reach 16 KiB.
  const s = await server(t, { ...SMALL_MESSAGES });
  const big = await s.client.createSession({ serverId: 'gw', attributes: { a: 'x'.repeat(3000), b: 'y'.repeat(3000) } });
  const r = await exchange(s.address, [{ items: Array.from({ length: 10 }, (_, i) => item(i + 1, big.token)) }]);
  t.is(r.error, undefined);
  t.is(answersById(t, r.responses).size, 10);
  // About 6 KiB an answer: three reach the budget, so 3 + 3 + 3 + 1.
  t.true(r.responses.length >= 4, `${r.responses.length} responses`);
  for (const res of r.responses) {
    t.true(res.answers.length <= 3, `${res.answers.length} answers of about 6 KiB in one response`);
    t.true(ValidateSessionStreamResponse.encode(res).finish().length < 24 * 1024, 'within the budget plus one answer');
  }
});

test('the client sends the validations of one turn as one message, up to its cap, and the server reads one message each', async (t) => {
  const s = await server(t, { SESSIOND_METRICS_LISTEN: '127.0.0.1:0' });
  const sessions = await Promise.all(Array.from({ length: 20 }, (_, i) => s.client.createSession({ serverId: 'gw', subject: `u${i}` })));
  const v = s.client.openValidator();
  t.teardown(() => v.close());
  // The first answer comes after the server's headers: batching is on from here.
  t.true((await v.validate(sessions[0]!.token)).valid);
  const before = v.messagesSent;
  const received = async () => value(await scrape(s.app.metricsPort!), 'grpc_server_msg_received_total',
    { grpc_service: 'sessions.v1.SessionService', grpc_method: 'ValidateSessionStream' });
  const serverBefore = await received();

  const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => v.validate(i % 10 === 9 ? 'unknown' : sessions[i % 20]!.token)));
  t.is(v.messagesSent - before, 1, 'a hundred validations, one message');
  answers.forEach((a, i) => {
    if (i % 10 === 9) t.like(a, { valid: false, reason: InvalidReason.INVALID_REASON_NOT_FOUND });
    else t.is(a.session?.subject, `u${i % 20}`, `validation ${i} got its own answer`);
  });

  const many = await Promise.all(Array.from({ length: 600 }, (_, i) => v.validate(sessions[i % 20]!.token)));
  t.true(many.every((a, i) => a.session?.subject === `u${i % 20}`));
  t.is(v.messagesSent - before, 1 + 3, '600 validations at 256 per message: three more messages');
  t.is((await received())! - serverBefore!, 4, 'the server read exactly those messages');
});
