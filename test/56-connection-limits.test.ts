import test, { type ExecutionContext } from 'ava';
import { credentials, Metadata, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import http2 from 'node:http2';
import { connect as tcpConnect, type Socket } from 'node:net';
import {
  SessionServiceClient, ValidateSessionStreamRequest, ValidateSessionStreamResponse,
} from '../generated/sessions/v1/session_service';
import { loadConfig } from '../src/server/config';
import { serverChannelOptions } from '../src/transport/server';
import { OpenStreams } from '../src/transport/open-streams';
import { frame } from './helpers/raw-grpc';
import { startTestServer, type TestServer } from './helpers/server';
import { waitFor } from './helpers/wait';

/*
 * The per-connection limits from configuration, through grpc-js, against a
 * real server: concurrent streams (the server's SETTINGS, and what it does
 * with a client that ignores them), idle connections closed with GOAWAY,
 * and connections asked to go (GOAWAY) at their age, with a grace for the
 * calls in flight. Serial: the stream counter below sees every stream of the
 * process, and the idle and age timers want a quiet event loop.
 */

const PATH = '/sessions.v1.SessionService/ValidateSessionStream';

async function server(t: ExecutionContext, env: Record<string, string>): Promise<TestServer> {
  const s = await startTestServer({ env });
  t.teardown(() => s.close());
  return s;
}

/** ValidateSessionStreams running on the server now, and the most seen at once, until the test ends. */
function countRunningStreams(t: ExecutionContext): { running: number; most: number; started: number } {
  const counts = { running: 0, most: 0, started: 0 };
  const add = OpenStreams.prototype.add;
  OpenStreams.prototype.add = function (this: OpenStreams, stream: { close(): void; recheck(): void }) {
    counts.started++;
    counts.running++;
    counts.most = Math.max(counts.most, counts.running);
    const forget = add.call(this, stream);
    let forgotten = false;
    return () => {
      if (!forgotten) counts.running--;
      forgotten = true;
      return forget();
    };
  };
  t.teardown(() => {
    OpenStreams.prototype.add = add;
  });
  return counts;
}

const single = (correlationId: number) => frame(ValidateSessionStreamRequest.encode({ correlationId, token: 'never-issued', touch: false, items: [] }).finish());

/** A ValidateSessionStream over a raw HTTP/2 session: one validation at a time, answered by correlation id. */
class RawStream {
  readonly req: http2.ClientHttp2Stream;
  readonly answers = new Set<number>();
  trailers: http2.IncomingHttpHeaders | undefined;
  closed = false;
  private pending = Buffer.alloc(0);

  constructor(session: http2.ClientHttp2Session) {
    this.req = session.request({ ':method': 'POST', ':path': PATH, 'content-type': 'application/grpc', te: 'trailers' });
    this.req.on('error', () => undefined);
    this.req.on('data', (chunk: Buffer) => {
      this.pending = Buffer.concat([this.pending, chunk]);
      while (this.pending.length >= 5 && this.pending.length >= 5 + this.pending.readUInt32BE(1)) {
        const len = this.pending.readUInt32BE(1);
        this.answers.add(ValidateSessionStreamResponse.decode(this.pending.subarray(5, 5 + len)).correlationId);
        this.pending = this.pending.subarray(5 + len);
      }
    });
    this.req.on('trailers', (h) => (this.trailers = h));
    this.req.on('close', () => (this.closed = true));
  }

  /** Sends one validation and waits for its answer. */
  async roundTrip(id: number): Promise<void> {
    this.req.write(single(id));
    await waitFor(() => this.answers.has(id) || this.closed, `the answer to ${id}`);
    if (!this.answers.has(id)) throw new Error(`the stream closed before answering ${id}`);
  }

  /** Half-closes and waits for the stream to close; resolves with its grpc-status ('' without one). */
  async end(): Promise<string> {
    this.req.end();
    await waitFor(() => this.closed, 'the stream to close');
    return String(this.trailers?.['grpc-status'] ?? '');
  }
}

interface Goaway {
  errorCode: number;
  lastStreamID: number;
  opaqueData: string;
}

/** A raw HTTP/2 session to `address` that records the first GOAWAY it is sent, if any. */
function rawSession(t: ExecutionContext, address: string): { session: http2.ClientHttp2Session; goaway: Goaway | undefined; closed: boolean } {
  const session = http2.connect(`http://${address}`);
  const state = { session, goaway: undefined as Goaway | undefined, closed: false };
  session.on('error', () => undefined);
  // A graceful close sends a second GOAWAY, with the last stream id actually
  // opened, once the streams are done.
  session.on('goaway', (errorCode, lastStreamID, opaque) => (state.goaway ??= { errorCode, lastStreamID, opaqueData: opaque?.toString() ?? '' }));
  session.on('close', () => (state.closed = true));
  t.teardown(() => session.destroy());
  return state;
}

test.serial('channel options: every limit from configuration, "never" left to grpc-js where it means never, and megabytes as Node counts them', (t) => {
  const defaults = serverChannelOptions(loadConfig([], {}).config.server);
  t.like(defaults, {
    'grpc.max_concurrent_streams': 128,
    // 16 MiB is 16.78 of Node's megabytes of 10^6 bytes: rounded up.
    'grpc-node.max_session_memory': 17,
    'grpc.max_connection_idle_ms': 30 * 60_000,
    'grpc.max_connection_age_grace_ms': 5 * 60_000,
    'grpc.max_receive_message_length': 1024 * 1024,
    'grpc.max_send_message_length': 1024 * 1024,
  });
  t.false('grpc.max_connection_age_ms' in defaults, 'no age limit by default: grpc-js would GOAWAY at once for 0');

  const set = serverChannelOptions(loadConfig([], {
    SESSIOND_MAX_CONNECTION_IDLE: '0', SESSIOND_MAX_CONNECTION_AGE: '1h', SESSIOND_MAX_CONNECTION_AGE_GRACE: '0',
    SESSIOND_MAX_CONNECTION_MEMORY: '1MiB', SESSIOND_MAX_CONCURRENT_STREAMS: '2',
  }).config.server);
  t.false('grpc.max_connection_idle_ms' in set, 'idle 0 (never): left out, as grpc-js would close every connection at once for 0');
  t.like(set, { 'grpc.max_connection_age_ms': 3_600_000, 'grpc.max_connection_age_grace_ms': 0, 'grpc-node.max_session_memory': 2, 'grpc.max_concurrent_streams': 2 });

  // Beyond a Node timer's range a timer fires at once. The configuration refuses such values (test
  // 14), so the longest it accepts stays in range, the age with grpc-js's jitter too.
  const longest = loadConfig([], { SESSIOND_MAX_CONNECTION_IDLE: '24d', SESSIOND_MAX_CONNECTION_AGE: '22d', SESSIOND_MAX_CONNECTION_AGE_GRACE: '24d' }).config.server;
  const long = serverChannelOptions(longest);
  t.is(long['grpc.max_connection_idle_ms'], 24 * 86_400_000);
  t.is(long['grpc.max_connection_age_grace_ms'], 24 * 86_400_000);
  t.true(long['grpc.max_connection_age_ms']! * 1.1 <= 2 ** 31 - 1, String(long['grpc.max_connection_age_ms']));
  // Limits handed to the transport some other way are still kept in range: grpc-js's own "never".
  const beyond = serverChannelOptions({ ...longest, maxConnectionIdleMs: 30 * 86_400_000, maxConnectionAgeMs: 30 * 86_400_000, maxConnectionAgeGraceMs: 30 * 86_400_000 });
  t.is(beyond['grpc.max_connection_idle_ms'], 2 ** 31 - 1);
  t.is(beyond['grpc.max_connection_age_grace_ms'], 2 ** 31 - 1);
  t.true(beyond['grpc.max_connection_age_ms']! * 1.1 <= 2 ** 31 - 1, String(beyond['grpc.max_connection_age_ms']));
});

test.serial('--max-concurrent-streams 2: three streams on one connection, never more than two run at once; the third starts once one ends', async (t) => {
  const s = await server(t, { SESSIOND_MAX_CONCURRENT_STREAMS: '2' });
  const counts = countRunningStreams(t);

  // The limit is in the server's SETTINGS.
  const raw = rawSession(t, s.address);
  await new Promise<void>((resolve) => raw.session.once('remoteSettings', () => resolve()));
  t.is(raw.session.remoteSettings.maxConcurrentStreams, 2);
  raw.session.close();

  // Three streams of one generated client share its one connection.
  const client = new SessionServiceClient(s.address, credentials.createInsecure());
  t.teardown(() => client.close());
  const streams = [0, 1, 2].map((i) => {
    const call: ClientDuplexStream<ValidateSessionStreamRequest, ValidateSessionStreamResponse> = client.validateSessionStream(new Metadata());
    const st = { call, answers: new Set<number>(), headers: false, status: undefined as number | undefined };
    call.on('metadata', () => (st.headers = true));
    call.on('data', (r: ValidateSessionStreamResponse) => st.answers.add(r.correlationId));
    call.on('status', (x: { code: number }) => (st.status = x.code));
    call.on('error', (err: ServiceError) => (st.status = err.code));
    call.write({ correlationId: i * 10 + 1, token: 'never-issued', touch: false, items: [] });
    return st;
  });
  const [a, b, c] = streams as [typeof streams[0], typeof streams[0], typeof streams[0]];
  await waitFor(() => a.answers.has(1) && b.answers.has(11), 'the first two streams to be answered');
  // An answer to a message written after all three streams were opened: the
  // server has read everything the client sent before it, the third
  // stream's headers included, had the client sent them.
  a.call.write({ correlationId: 2, token: 'never-issued', touch: false, items: [] });
  await waitFor(() => a.answers.has(2), 'the second answer on the first stream');
  t.is(counts.started, 2, 'the server started two streams');
  t.false(c.headers, 'the third stream has not started');
  t.is(c.answers.size, 0);

  a.call.end();
  await waitFor(() => a.status !== undefined, 'the first stream to end');
  t.is(a.status, status.OK);
  await waitFor(() => c.answers.has(21), 'the third stream to be answered once the first ended');
  t.true(c.headers);
  for (const st of [b, c]) st.call.end();
  await waitFor(() => b.status !== undefined && c.status !== undefined, 'the other streams to end');
  t.is(b.status, status.OK);
  t.is(c.status, status.OK);
  t.is(counts.started, 3);
  t.is(counts.most, 2, 'never more than two at once');
  t.is(counts.running, 0);
});

// ------------------------------------------------------ HTTP/2 by hand, for a client that ignores SETTINGS

const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7 } as const;
const END_HEADERS = 0x4;
const ACK = 0x1;
const REFUSED_STREAM = 0x7;

function h2frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** A header block of literals without indexing or Huffman coding (RFC 7541 6.2.2): no HPACK state needed. */
function headerBlock(headers: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    if (name.length > 126 || value.length > 126) throw new Error('header too long for a one-byte length');
    parts.push(Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value));
  }
  return Buffer.concat(parts);
}

interface ServerFrames {
  socket: Socket;
  frames: { type: number; flags: number; streamId: number; payload: Buffer }[];
}

function readFrames(socket: Socket): ServerFrames {
  const out: ServerFrames = { socket, frames: [] };
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
      const len = buf.readUIntBE(0, 3);
      out.frames.push({ type: buf[3]!, flags: buf[4]!, streamId: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) });
      buf = buf.subarray(9 + len);
    }
  });
  return out;
}

test.serial('a client that ignores the stream limit gets its third stream refused (RST_STREAM REFUSED_STREAM); the server still runs only two', async (t) => {
  const s = await server(t, { SESSIOND_MAX_CONCURRENT_STREAMS: '2' });
  const counts = countRunningStreams(t);
  const socket = tcpConnect({ host: '127.0.0.1', port: s.app.port });
  socket.on('error', () => undefined);
  t.teardown(() => socket.destroy());
  const seen = readFrames(socket);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));

  // Everything at once, before the server's SETTINGS could be read: three
  // streams, each with one validation and left open.
  const open = (streamId: number) => [
    h2frame(FRAME.HEADERS, END_HEADERS, streamId, headerBlock([
      [':method', 'POST'], [':scheme', 'http'], [':path', PATH], [':authority', s.address], ['content-type', 'application/grpc'], ['te', 'trailers'],
    ])),
    h2frame(FRAME.DATA, 0, streamId, single(streamId)),
  ];
  socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), h2frame(FRAME.SETTINGS, 0, 0), ...open(1), ...open(3), ...open(5)]));
  await waitFor(() => seen.frames.some((f) => f.type === FRAME.SETTINGS && (f.flags & ACK) === 0), 'the server\'s SETTINGS');
  socket.write(h2frame(FRAME.SETTINGS, ACK, 0));

  const onStream = (id: number, type: number) => seen.frames.some((f) => f.streamId === id && f.type === type);
  await waitFor(() => onStream(5, FRAME.RST_STREAM) && onStream(1, FRAME.DATA) && onStream(3, FRAME.DATA), 'the third stream refused and the first two answered');
  const reset = seen.frames.find((f) => f.streamId === 5 && f.type === FRAME.RST_STREAM)!;
  t.is(reset.payload.readUInt32BE(0), REFUSED_STREAM);
  t.false(onStream(5, FRAME.HEADERS), 'no response on the refused stream');
  t.is(counts.started, 2);
  t.is(counts.most, 2);
  t.false(seen.frames.some((f) => f.type === FRAME.GOAWAY), 'the connection stays up');
  // And the server serves everyone else meanwhile.
  t.false((await s.client.validateSession('never-issued')).valid);
});

test.serial('--max-connection-idle: an idle connection gets GOAWAY; one with a stream open does not, until the stream ends', async (t) => {
  const s = await server(t, { SESSIOND_MAX_CONNECTION_IDLE: '400ms' });
  const busy = rawSession(t, s.address);
  const stream = new RawStream(busy.session);
  await stream.roundTrip(1);
  // Connected after the busy one: its idle timer, of the same length, fires
  // after the busy connection's did (Node runs timers of one duration in the
  // order they were set), and grpc-js does not set that one again while a
  // stream is open.
  const idle = rawSession(t, s.address);
  await waitFor(() => idle.goaway !== undefined, 'GOAWAY on the idle connection');
  t.is(idle.goaway!.errorCode, http2.constants.NGHTTP2_NO_ERROR);
  await waitFor(() => idle.closed, 'the idle connection to close');

  t.is(busy.goaway, undefined, 'no GOAWAY while a stream is open');
  await stream.roundTrip(2);
  t.is(await stream.end(), String(status.OK));
  await waitFor(() => busy.goaway !== undefined, 'GOAWAY once the last stream ended and the connection sat idle');
  t.is(busy.goaway!.errorCode, http2.constants.NGHTTP2_NO_ERROR);

  // The generated client reconnects by itself after an idle close.
  const live = await s.client.createSession({ serverId: 'gw' });
  t.true((await s.client.validateSession(live.token)).valid);
});

test.serial('--max-connection-age: GOAWAY at the age; a call in flight goes on and finishes within the grace, and the connection closes after it', async (t) => {
  const s = await server(t, { SESSIOND_MAX_CONNECTION_AGE: '400ms', SESSIOND_MAX_CONNECTION_AGE_GRACE: '1m' });
  const conn = rawSession(t, s.address);
  const stream = new RawStream(conn.session);
  await stream.roundTrip(1);
  await waitFor(() => conn.goaway !== undefined, 'GOAWAY at the connection age');
  // The last stream id 2^31-1: every stream the client opened may finish.
  t.deepEqual(conn.goaway, { errorCode: http2.constants.NGHTTP2_NO_ERROR, lastStreamID: 2 ** 31 - 1, opaqueData: 'max_age' });
  t.false(conn.closed);
  await stream.roundTrip(2);
  t.is(await stream.end(), String(status.OK), 'the call in flight finished with OK');
  await waitFor(() => conn.closed, 'the connection to close once its last call ended');
  t.deepEqual([...stream.answers].sort(), [1, 2]);
});

test.serial('--max-connection-age-grace: a call still open when the grace ends is cut, and the connection closed', async (t) => {
  const s = await server(t, { SESSIOND_MAX_CONNECTION_AGE: '400ms', SESSIOND_MAX_CONNECTION_AGE_GRACE: '300ms' });
  const conn = rawSession(t, s.address);
  const stream = new RawStream(conn.session);
  await stream.roundTrip(1);
  await waitFor(() => conn.goaway !== undefined, 'GOAWAY at the connection age');
  // The stream is left open: the server destroys the connection at the end of the grace.
  await waitFor(() => conn.closed && stream.closed, 'the connection to be closed by the server');
  t.is(stream.trailers, undefined, 'the call never got a status');
  t.false((await s.client.validateSession('never-issued')).valid, 'the server serves new connections');
});
