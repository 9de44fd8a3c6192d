import test, { type ExecutionContext } from 'ava';
import { status } from '@grpc/grpc-js';
import http2 from 'node:http2';
import { ValidateSessionStreamRequest, ValidateSessionStreamResponse, type ValidateSessionStreamItem } from '../../generated/sessions/v1/session_service';
import { BATCH_MAX_HEADER, MAX_BATCH_ITEMS } from '../../src/shared/stream-protocol';
import { StrictValidateSessionStreamRequest } from '../../src/transport/stream-request';
import { frame, RawGrpc } from '../helpers/raw-grpc';
import { startTestServer, type TestServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';

/*
 * ValidateSessionStream messages over the item limit are refused before the
 * generated decoder makes an object of each item: a message of empty items
 * (two bytes each) within --max-message-bytes would otherwise be hundreds of
 * thousands of objects. The generated decoder and the framing walk are
 * wrapped, in this process, to see which messages reached them. Serial: the
 * wrappers see every stream of the process.
 */

const PATH = '/sessions.v1.SessionService/ValidateSessionStream';
const REFUSED = `items: more than ${MAX_BATCH_ITEMS} in one message; the limit is ${MAX_BATCH_ITEMS} (response header ${BATCH_MAX_HEADER})`;

interface Counts {
  decoded: number;
  framed: number;
}

/** Counts the generated decoder's runs and the framing walks until the test ends. */
function countDecoding(t: ExecutionContext): Counts {
  const counts: Counts = { decoded: 0, framed: 0 };
  const decode = ValidateSessionStreamRequest.decode;
  const checkFraming = StrictValidateSessionStreamRequest.checkFraming;
  ValidateSessionStreamRequest.decode = (...args) => {
    counts.decoded++;
    return decode(...args);
  };
  StrictValidateSessionStreamRequest.checkFraming = (reader) => {
    counts.framed++;
    checkFraming(reader);
  };
  t.teardown(() => {
    ValidateSessionStreamRequest.decode = decode;
    StrictValidateSessionStreamRequest.checkFraming = checkFraming;
  });
  return counts;
}

async function server(t: ExecutionContext): Promise<TestServer> {
  const s = await startTestServer();
  t.teardown(() => s.close());
  return s;
}

/** The largest message --max-message-bytes lets in (1 MiB by default), all empty items: a tag and a zero length each. */
function emptyItems(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 2) b[i] = 0x22;
  return b;
}

const batch = (first: number, n: number, token = 'never-issued'): Buffer => frame(ValidateSessionStreamRequest.encode({
  correlationId: 0, token: '', touch: false,
  items: Array.from({ length: n }, (_, i): ValidateSessionStreamItem => ({ correlationId: first + i, token, touch: false })),
}).finish());

/** Correlation ids of every batched answer in `messages`. */
const answered = (messages: Buffer[]) => messages.flatMap((m) => ValidateSessionStreamResponse.decode(m).answers.map((a) => a.correlationId));

test.serial('a max-size message of empty items is refused with INVALID_ARGUMENT before the generated decoder runs; 1000 items are decoded and answered', async (t) => {
  const s = await server(t);
  const counts = countDecoding(t);
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());

  const huge = emptyItems(s.config.server.maxMessageBytes);
  t.is(huge.length / 2, 524_288, 'half a million items in the default 1 MiB');
  const refused = await raw.call(PATH, frame(huge));
  t.is(refused.code, status.INVALID_ARGUMENT, refused.details);
  t.is(refused.details, REFUSED);
  t.is(refused.messages.length, 0);
  t.is(counts.decoded, 0, 'the generated decoder never ran');
  t.is(counts.framed, 1);

  // One past the limit is refused the same way; exactly at it is decoded once and answered in full.
  const over = await raw.call(PATH, batch(1, MAX_BATCH_ITEMS + 1));
  t.is(over.code, status.INVALID_ARGUMENT);
  t.is(over.details, REFUSED);
  t.is(counts.decoded, 0);
  const at = await raw.call(PATH, batch(1, MAX_BATCH_ITEMS));
  t.is(at.code, status.OK, at.details);
  t.is(counts.decoded, 1, 'the message at the limit went through the generated decoder');
  t.deepEqual(answered(at.messages).sort((a, b) => a - b), Array.from({ length: MAX_BATCH_ITEMS }, (_, i) => i + 1));

  // The server goes on serving: a new stream on the same connection, and unary calls.
  const live = await s.client.createSession({ serverId: 'gw' });
  const after = await raw.call(PATH, batch(7, 2, live.token));
  t.is(after.code, status.OK, after.details);
  t.deepEqual(answered(after.messages).sort(), [7, 8]);
  t.true(ValidateSessionStreamResponse.decode(after.messages[0]!).answers.every((a) => a.valid));
  t.true((await s.client.validateSession(live.token)).valid);
});

test.serial('the messages before a refused one are answered; nothing behind it is read, not even a paused stream\'s read-ahead', async (t) => {
  const s = await server(t);
  const counts = countDecoding(t);
  const session = http2.connect(`http://${s.address}`);
  session.on('error', () => undefined);
  t.teardown(() => session.close());
  const req = session.request({ ':method': 'POST', ':path': PATH, 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  const data: Buffer[] = [];
  req.on('data', (c: Buffer) => data.push(c));
  const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => req.on('trailers', resolve));

  // Three full batches: each pauses the stream (a batch is more than the
  // validations it may hold queued), so the refused message waits read
  // ahead behind them, as do the batches written after it.
  const AHEAD = 3;
  req.write(Buffer.concat([...Array.from({ length: AHEAD }, (_, k) => batch(k * MAX_BATCH_ITEMS + 1, MAX_BATCH_ITEMS)), frame(emptyItems(64 * 1024))]));
  await waitFor(() => counts.framed === AHEAD + 1, 'the server to walk the refused message');
  // Later frames: only a server that went on reading would see these.
  const BEHIND = 20;
  for (let k = 0; k < BEHIND; k++) req.write(batch(1_000_000 + k * MAX_BATCH_ITEMS, MAX_BATCH_ITEMS));

  const end = await trailers;
  req.close();
  t.is(end['grpc-status'], String(status.INVALID_ARGUMENT));
  t.is(decodeURIComponent(String(end['grpc-message'])), REFUSED);
  const ids = answered(splitFrames(Buffer.concat(data)));
  t.is(ids.length, AHEAD * MAX_BATCH_ITEMS, 'every item of the batches before the refused message was answered');
  t.true(ids.every((id) => id <= AHEAD * MAX_BATCH_ITEMS), 'none of those behind it');
  t.is(counts.decoded, AHEAD, 'only the batches before it were decoded');
  t.is(counts.framed, AHEAD + 1, 'nothing behind it was read at all');
  t.true((await s.client.validateSession('never-issued')).valid === false, 'the server still answers');
});

function splitFrames(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let pos = 0; pos + 5 <= buf.length; pos += 5 + buf.readUInt32BE(pos + 1)) out.push(buf.subarray(pos + 5, pos + 5 + buf.readUInt32BE(pos + 1)));
  return out;
}
