import type { ServerDuplexStream } from '@grpc/grpc-js';
import type {
  ValidateSessionStreamAnswer, ValidateSessionStreamRequest, ValidateSessionStreamResponse,
} from '../../generated/sessions/v1/session_service';
import type { Logger } from '../server/log';
import { encodeStreamAnswers, preEncoded } from './session-wire';

type Call = ServerDuplexStream<ValidateSessionStreamRequest, ValidateSessionStreamResponse>;

/**
 * The answering side of one ValidateSessionStream. Batched answers are
 * encoded as they come and collect here; they go out as one response on
 * flush (or sooner, once they reach the response budget). A write the socket
 * cannot take at once pauses reading the client's messages until it drains,
 * so that a client that does not read cannot make the server buffer answers
 * without bound.
 */
export class StreamWriter {
  private out: Buffer[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  /** The client is not reading our answers: the stream stops reading its messages. */
  backedUp = false;

  /**
   * @param open whether answers may still be written (the stream has not ended).
   * @param afterScheduledFlush called after a flush that scheduleFlush asked for.
   * @param onDrain called when the socket drains after backing up.
   */
  constructor(
    private readonly call: Call,
    private readonly log: Logger,
    private readonly budget: number,
    private readonly open: () => boolean,
    private readonly afterScheduledFlush: () => void,
    private readonly onDrain: () => void,
  ) {}

  private readonly flushSoon = () => {
    this.flushScheduled = false;
    this.flush();
    this.afterScheduledFlush();
  };

  private readonly drained = () => {
    this.backedUp = false;
    this.onDrain();
  };

  push(answer: Buffer): void {
    this.out.push(answer);
    // The answer, its tag and its length.
    this.outBytes += answer.length + 4;
    if (this.outBytes >= this.budget) this.flush();
  }

  /** Flushes in a later turn, so that answers settling in this one share a response. */
  scheduleFlush(): void {
    if (this.flushScheduled || this.out.length === 0) return;
    this.flushScheduled = true;
    setImmediate(this.flushSoon);
  }

  flush(): void {
    if (this.out.length === 0) return;
    const answers = this.out;
    this.out = [];
    this.outBytes = 0;
    this.write(preEncoded(encodeStreamAnswers(answers)));
  }

  /** One answer in a response of its own (the original, unbatched form). */
  writeOne(a: ValidateSessionStreamAnswer): void {
    this.write({ ...a, answers: [] });
  }

  private write(res: ValidateSessionStreamResponse): void {
    if (!this.open() || this.call.cancelled || this.call.destroyed) return;
    try {
      if (!this.call.write(res) && !this.backedUp) {
        this.backedUp = true;
        this.call.pause();
        this.call.once('drain', this.drained);
      }
    } catch (err) {
      this.log.error('could not write a validation answer', { method: 'ValidateSessionStream', err });
    }
  }
}
