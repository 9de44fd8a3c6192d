import test from 'ava';
import http2 from 'node:http2';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { SessionServiceClient, ValidateSessionStreamRequest, ValidateSessionStreamResponse } from '../generated/sessions/v1/session_service';
import { scrape, value } from './helpers/prometheus';
import { frame } from './helpers/raw-grpc';
import { S, item, server } from './helpers/validate-stream';

/*
 * ValidateSessionStream under a client that does not keep up: the server
 * stops reading a stream whose answers back up, serves other calls
 * meanwhile, and answers every item exactly once when the client reads again.
 */

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
