import { Metadata, status, type handleServerStreamingCall, type ServerWritableStream } from '@grpc/grpc-js';
import {
  SessionEventType, SessionServiceService, type SessionEvent as ProtoEvent, type WatchSessionEventsRequest, type WatchSessionEventsResponse,
} from '../../generated/sessions/v1/session_service';
import type { EventFeed, WatchInput } from '../domain/event-feed';
import type { Principal } from '../domain/principals';
import type { SessionEvent } from '../domain/session-events';
import type { Logger } from '../server/log';
import type { Authorizer } from './authorize';
import type { OpenStreams } from './open-streams';
import { statusError, toServiceError } from './status';
import { WATCH_START_HEADER } from '../shared/stream-protocol';

export interface WatchSettings {
  /** A consumer that reads nothing for this long, while its stream is full, is ended with RESOURCE_EXHAUSTED. */
  readonly stallTimeoutMs: number;
  /** PROGRESS events, when asked for, after this long without a message. */
  readonly progressIntervalMs: number;
  /** Open WatchSessionEvents streams past which a new one is refused with RESOURCE_EXHAUSTED. */
  readonly maxStreams: number;
}

type Call = ServerWritableStream<WatchSessionEventsRequest, WatchSessionEventsResponse>;

const TYPES: Record<SessionEvent['type'], SessionEventType> = {
  CREATED: SessionEventType.SESSION_EVENT_TYPE_CREATED,
  UPDATED: SessionEventType.SESSION_EVENT_TYPE_UPDATED,
  ROTATED: SessionEventType.SESSION_EVENT_TYPE_ROTATED,
  REVOKED: SessionEventType.SESSION_EVENT_TYPE_REVOKED,
  EXPIRED: SessionEventType.SESSION_EVENT_TYPE_EXPIRED,
};

function eventToProto(e: SessionEvent): ProtoEvent {
  return { sequence: e.sequence, type: TYPES[e.type], sessionId: e.sessionId, serverId: e.serverId, subject: e.subject, time: new Date(e.time), cause: e.cause };
}

/** How long a caught-up stream waits for the head to move before it looks again (the feed wakes it sooner). */
const IDLE_WAIT_MS = 30_000;

/**
 * One watch. It reads a page of the outbox only when the previous page is
 * written and grpc-js's buffer has room (write() returned true, or 'drain'):
 * the database is the buffer, so a slow consumer holds one page in memory,
 * however far behind it is.
 */
class EventStream {
  private closed = false;
  private lastWrite = Date.now();
  /** The sequence of the last event written (or PROGRESS): what the consumer resumes after. */
  private delivered: number;
  private readonly forget: () => void;
  private readonly drainWaiters = new Set<() => void>();

  constructor(
    private readonly call: Call,
    private caller: Principal,
    private readonly input: WatchInput,
    private position: number,
    private readonly feed: EventFeed,
    private readonly auth: Authorizer,
    private readonly settings: WatchSettings,
    private readonly log: Logger,
    open: OpenStreams,
    private readonly onEnd: () => void,
  ) {
    this.delivered = position;
    const md = new Metadata();
    md.set(WATCH_START_HEADER, String(position));
    call.sendMetadata(md);
    this.forget = open.add({
      close: () => this.end(statusError(status.UNAVAILABLE, `the server is shutting down; resume with after_sequence ${this.delivered}`)),
      recheck: () => this.recheck(),
    });
    call.on('cancelled', () => this.stop());
    call.on('drain', () => this.wakeDrains());
    // A cancelled stream emits 'error' on some grpc-js paths; nothing to answer then.
    call.on('error', () => undefined);
  }

  async run(): Promise<void> {
    try {
      while (!this.closed) {
        const slice = await this.feed.next(this.caller, this.input, this.position);
        for (const e of slice.events) {
          if (this.closed) return;
          if (!(await this.write(eventToProto(e), e.sequence))) return;
        }
        this.position = slice.through;
        if (this.closed || slice.through < slice.head) continue;
        const progress = this.progressDue();
        const woke = await this.feed.waitBeyond(this.position, progress ?? IDLE_WAIT_MS);
        if (!woke && progress !== undefined && !this.closed && this.progressDue() === 0 && this.position > this.delivered) {
          await this.write({ sequence: this.position, type: SessionEventType.SESSION_EVENT_TYPE_PROGRESS, sessionId: '', serverId: '', subject: '', time: new Date(), cause: '' }, this.position);
        }
      }
    } catch (err) {
      this.end(toServiceError(err, 'WatchSessionEvents', this.log));
    }
  }

  /** ms until a PROGRESS event is due (0: now), or undefined when the consumer did not ask for them. */
  private progressDue(): number | undefined {
    if (!this.call.request.progressEvents) return undefined;
    return Math.max(0, this.lastWrite + this.settings.progressIntervalMs - Date.now());
  }

  /** Writes one event; waits while the stream is full. @returns false once the stream ended. */
  private async write(message: ProtoEvent, sequence: number): Promise<boolean> {
    const room = this.call.write({ event: message });
    this.delivered = sequence;
    this.lastWrite = Date.now();
    if (room) return true;
    const drained = await new Promise<boolean>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.drainWaiters.delete(wake);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.drainWaiters.delete(wake);
        resolve(false);
      }, this.settings.stallTimeoutMs);
      this.drainWaiters.add(wake);
    });
    if (this.closed) return false;
    if (!drained) {
      this.end(statusError(status.RESOURCE_EXHAUSTED,
        `the consumer read nothing for ${this.settings.stallTimeoutMs} ms while events waited (--events-stall-timeout); resume with after_sequence ${this.delivered}`));
      return false;
    }
    return true;
  }

  private wakeDrains(): void {
    for (const wake of [...this.drainWaiters]) wake();
  }

  /** Names the caller again (after a reload); ends the stream when it is no longer allowed. */
  private recheck(): void {
    if (this.closed) return;
    try {
      this.caller = this.auth.check(this.call, SessionServiceService.watchSessionEvents);
    } catch (err) {
      this.end(toServiceError(err, 'WatchSessionEvents', this.log));
    }
  }

  private end(error: ReturnType<typeof statusError>): void {
    if (this.closed) return;
    this.stop();
    this.call.emit('error', error);
  }

  private stop(): void {
    if (this.closed) return;
    this.closed = true;
    this.forget();
    this.onEnd();
    this.wakeDrains();
  }
}

/**
 * WatchSessionEvents: the caller's session events in commit order, from
 * after_sequence (or from now), until the consumer cancels or the server
 * stops. The caller is named and its permission checked as the stream
 * opens, and again after every principals reload.
 */
export function watchEventsHandler(
  feed: EventFeed,
  auth: Authorizer,
  log: Logger,
  open: OpenStreams,
  settings: WatchSettings,
): handleServerStreamingCall<WatchSessionEventsRequest, WatchSessionEventsResponse> {
  let streams = 0;
  return (call) => {
    void (async () => {
      let caller: Principal;
      try {
        caller = auth.check(call, SessionServiceService.watchSessionEvents);
      } catch (err) {
        call.emit('error', toServiceError(err, 'WatchSessionEvents', log));
        return;
      }
      if (streams >= settings.maxStreams) {
        call.emit('error', statusError(status.RESOURCE_EXHAUSTED, `${streams} event streams are open, the most this server allows (--max-event-streams); retry later`));
        return;
      }
      // Counted from here, so that streams still looking for their start count too.
      streams++;
      let release = () => {
        streams--;
        release = () => undefined;
      };
      try {
        const input: WatchInput = { serverId: call.request.serverId, subject: call.request.subject, afterSequence: call.request.afterSequence };
        const position = await feed.start(caller, input);
        if (call.cancelled) return release();
        await new EventStream(call, caller, input, position, feed, auth, settings, log, open, () => release()).run();
      } catch (err) {
        release();
        call.emit('error', toServiceError(err, 'WatchSessionEvents', log));
      }
    })();
  };
}
