import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import {
  SessionEventType, SessionServiceClient, WatchSessionEventsRequest, type SessionEvent, type WatchSessionEventsResponse,
} from '../../generated/sessions/v1/session_service';
import type { EventWatcher } from '../../src/client/client';

/** An EventWatcher's events, pulled one at a time, each within a deadline. */
export class EventReader {
  private readonly it: AsyncIterator<SessionEvent>;
  /** A next() that a timeout gave up on: its event is the next one taken. */
  private pending: Promise<IteratorResult<SessionEvent>> | undefined;

  constructor(watcher: EventWatcher) {
    this.it = watcher[Symbol.asyncIterator]();
  }

  private next(): Promise<IteratorResult<SessionEvent>> {
    this.pending ??= this.it.next();
    return this.pending;
  }

  /** The next `n` events; rejects when one does not come within `timeoutMs`, or the watch fails. */
  async take(n: number, timeoutMs = 10_000): Promise<SessionEvent[]> {
    const out: SessionEvent[] = [];
    while (out.length < n) {
      let timer: NodeJS.Timeout | undefined;
      const next = await Promise.race([
        this.next(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`only ${out.length} of ${n} events within ${timeoutMs} ms: ${JSON.stringify(out.map(brief))}`)), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      this.pending = undefined;
      if (next.done) throw new Error(`the watch ended after ${out.length} of ${n} events`);
      out.push(next.value);
    }
    return out;
  }

  /** Resolves if no event comes within `ms`; rejects with the event that came. */
  async none(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const next = this.next();
    const quiet = await Promise.race([next.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), ms)))]);
    clearTimeout(timer);
    if (!quiet) throw new Error(`an event came: ${JSON.stringify(brief((await next).value as SessionEvent))}`);
  }
}

export type Brief = [string, string, string];

/** [type without prefix, session id, cause]. */
export function brief(e: SessionEvent): Brief {
  return [SessionEventType[e.type].replace('SESSION_EVENT_TYPE_', ''), e.sessionId, e.cause];
}

/**
 * One raw WatchSessionEvents stream through the generated client: its events
 * and the status it ended with, once it ends (or after `untilMs`, cancelled).
 */
export function rawWatch(
  address: string, req: Partial<WatchSessionEventsRequest>, opts: { apiKey?: string; untilMs?: number; onEvent?: (event: SessionEvent) => void } = {},
): Promise<{ events: SessionEvent[]; error: ServiceError | undefined; headers: Metadata | undefined }> {
  const client = new SessionServiceClient(address, credentials.createInsecure());
  const md = new Metadata();
  if (opts.apiKey) md.set('authorization', `Bearer ${opts.apiKey}`);
  const call = client.watchSessionEvents(WatchSessionEventsRequest.fromPartial(req), md);
  const events: SessionEvent[] = [];
  let headers: Metadata | undefined;
  return new Promise((resolve) => {
    const done = (error: ServiceError | undefined) => {
      clearTimeout(timer);
      client.close();
      resolve({ events, error, headers });
    };
    const timer = setTimeout(() => {
      call.cancel();
      done(undefined);
    }, opts.untilMs ?? 10_000);
    call.on('metadata', (m: Metadata) => (headers = m));
    call.on('data', (r: WatchSessionEventsResponse) => {
      events.push(r.event!);
      opts.onEvent?.(r.event!);
    });
    call.on('error', (e: ServiceError) => done(e));
    call.on('end', () => done(undefined));
  });
}
