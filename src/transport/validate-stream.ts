import { Metadata, status, type handleBidiStreamingCall, type ServerDuplexStream } from '@grpc/grpc-js';
import { ItemLimitExceeded, tooManyItems } from './stream-request';
import {
  SessionServiceService, type ValidateSessionStreamAnswer, type ValidateSessionStreamItem, type ValidateSessionStreamRequest,
  type ValidateSessionStreamResponse,
} from '../../generated/sessions/v1/session_service';
import type { Principal } from '../domain/principals';
import type { SessionManager, ValidateResult } from '../domain/session-manager';
import type { Logger } from '../server/log';
import type { Authorizer } from './authorize';
import { StreamWriter } from './stream-writer';
import { answerOf, encodeAnswer, encodedAnswer, failedAnswer } from './stream-answers';
import { statusError, toServiceError } from './status';
import { BATCH_MAX_HEADER, MAX_BATCH_ITEMS } from '../shared/stream-protocol';
import { VALIDATIONS_PER_TURN, type OpenStreams } from './open-streams';
import type { Turns } from './turns';

/**
 * Validations a stream may have read but not yet done before it stops reading:
 * several turns' worth (see Turns), so that the server is not left without
 * work between the client's writes, and no more, so that a client that writes
 * without end is held back instead of filling the server's memory.
 *
 * Past this figure grpc-js still decodes a little ahead: the call's readable
 * side (object mode, highWaterMark 16) goes on asking for messages while
 * paused until it holds 16, and grpc-js reads the next DATA frame only when
 * asked for a message with none queued, but then decodes every message that
 * frame completes (at most SETTINGS_MAX_FRAME_SIZE bytes, 16 KiB in Node).
 * The rest waits undecoded under HTTP/2 flow control. A paused stream thus
 * holds, decoded, its queued validations, 16 messages and one frame's worth,
 * none over the item limit (the decoder refuses those undecoded, below); and
 * after a refused message grpc-js is asked for nothing more (request-decoding.ts).
 */
const MAX_QUEUED_VALIDATIONS = 4 * VALIDATIONS_PER_TURN;

type Call = ServerDuplexStream<ValidateSessionStreamRequest, ValidateSessionStreamResponse>;

/**
 * One stream's state. Messages wait in the shared Turns until their turn.
 * Answers to a batch collect in the StreamWriter and go out as one response
 * once the message's items are done (or sooner, at the response budget).
 * Answers that wait on storage (a touch's commit; every read on PostgreSQL)
 * go out together once the message's last one is in.
 */
class ValidationStream {
  private pending = 0;
  /** Validations carried by the messages read and waiting in the turns (a message counts at least one). */
  private queuedValidations = 0;
  private ended = false;
  private closed = false;
  /** Set once a message could not be answered: the stream ends with it when the answers still waiting are out. */
  private failure: { code: status; details: string } | undefined;
  private readonly writer: StreamWriter;
  private readonly forget: () => void;
  private readonly turns: Turns;

  constructor(
    private readonly call: Call,
    private caller: Principal,
    private readonly auth: Authorizer,
    private readonly sessions: SessionManager,
    private readonly log: Logger,
    budget: number,
    open: OpenStreams,
  ) {
    this.writer = new StreamWriter(call, log, budget, () => !this.closed, () => this.finish(), () => this.resumeReading());
    this.turns = open.turns;
    this.forget = open.add({ close: () => this.stopReading(), recheck: () => this.recheck() });
    const md = new Metadata();
    md.set(BATCH_MAX_HEADER, String(MAX_BATCH_ITEMS));
    call.sendMetadata(md);
    call.on('data', (req: ValidateSessionStreamRequest | ItemLimitExceeded) => this.enqueue(req));
    call.on('end', () => {
      this.ended = true;
      this.finish();
    });
    call.on('cancelled', () => this.forget());
    // A cancelled stream emits 'error' on some grpc-js paths; nothing to answer then.
    call.on('error', () => undefined);
  }

  /** A refused message waits its turn too: the messages read before it are answered first. */
  private enqueue(req: ValidateSessionStreamRequest | ItemLimitExceeded): void {
    const validations = req instanceof ItemLimitExceeded ? 1 : Math.max(1, req.items.length);
    this.queuedValidations += validations;
    if (this.queuedValidations >= MAX_QUEUED_VALIDATIONS) this.call.pause();
    this.turns.push(validations, () => this.take(req, validations));
  }

  private take(req: ValidateSessionStreamRequest | ItemLimitExceeded, validations: number): void {
    this.queuedValidations -= validations;
    // A stream that failed drops what it had read after the bad message; a
    // cancelled one has nobody to answer.
    if (this.closed || this.failure || this.call.cancelled) return;
    this.read(req);
    this.writer.flush();
    this.resumeReading();
    this.finish();
  }

  private resumeReading(): void {
    if (!this.ended && !this.writer.backedUp && this.queuedValidations < MAX_QUEUED_VALIDATIONS) this.call.resume();
  }

  private read(req: ValidateSessionStreamRequest | ItemLimitExceeded): void {
    if (req instanceof ItemLimitExceeded) return this.fail(req.message);
    if (req.items.length === 0) return this.readOne(req);
    // The decoder refuses such a message before decoding it; a decoder without
    // that check (a server not built by SafeDecodingServer) ends here, alike.
    if (req.items.length > MAX_BATCH_ITEMS) return this.fail(tooManyItems(String(req.items.length)));
    if (req.correlationId !== 0 || req.token !== '' || req.touch) {
      return this.fail('a message carries either one validation (correlation_id, token, touch) or items, not both');
    }
    const items = req.items;
    let next = 0;
    const later: Promise<Buffer>[] = [];
    try {
      // One read transaction for the whole batch (SessionManager.inSnapshot).
      this.sessions.inSnapshot(() => {
        for (; next < items.length; next++) {
          const waiting = this.validateItem(items[next]!);
          if (waiting) later.push(waiting);
        }
      });
    } catch (err) {
      // The snapshot itself failed to begin (validateItem answers its own
      // faults): every item not yet answered gets the error.
      for (; next < items.length; next++) this.push(encodeAnswer(failedAnswer(this.log, items[next]!.correlationId, err)));
    }
    if (later.length === 0) return;
    // Answers that wait (a touch's write; every read on a backend whose reads
    // are queries) are sent together once the message's last one is in, so
    // one message still gets as few responses as it can.
    this.pending++;
    Promise.all(later).then((answers) => {
      for (const a of answers) this.push(a);
    }).finally(() => {
      this.pending--;
      this.writer.scheduleFlush();
      this.finish();
    }).catch((err: unknown) => this.log.error('could not write a validation answer', { method: 'ValidateSessionStream', err }));
  }

  /** The original form: one validation, answered in its own message. */
  private readOne(req: ValidateSessionStreamRequest): void {
    this.pending++;
    const id = req.correlationId;
    let answer: ValidateSessionStreamAnswer;
    try {
      const result = this.sessions.validate(this.caller, req.token, req.touch);
      // Most validations are reads answered synchronously: no promise hop.
      if (result instanceof Promise) {
        result.then((r) => answerOf(id, r)).catch((err: unknown) => failedAnswer(this.log, id, err)).then((a) => this.sendOne(a))
          .catch((err: unknown) => this.log.error('could not write a validation answer', { method: 'ValidateSessionStream', err }));
        return;
      }
      answer = answerOf(id, result);
    } catch (err) {
      answer = failedAnswer(this.log, id, err);
    }
    this.sendOne(answer);
  }

  /** Answers the item now, or returns the promise of its answer when the validation waits. */
  private validateItem(item: ValidateSessionStreamItem): Promise<Buffer> | undefined {
    let result: ValidateResult | Promise<ValidateResult>;
    try {
      result = this.sessions.validate(this.caller, item.token, item.touch);
    } catch (err) {
      this.push(encodeAnswer(failedAnswer(this.log, item.correlationId, err)));
      return undefined;
    }
    if (!(result instanceof Promise)) {
      this.pushResult(item.correlationId, result);
      return undefined;
    }
    const id = item.correlationId;
    return result.then(
      (r) => encodedAnswer(this.log, id, r),
      (err: unknown) => encodeAnswer(failedAnswer(this.log, id, err)),
    );
  }

  private pushResult(id: number, r: ValidateResult): void {
    this.push(encodedAnswer(this.log, id, r));
  }

  private push(answer: Buffer): void {
    this.writer.push(answer);
  }

  private sendOne(a: ValidateSessionStreamAnswer): void {
    this.pending--;
    this.writer.writeOne(a);
    this.finish();
  }

  private finish(): void {
    if (this.failure) return this.endWithFailure();
    if (!this.ended || this.pending > 0 || this.queuedValidations > 0 || this.closed) return;
    this.writer.flush();
    this.closed = true;
    this.forget();
    this.call.end();
  }

  /** Answers the requests already read; reads nothing more. */
  private stopReading(): void {
    this.call.removeAllListeners('data');
    this.call.pause();
    this.ended = true;
    this.finish();
  }

  /** Names the caller again (after a reload); ends the stream with the refusal when it is no longer allowed. */
  private recheck(): void {
    if (this.closed) return;
    try {
      this.caller = this.auth.check(this.call, SessionServiceService.validateSessionStream);
    } catch (err) {
      const se = toServiceError(err, 'ValidateSessionStream', this.log);
      this.fail(se.details, se.code);
    }
  }

  /** Ends the stream with INVALID_ARGUMENT for a message that cannot be answered item by item. */
  private fail(details: string, code: status = status.INVALID_ARGUMENT): void {
    this.call.removeAllListeners('data');
    this.call.pause();
    if (this.closed || this.failure) return;
    this.failure = { code, details };
    this.endWithFailure();
  }

  private endWithFailure(): void {
    // Answers to earlier messages go out before the status, those still
    // waiting for storage included (every read, on PostgreSQL).
    if (this.closed || this.pending > 0) return;
    this.writer.flush();
    this.closed = true;
    this.forget();
    this.call.emit('error', statusError(this.failure!.code, this.failure!.details));
  }
}

/**
 * ValidateSessionStream: every validation answered on its own, matched by
 * correlation_id; a message of one validation gets a message of one answer, a
 * batch gets batched answers. A bad item or a storage fault is answered with
 * an error code and the stream goes on. The caller is named and its
 * permission checked once, when the stream opens; every validation on it is
 * confined to that caller's server_ids.
 */
export function validateStreamHandler(
  sessions: SessionManager,
  auth: Authorizer,
  log: Logger,
  open: OpenStreams,
): handleBidiStreamingCall<ValidateSessionStreamRequest, ValidateSessionStreamResponse> {
  return (call) => {
    let caller: Principal;
    try {
      caller = auth.check(call, SessionServiceService.validateSessionStream);
    } catch (err) {
      call.emit('error', toServiceError(err, 'ValidateSessionStream', log));
      return;
    }
    void new ValidationStream(call, caller, auth, sessions, log, open.responseBudgetBytes, open);
  };
}
