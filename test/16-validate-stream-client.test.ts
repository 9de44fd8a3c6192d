import test, { type ExecutionContext } from 'ava';
import { Metadata, Server, ServerCredentials, status, type ServerDuplexStream, type ServiceError, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { InvalidReason, SessionServiceService, type ValidateSessionStreamAnswer, type ValidateSessionStreamItem, ValidateSessionStreamRequest, ValidateSessionStreamResponse } from '../generated/sessions/v1/session_service';
import { SessiondClient } from '../src/client';
import { BATCH_MAX_HEADER } from '../src/shared/stream-protocol';

/*
 * The TypeScript client's StreamValidator against stand-in servers that
 * answer late, never, out of order, or the way a server from before batches
 * did: what it sends, and how its pending validations settle.
 */

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
