import type { ClientDuplexStream, Metadata } from '@grpc/grpc-js';
import type {
  ValidateSessionStreamAnswer, ValidateSessionStreamItem, ValidateSessionStreamRequest, ValidateSessionStreamResponse,
} from '../../generated/sessions/v1/session_service';
import { BATCH_MAX_HEADER } from '../shared/stream-protocol';

/**
 * One validation's answer: `valid`, `session` (when valid), `reason` (when
 * not), or `errorCode` and `errorMessage` for a request the server could not
 * answer (an empty or oversized token, storage unavailable...).
 */
export type StreamAnswer = ValidateSessionStreamAnswer;

export interface ValidateOptions {
  /** Aborting rejects the validation with the signal's reason; its answer, if one comes, is dropped. */
  signal?: AbortSignal;
}

/** Items per message this client sends at most, whatever more the server would take. */
const CLIENT_BATCH_MAX = 256;

/** A validation not answered yet; also the item sent for it. */
interface Pending extends ValidateSessionStreamItem {
  resolve(a: StreamAnswer): void;
  reject(e: unknown): void;
}

/**
 * Validations multiplexed over one ValidateSessionStream, answers matched by
 * correlation id. Every message costs the same on both sides whatever it
 * carries, so the validations asked for in one event-loop turn go out as one
 * message (CLIENT_BATCH_MAX items at most), once the server's headers say it
 * reads batches; until then, and with a server that predates batches, each
 * goes in a message of its own.
 */
export class StreamValidator {
  private sent = 0;
  private nextId = 1;
  private failure: unknown;
  private closed = false;
  /** 0 until the server's response headers give its limit. */
  private batchMax = 0;
  private backedUp = false;
  private flushScheduled = false;
  private queue: Pending[] = [];
  private readonly pending = new Map<number, Pending>();
  // The promise executor is shared: it leaves resolve and reject here, so a
  // validation costs no closure of its own.
  private resolveNext!: (a: StreamAnswer) => void;
  private rejectNext!: (e: unknown) => void;
  private readonly capture = (resolve: (a: StreamAnswer) => void, reject: (e: unknown) => void) => {
    this.resolveNext = resolve;
    this.rejectNext = reject;
  };
  private readonly flushSoon = () => {
    this.flushScheduled = false;
    this.flush();
  };
  private readonly onDrain = () => {
    this.backedUp = false;
    this.flush();
  };

  constructor(private readonly stream: ClientDuplexStream<ValidateSessionStreamRequest, ValidateSessionStreamResponse>) {
    stream.on('metadata', (md: Metadata) => {
      const max = Number(md.get(BATCH_MAX_HEADER)[0]);
      if (Number.isInteger(max) && max >= 1) this.batchMax = Math.min(CLIENT_BATCH_MAX, max);
    });
    stream.on('data', (r: ValidateSessionStreamResponse) => {
      const answers = r.answers;
      if (answers.length === 0) return this.settle(r);
      for (let i = 0; i < answers.length; i++) this.settle(answers[i]!);
    });
    stream.on('error', (err: Error) => this.failAll(err));
    stream.on('end', () => this.failAll(new Error('validation stream ended')));
  }

  /** Request messages written so far: validations per message tell how well batching works. */
  get messagesSent(): number {
    return this.sent;
  }

  /**
   * Resolves with the answer; a malformed request resolves with `errorCode`
   * set. Rejects only when the stream itself fails or ends first, after
   * close() or cancel(), or when `signal` aborts.
   */
  validate(token: string, touch = false, opts?: ValidateOptions): Promise<StreamAnswer> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('the validator is closed'));
    if (opts?.signal?.aborted) return Promise.reject(opts.signal.reason);
    const promise = new Promise<StreamAnswer>(this.capture);
    const p: Pending = { correlationId: this.nextId++, token, touch, resolve: this.resolveNext, reject: this.rejectNext };
    this.pending.set(p.correlationId, p);
    if (opts?.signal) this.abortWith(p, opts.signal);
    if (this.batchMax === 0) {
      this.write({ correlationId: p.correlationId, token, touch, items: [] });
    } else {
      this.queue.push(p);
      if (this.queue.length >= this.batchMax) this.flush();
      else if (!this.flushScheduled) {
        // Not a microtask or nextTick: a gateway asks for each validation
        // from its own socket callback, and setImmediate runs after every
        // callback of this turn's poll phase has had its say.
        this.flushScheduled = true;
        setImmediate(this.flushSoon);
      }
    }
    return promise;
  }

  /** Half-closes the stream; validations already asked for are sent, and their answers delivered, first. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.backedUp = false;
    this.flush();
    this.stream.end();
  }

  /** Cancels the stream: every validation not answered yet rejects with CANCELLED. */
  cancel(): void {
    this.closed = true;
    this.queue = [];
    this.stream.cancel();
  }

  private flush(): void {
    while (this.queue.length > 0 && !this.backedUp && this.failure === undefined) {
      const items = this.queue.length <= this.batchMax ? this.queue : this.queue.splice(0, this.batchMax);
      if (items === this.queue) this.queue = [];
      this.write({ correlationId: 0, token: '', touch: false, items });
    }
  }

  private write(req: ValidateSessionStreamRequest): void {
    this.sent++;
    if (!this.stream.write(req) && !this.backedUp) {
      // grpc-js would buffer without bound; holding the queue here instead
      // also lets the next message carry more.
      this.backedUp = true;
      this.stream.once('drain', this.onDrain);
    }
  }

  private settle(a: StreamAnswer): void {
    const p = this.pending.get(a.correlationId);
    if (!p) return;
    this.pending.delete(a.correlationId);
    p.resolve(a);
  }

  private failAll(err: unknown): void {
    if (this.failure === undefined) this.failure = err;
    this.queue = [];
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(err);
  }

  private abortWith(p: Pending, signal: AbortSignal): void {
    const { resolve, reject } = p;
    const abort = () => {
      if (this.pending.get(p.correlationId) !== p) return;
      this.pending.delete(p.correlationId);
      const queued = this.queue.indexOf(p);
      if (queued >= 0) this.queue.splice(queued, 1);
      reject(signal.reason);
    };
    // A signal may outlive many validations (a request's, a shutdown's): each
    // settled one takes its listener away.
    p.resolve = (a) => {
      signal.removeEventListener('abort', abort);
      resolve(a);
    };
    p.reject = (e) => {
      signal.removeEventListener('abort', abort);
      reject(e);
    };
    signal.addEventListener('abort', abort, { once: true });
  }
}
