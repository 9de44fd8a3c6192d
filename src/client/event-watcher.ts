import { Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { SessionEventType, WatchSessionEventsRequest, type SessionEvent, type WatchSessionEventsResponse } from '../../generated/sessions/v1/session_service';
import { WATCH_START_HEADER } from '../shared/stream-protocol';

export interface WatchOptions {
  /** Only events of this server; empty: every server_id of the caller. */
  serverId?: string;
  /** Only events of this subject. */
  subject?: string;
  /**
   * Start after this sequence (the last one handled before a restart, or a
   * ListSessions answer's sequence); unset: from now on.
   */
  afterSequence?: number;
  /** Also yield PROGRESS events (see WatchSessionEventsRequest.progress_events). */
  progressEvents?: boolean;
  /** Ends the watch: the iteration finishes without an error. */
  signal?: AbortSignal;
  /** First wait before reconnecting, doubled after each failed attempt up to maxBackoffMs. Default 100 ms. */
  initialBackoffMs?: number;
  /** Default 10 s. */
  maxBackoffMs?: number;
  /** Called before each reconnection, with the error that ended the stream. */
  onReconnect?: (error: ServiceError, attempt: number) => void;
}

/**
 * Statuses after which the same watch, resumed, can succeed: the server went
 * away or restarted (UNAVAILABLE; CANCELLED when its drain deadline cut the
 * stream), or ended this stream for reading too slowly
 * (RESOURCE_EXHAUSTED). The others (OUT_OF_RANGE above all: re-list first)
 * end the iteration with the error.
 */
const RESUMABLE = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED, status.DEADLINE_EXCEEDED, status.ABORTED, status.CANCELLED]);

export type OpenWatch = (request: WatchSessionEventsRequest, metadata: Metadata) => ClientReadableStream<WatchSessionEventsResponse>;

/**
 * WatchSessionEvents that resumes by itself: after a disconnect it opens a
 * new stream after the last sequence it delivered (or, before the first
 * event, after the position the server started the watch at, which it sends
 * in a response header), so the consumer sees every event once, in order,
 * across reconnections and server restarts.
 */
export class EventWatcher implements AsyncIterable<SessionEvent> {
  private last: number | undefined;
  private call: ClientReadableStream<WatchSessionEventsResponse> | undefined;
  private ended = false;
  private readonly failures = new WeakMap<ClientReadableStream<WatchSessionEventsResponse>, ServiceError>();
  private startWaiters: { resolve: (n: number) => void; reject: (e: Error) => void }[] = [];

  constructor(private readonly open: OpenWatch, private readonly metadata: () => Metadata, private readonly options: WatchOptions = {}) {
    this.last = options.afterSequence;
    options.signal?.addEventListener('abort', () => this.close(), { once: true });
    // Opened now, not at the first next(): a watch "from now" starts when
    // watch() is called. Until the consumer reads, grpc-js buffers a little
    // and then holds the stream back by flow control.
    if (!options.signal?.aborted) this.call = this.connect();
  }

  /** The sequence of the last event delivered (the position a resume starts after); undefined before the watch has started. */
  get lastSequence(): number | undefined {
    return this.last;
  }

  /**
   * The sequence the watch starts after (afterSequence, or the head the
   * server started it at). Rejects if the first stream fails first.
   */
  started(): Promise<number> {
    if (this.last !== undefined) return Promise.resolve(this.last);
    return new Promise((resolve, reject) => this.startWaiters.push({ resolve, reject }));
  }

  /** Stops watching; an iteration under way finishes. */
  close(): void {
    this.ended = true;
    this.call?.cancel();
  }

  private connect(): ClientReadableStream<WatchSessionEventsResponse> {
    const call = this.open(WatchSessionEventsRequest.fromPartial({
      serverId: this.options.serverId ?? '',
      subject: this.options.subject ?? '',
      afterSequence: this.last,
      progressEvents: this.options.progressEvents ?? false,
    }), this.metadata());
    this.call = call;
    call.on('metadata', (md: Metadata) => {
      const start = Number(md.get(WATCH_START_HEADER)[0]);
      if (this.last === undefined && Number.isSafeInteger(start)) this.last = start;
      if (this.last !== undefined) for (const w of this.startWaiters.splice(0)) w.resolve(this.last);
    });
    // grpc-js ends the readable side before it emits the status as an
    // error, so an iteration may see a plain end: the status is kept here.
    call.on('error', (err: ServiceError) => {
      this.failures.set(call, err);
      for (const w of this.startWaiters.splice(0)) w.reject(err);
    });
    return call;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<SessionEvent> {
    let attempt = 0;
    let backoff = this.options.initialBackoffMs ?? 100;
    let call = this.call;
    while (!this.ended) {
      call ??= this.connect();
      let error: ServiceError | undefined;
      try {
        for await (const { event } of call as AsyncIterable<WatchSessionEventsResponse>) {
          if (!event) continue;
          attempt = 0;
          backoff = this.options.initialBackoffMs ?? 100;
          this.last = event.sequence;
          if (event.type !== SessionEventType.SESSION_EVENT_TYPE_PROGRESS || this.options.progressEvents) yield event;
          if (this.ended) break;
        }
      } catch (err) {
        error = err as ServiceError;
      } finally {
        call.cancel();
      }
      error ??= this.failures.get(call);
      call = undefined;
      if (this.ended) return;
      if (error && !RESUMABLE.has(error.code)) throw error;
      attempt++;
      this.options.onReconnect?.(error ?? Object.assign(new Error('the event stream ended'), { code: status.UNAVAILABLE, details: 'the event stream ended', metadata: new Metadata() }), attempt);
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, this.options.maxBackoffMs ?? 10_000);
    }
  }
}
