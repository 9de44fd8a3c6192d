import { Turns } from './turns';

/**
 * A batched response is written once its answers may reach this many bytes,
 * so that it stays far below the receiving client's message limit (4 MiB by
 * default in grpc-js) and the server's own --max-message-bytes.
 */
const DEFAULT_RESPONSE_BUDGET_BYTES = 64 * 1024;

/**
 * Validations per event-loop turn (see Turns): a message of one validation
 * costs a turn no more than a batch of this many, and a batch this size or
 * larger takes a turn of its own, so its answers leave before the next
 * message is validated.
 */
export const VALIDATIONS_PER_TURN = 16;

/**
 * The open validation streams, so that shutdown can close them: a gateway
 * keeps one open for good, and it would otherwise hold the drain until its
 * deadline on every SIGTERM. Also the settings and the turns they share.
 */
export class OpenStreams {
  private readonly streams = new Set<{ close(): void; recheck(): void }>();
  /** Bytes of answers per batched response message (see DEFAULT_RESPONSE_BUDGET_BYTES). */
  readonly responseBudgetBytes: number;
  readonly turns = new Turns(VALIDATIONS_PER_TURN);

  /** @param maxMessageBytes the server's --max-message-bytes: batched responses stay well below it. */
  constructor(maxMessageBytes = Infinity) {
    this.responseBudgetBytes = Math.max(1, Math.min(DEFAULT_RESPONSE_BUDGET_BYTES, Math.floor(maxMessageBytes / 4)));
  }

  add(stream: { close(): void; recheck(): void }): () => void {
    this.streams.add(stream);
    return () => this.streams.delete(stream);
  }

  /**
   * After the principals changed: each stream names its caller again from the
   * metadata it opened with, and one whose key was removed (or whose
   * principal lost the permission) ends, so that a reload reaches streams a
   * gateway keeps open for good.
   */
  recheckAll(): void {
    for (const s of [...this.streams]) s.recheck();
  }

  /** Stops reading every stream; each ends once its pending answers are written. */
  closeAll(): void {
    for (const s of [...this.streams]) s.close();
  }
}
