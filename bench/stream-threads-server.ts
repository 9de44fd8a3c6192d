/*
 * A measurement-only ValidateSessionStream server for the threads experiment
 * (bench/stream-threads.ts), not sessiond: the same request decoding (the
 * generated decoder), lookups (bench/stream-lookup.ts: sessiond's own
 * SessionManager, repository and answer encoders) and batched responses as
 * sessiond's stream, with the lookups either on the main thread, a batch per
 * slice of an event-loop turn as sessiond does them (src/transport/turns.ts),
 * or handed to STREAM_THREADS worker threads by postMessage, each with its
 * own read-only connection to the file. What the experiment leaves out
 * (callers, metrics, touches, flow control) is the same in every mode, so the
 * modes compare with each other; sessiond's own stream is measured beside them.
 * Env: STREAM_DB (the database), STREAM_LISTEN, STREAM_THREADS (0 = main thread).
 */
import { Metadata, Server, ServerCredentials, status, type ServerDuplexStream } from '@grpc/grpc-js';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  SessionServiceService, type ValidateSessionStreamRequest, type ValidateSessionStreamResponse,
} from '../generated/sessions/v1/session_service';
import { BATCH_MAX_HEADER, MAX_BATCH_ITEMS } from '../src/shared/stream-protocol';
import { acceptPreEncoded, preEncoded } from '../src/transport/session-wire';
import { Turns } from '../src/transport/turns';
import { VALIDATIONS_PER_TURN } from '../src/transport/open-streams';
import { StreamLookup, type LookupBatch } from './stream-lookup';

type Call = ServerDuplexStream<ValidateSessionStreamRequest, ValidateSessionStreamResponse>;

const dbPath = process.env['STREAM_DB'] ?? '';
const threads = Number(process.env['STREAM_THREADS'] ?? '0');
const listen = process.env['STREAM_LISTEN'] ?? '127.0.0.1:0';

/** Where a batch's answers go: the main thread's lookups or a worker's, same bytes either way. */
type Lookups = (ids: number[], tokens: string[], answered: (bytes: Buffer) => void) => void;

function mainThreadLookups(): Lookups {
  const lookup = new StreamLookup(dbPath, true);
  const turns = new Turns(VALIDATIONS_PER_TURN);
  return (ids, tokens, answered) => turns.push(tokens.length, () => answered(lookup.answer(ids, tokens)));
}

function threadLookups(count: number): Lookups {
  // From the sources, the worker loads tsx's require hook first: a worker thread
  // does not inherit the loader that --import tsx registered on the main one.
  const fromSources = __filename.endsWith('.ts');
  const file = join(__dirname, `stream-lookup-worker${fromSources ? '.ts' : '.js'}`);
  const entry = fromSources ? `require('tsx/cjs'); require(${JSON.stringify(file)});` : file;
  const waiting = new Map<number, (bytes: Buffer) => void>();
  const workers = Array.from({ length: count }, () => {
    const w = new Worker(entry, { eval: fromSources, workerData: { dbPath } });
    w.on('message', (m: { seq: number; bytes: Uint8Array }) => {
      const answered = waiting.get(m.seq)!;
      waiting.delete(m.seq);
      answered(Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength));
    });
    w.on('error', (err) => {
      process.stderr.write(`${JSON.stringify({ msg: 'lookup thread failed', err: String(err) })}\n`);
      process.exit(1);
    });
    return w;
  });
  let seq = 0;
  return (ids, tokens, answered) => {
    const batch: LookupBatch = { seq: seq++, ids, tokens };
    waiting.set(batch.seq, answered);
    workers[batch.seq % count]!.postMessage(batch);
  };
}

function handler(lookups: Lookups) {
  return (call: Call) => {
    const md = new Metadata();
    md.set(BATCH_MAX_HEADER, String(MAX_BATCH_ITEMS));
    call.sendMetadata(md);
    let pending = 0;
    let ended = false;
    const maybeEnd = () => ended && pending === 0 && call.end();
    call.on('data', (req: ValidateSessionStreamRequest) => {
      const items = req.items.length > 0 ? req.items : [{ correlationId: req.correlationId, token: req.token, touch: req.touch }];
      // A touch writes: the experiment's read-only connections cannot, and it answers nothing it cannot answer as sessiond would.
      if (items.some((i) => i.touch)) {
        call.emit('error', { code: status.UNIMPLEMENTED, details: 'the threads experiment validates without touch only' });
        return;
      }
      pending++;
      lookups(items.map((i) => i.correlationId), items.map((i) => i.token), (bytes) => {
        pending--;
        if (!call.cancelled) call.write(preEncoded<ValidateSessionStreamResponse>(bytes));
        maybeEnd();
      });
    });
    call.on('end', () => {
      ended = true;
      maybeEnd();
    });
    call.on('error', () => undefined);
  };
}

const server = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
const service = acceptPreEncoded({ validateSessionStream: SessionServiceService.validateSessionStream });
server.addService(service, { validateSessionStream: handler(threads > 0 ? threadLookups(threads) : mainThreadLookups()) });
server.bindAsync(listen, ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stderr.write(`${JSON.stringify({ msg: 'serving', address: `127.0.0.1:${port}`, threads })}\n`);
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
