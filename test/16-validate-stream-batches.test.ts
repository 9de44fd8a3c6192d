import test, { type ExecutionContext } from 'ava';
import http2 from 'node:http2';
import {
  credentials, Metadata, Server, ServerCredentials, status,
  type ServerDuplexStream, type ServiceError, type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  InvalidReason, SessionServiceClient, SessionServiceService,
  type ValidateSessionStreamAnswer, type ValidateSessionStreamItem, ValidateSessionStreamRequest, ValidateSessionStreamResponse,
} from '../generated/sessions/v1/session_service';
import { SessiondClient } from '../src/client/client';
import { BATCH_MAX_HEADER, MAX_BATCH_ITEMS } from '../src/shared/stream-protocol';
import { scrape, value } from './helpers/prometheus';
import { frame, lfield, message, RawGrpc, vfield } from './helpers/raw-grpc';
import { SMALL_MESSAGES, startTestServer, type TestServer } from './helpers/server';

/*
 * ValidateSessionStream's batched form (items in, answers out) end to end
 * through a real server, next to the original one-validation messages; and
 * the TypeScript client's StreamValidator, which coalesces the validations of
 * one event-loop turn into one message, against the real server and against
 * stand-in servers that answer late, never, or the way a server from before
 * batches did.
 */

const S = '/sessions.v1.SessionService/';

interface StreamResult {
  responses: ValidateSessionStreamResponse[];
  headers: Metadata | undefined;
  error: ServiceError | undefined;
}

/** Writes `messages` on one stream through the generated client, half-closes, and collects everything. */
async function exchange(address: string, messages: Partial<ValidateSessionStreamRequest>[]): Promise<StreamResult> {
  const raw = new SessionServiceClient(address, credentials.createInsecure());
  try {
    const call = raw.validateSessionStream(new Metadata());
    const out: StreamResult = { responses: [], headers: undefined, error: undefined };
    const done = new Promise<void>((resolve) => {
      call.on('metadata', (md: Metadata) => (out.headers = md));
      call.on('data', (r: ValidateSessionStreamResponse) => out.responses.push(r));
      call.on('error', (err: ServiceError) => {
        out.error = err;
        resolve();
      });
      call.on('end', resolve);
    });
    for (const m of messages) call.write({ correlationId: 0, token: '', touch: false, items: [], ...m });
    call.end();
    await done;
    return out;
  } finally {
    raw.close();
  }
}

const item = (correlationId: number, token: string, touch = false): ValidateSessionStreamItem => ({ correlationId, token, touch });

/** Every batched answer, by correlation id; fails on an id answered twice. */
function answersById(t: ExecutionContext, responses: ValidateSessionStreamResponse[]): Map<number, ValidateSessionStreamAnswer> {
  const byId = new Map<number, ValidateSessionStreamAnswer>();
  for (const r of responses) {
    for (const a of r.answers) {
      t.false(byId.has(a.correlationId), `correlation id ${a.correlationId} answered twice`);
      byId.set(a.correlationId, a);
    }
  }
  return byId;
}

async function server(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ env });
  t.teardown(() => s.close());
  return s;
}

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

// ---------------------------------------------------------------- stand-in servers

interface StandIn {
  address: string;
  /** Items (or single requests, as items) received so far, in order. */
  received: ValidateSessionStreamItem[];
  /** Messages received so far. */
  messages: number;
  calls: ServerDuplexStream<ValidateSessionStreamRequest, ValidateSessionStreamResponse>[];
}

/**
 * A SessionService whose ValidateSessionStream only records what it reads:
 * `onRead` decides what happens next. With `batches`, it sends the header a
 * current server sends; without, it behaves like a server from before batches.
 */
async function standIn(
  t: ExecutionContext,
  opts: { batches: boolean; onRead?: (s: StandIn, call: StandIn['calls'][number], req: ValidateSessionStreamRequest) => void },
): Promise<SessiondClient & { standIn: StandIn }> {
  const srv = new Server();
  const state: StandIn = { address: '', received: [], messages: 0, calls: [] };
  srv.addService(SessionServiceService, {
    validateSessionStream: (call: StandIn['calls'][number]) => {
      state.calls.push(call);
      if (opts.batches) {
        const md = new Metadata();
        md.set(BATCH_MAX_HEADER, '1000');
        call.sendMetadata(md);
      }
      call.on('data', (req: ValidateSessionStreamRequest) => {
        state.messages++;
        state.received.push(...(req.items.length > 0 ? req.items : [{ correlationId: req.correlationId, token: req.token, touch: req.touch }]));
        opts.onRead?.(state, call, req);
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  } as UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    srv.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  t.teardown(() => srv.forceShutdown());
  state.address = `127.0.0.1:${port}`;
  const client = new SessiondClient(state.address, { defaultDeadlineMs: 10_000 });
  t.teardown(() => client.close());
  return Object.assign(client, { standIn: state });
}

const notFound = (correlationId: number): ValidateSessionStreamAnswer =>
  ({ correlationId, valid: false, session: undefined, reason: InvalidReason.INVALID_REASON_NOT_FOUND, errorCode: 0, errorMessage: '' });

test('against a server from before batches, the client sends one validation per message and reads single answers', async (t) => {
  const c = await standIn(t, {
    batches: false,
    onRead: (_s, call, req) => {
      // An old server reads fields 1-3 only: items would be unknown to it.
      call.write({ ...notFound(req.correlationId), answers: [] });
    },
  });
  const v = c.openValidator();
  t.teardown(() => v.close());
  const answers = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((tok) => v.validate(tok)));
  t.true(answers.every((a) => a.reason === InvalidReason.INVALID_REASON_NOT_FOUND));
  t.is(v.messagesSent, 5);
  t.is(c.standIn.messages, 5);
  t.deepEqual(c.standIn.received.map((i) => i.token), ['a', 'b', 'c', 'd', 'e']);
  t.deepEqual(new Set(c.standIn.received.map((i) => i.correlationId)).size, 5, 'distinct correlation ids');
});

test('answers are matched by correlation id, whatever their order and however they are grouped', async (t) => {
  const c = await standIn(t, {
    batches: true,
    onRead: (s, call) => {
      if (s.received.length < 6) return;
      // All six at once, reversed, split over two responses.
      const rev = [...s.received].reverse().map((i) => ({ ...notFound(i.correlationId), errorMessage: `for ${i.token}` }));
      for (const answers of [rev.slice(0, 4), rev.slice(4)]) call.write({ ...notFound(0), answers });
    },
  });
  const v = c.openValidator();
  t.teardown(() => v.close());
  const all = await Promise.all(['t0', 't1', 't2', 't3', 't4', 't5'].map((tok) => v.validate(tok)));
  t.deepEqual(all.map((a) => a.errorMessage), ['for t0', 'for t1', 'for t2', 'for t3', 'for t4', 'for t5']);
});

test('the validations still pending when the stream ends, or fails, reject; later ones reject at once', async (t) => {
  const ends = await standIn(t, {
    batches: true,
    onRead: (s, call) => {
      // Answers the first validation, then ends the stream without answering the rest.
      if (s.received.length === 1) call.write({ ...notFound(0), answers: [notFound(s.received[0]!.correlationId)] });
      if (s.received.length === 4) call.end();
    },
  });
  const v = ends.openValidator();
  t.false((await v.validate('first')).valid);
  const pending = ['a', 'b', 'c'].map((tok) => v.validate(tok));
  for (const p of pending) await t.throwsAsync(p, { message: 'validation stream ended' });
  await t.throwsAsync(v.validate('after'), { message: 'validation stream ended' });

  const fails = await standIn(t, {
    batches: true,
    onRead: (s, call) => {
      if (s.received.length === 3) call.emit('error', { code: status.UNAVAILABLE, details: 'going away' });
    },
  });
  const w = fails.openValidator();
  const three = ['a', 'b', 'c'].map((tok) => w.validate(tok));
  for (const p of three) {
    const err = await t.throwsAsync<ServiceError>(p);
    t.is(err?.code, status.UNAVAILABLE);
    t.is(err?.details, 'going away');
  }
  const later = await t.throwsAsync<ServiceError>(w.validate('later'));
  t.is(later?.code, status.UNAVAILABLE);
});

test('cancel() rejects every pending validation with CANCELLED; an aborted validation rejects alone and is not sent if still queued', async (t) => {
  const silent = await standIn(t, { batches: true });
  const v = silent.openValidator();
  const pending = ['a', 'b', 'c'].map((tok) => v.validate(tok));
  while (silent.standIn.received.length < 3) await new Promise((r) => setTimeout(r, 10));
  v.cancel();
  for (const p of pending) t.is((await t.throwsAsync<ServiceError>(p))?.code, status.CANCELLED);
  await t.throwsAsync(v.validate('after'));

  // Answers at once, except the items it is told to hold.
  const held: ValidateSessionStreamItem[] = [];
  let release = (): void => undefined;
  const later = await standIn(t, {
    batches: true,
    onRead: (_s, call, req) => {
      if (req.items.length === 0) return void call.write({ ...notFound(req.correlationId), answers: [] });
      const answers = [];
      for (const i of req.items) {
        if (i.token.startsWith('hold')) held.push(i);
        else answers.push(notFound(i.correlationId));
      }
      if (answers.length > 0) call.write({ ...notFound(0), answers });
      release = () => call.write({ ...notFound(0), answers: held.map((i) => notFound(i.correlationId)) });
    },
  });
  const w = later.openValidator();
  t.teardown(() => w.close());
  // The first answer comes after the headers: from here, the validations of one turn wait in a queue until it ends.
  t.false((await w.validate('warm-up')).valid);
  const queued = new AbortController();
  const sent = new AbortController();
  const keep = w.validate('hold-keep');
  const dropped = w.validate('dropped', false, { signal: queued.signal });
  const abortedLate = w.validate('hold-late', false, { signal: sent.signal });
  queued.abort(new Error('not needed any more'));
  await t.throwsAsync(dropped, { message: 'not needed any more' });
  while (held.length < 2) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(later.standIn.received.map((i) => i.token), ['warm-up', 'hold-keep', 'hold-late'], 'the aborted validation was never sent');
  sent.abort(new Error('gave up'));
  await t.throwsAsync(abortedLate, { message: 'gave up' });
  release();
  t.is((await keep).reason, InvalidReason.INVALID_REASON_NOT_FOUND, 'its neighbours are answered as usual');
  await t.throwsAsync(w.validate('x', false, { signal: AbortSignal.abort(new Error('already')) }), { message: 'already' });
});

test('a client that stops reading answers makes the server stop reading its requests; once it reads again, every item is answered once', async (t) => {
  const s = await server(t, { SESSIOND_METRICS_LISTEN: '127.0.0.1:0' });
  const serverRead = async () => (await value(await scrape(s.app.metricsPort!), 'grpc_server_msg_received_total',
    { grpc_service: 'sessions.v1.SessionService', grpc_method: 'ValidateSessionStream' })) ?? 0;
  // Large answers fill the HTTP/2 windows and the server's write buffer after a few hundred items.
  const live = await s.client.createSession({ serverId: 'gw', subject: 'slow-reader', attributes: { pad: 'p'.repeat(1000) } });
  const raw = new SessionServiceClient(s.address, credentials.createInsecure());
  t.teardown(() => raw.close());
  const call = raw.validateSessionStream(new Metadata());
  const answered = new Map<number, boolean>();
  let twice = 0;
  call.on('data', (r: ValidateSessionStreamResponse) => {
    for (const a of r.answers) {
      if (answered.has(a.correlationId)) twice++;
      answered.set(a.correlationId, a.valid);
    }
  });
  const ended = new Promise<ServiceError | undefined>((resolve) => {
    call.on('error', (err: ServiceError) => resolve(err));
    call.on('end', () => resolve(undefined));
  });
  call.pause();

  // Writes until the stream stays backed up: a server that went on reading
  // (and buffering answers nobody reads) would drain it again and again.
  const PER_MESSAGE = 100;
  const MAX_ITEMS = 100_000;
  const drained = () => new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      call.off('drain', onDrain);
      resolve(false);
    }, 1500);
    const onDrain = () => {
      clearTimeout(timer);
      resolve(true);
    };
    call.once('drain', onDrain);
  });
  let sent = 0;
  let stalled = false;
  while (!stalled && sent < MAX_ITEMS) {
    const items = Array.from({ length: PER_MESSAGE }, (_, i) => item(sent + i, live.token));
    sent += PER_MESSAGE;
    if (!call.write({ correlationId: 0, token: '', touch: false, items })) stalled = !(await drained());
  }
  t.true(stalled, `the stream never stayed backed up: ${sent} items sent while no answer was read`);
  t.is(answered.size, 0, 'nothing was read while paused');
  // A loaded machine may still be working through what it read: wait until
  // the server's count of messages taken holds for a second. A server that
  // went on reading would take every message sent, and drain the stream.
  let drainedLater = false;
  call.once('drain', () => (drainedLater = true));
  let readAtStall = await serverRead();
  let settled = false;
  for (let waited = 0; waited < 20_000 && !settled; waited += 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await serverRead();
    settled = now === readAtStall;
    readAtStall = now;
  }
  t.true(settled, `the server went on taking messages while its answers were not read (${readAtStall} taken)`);
  t.false(drainedLater, 'the stream stays backed up while no answer is read');
  t.true(readAtStall < sent / PER_MESSAGE, `the server stopped with messages still waiting: it read ${readAtStall} of ${sent / PER_MESSAGE}`);
  t.log(`backed up after ${sent / PER_MESSAGE} messages of ${PER_MESSAGE} items; the server had read ${readAtStall}`);

  // The server still serves everyone else meanwhile.
  const other = await s.client.validateSession(live.token);
  t.true(other.valid);

  call.resume();
  call.end();
  t.is(await ended, undefined, 'the stream ends with OK');
  t.is(twice, 0, 'no item answered twice');
  t.is(answered.size, sent, 'every item sent was answered');
  t.true([...answered.values()].every(Boolean), 'every answer is valid');
});

test('small validations written without end: the server reads only a few turns ahead of what it has answered, and stops once its answers back up', async (t) => {
  const s = await server(t, { SESSIOND_METRICS_LISTEN: '127.0.0.1:0' });
  const counts = async () => {
    const text = await scrape(s.app.metricsPort!);
    const labels = { grpc_service: 'sessions.v1.SessionService', grpc_method: 'ValidateSessionStream' };
    return { read: (await value(text, 'grpc_server_msg_received_total', labels)) ?? 0, written: (await value(text, 'grpc_server_msg_sent_total', labels)) ?? 0 };
  };
  // Raw HTTP/2, so that thousands of messages arrive in each DATA frame, as
  // fast as the server lets them in: grpc-js's client hands over one message
  // at a time, slower than the server validates them.
  const session = http2.connect(`http://${s.address}`);
  session.on('error', () => undefined);
  t.teardown(() => session.close());
  const req = session.request({ ':method': 'POST', ':path': `${S}ValidateSessionStream`, 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  req.pause();
  // Messages of one validation of an unknown token: tiny requests and tiny
  // answers, so thousands fit the windows before the answers back up. A server
  // that read whatever arrived would hold all of them in memory.
  const SENT = 20_000;
  const body = Buffer.concat(Array.from({ length: SENT }, (_, i) =>
    frame(ValidateSessionStreamRequest.encode({ correlationId: i + 1, token: `unknown-${i}`, touch: false, items: [] }).finish())));
  req.write(body);

  let last = await counts();
  let settled = false;
  for (let waited = 0; waited < 30_000 && !settled; waited += 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await counts();
    settled = now.read === last.read && now.written === last.written;
    last = now;
  }
  t.true(settled, `the server went on reading or writing while nothing was read: ${JSON.stringify(last)}`);
  t.true(last.read < SENT / 2, `the server read ${last.read} of ${SENT} messages while their answers were not read`);
  // Read but not answered: the validations waiting for their turn (64) and
  // the few grpc-js holds for a paused stream (16).
  t.true(last.read - last.written <= 64 + 16 + 1, `${last.read - last.written} messages read ahead of the answers (${JSON.stringify(last)})`);
  t.log(`of ${SENT} sent: ${last.read} read, ${last.written} answered, while the client read nothing`);

  // Once the client reads, the rest goes through, each answered once.
  const answered = new Set<number>();
  let twice = 0;
  let pending = Buffer.alloc(0);
  req.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
      const len = pending.readUInt32BE(1);
      const id = ValidateSessionStreamResponse.decode(pending.subarray(5, 5 + len)).correlationId;
      if (answered.has(id)) twice++;
      answered.add(id);
      pending = pending.subarray(5 + len);
    }
  });
  const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => req.on('trailers', resolve));
  req.end();
  req.resume();
  t.is((await trailers)['grpc-status'], '0', 'the stream ends with OK');
  t.is(twice, 0, 'no message answered twice');
  t.is(answered.size, SENT, 'every message was answered once the client read again');
});
