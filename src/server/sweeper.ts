import type { EventFeed } from '../domain/event-feed';
import type { SessionManager } from '../domain/session-manager';
import type { Logger } from './log';
import type { Metrics } from './metrics/metrics';

/**
 * The background purge of dead sessions. One run at a time: a slow purge is
 * never overlapped by the next tick. Timers are unref'd so they never keep the
 * process alive on their own.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly stopping = new AbortController();

  constructor(
    private readonly sessions: SessionManager,
    private readonly intervalMs: number,
    private readonly batchSize: number,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
    /** Its retention is applied after each purge (an expiry's EXPIRED event is written by the purge itself). */
    private readonly events?: EventFeed,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.runOnce(), this.intervalMs).unref();
  }

  /** Purges now unless a run is under way; never throws (faults are logged). */
  runOnce(): Promise<void> {
    this.running ??= (async () => {
      const started = performance.now();
      try {
        const r = await this.sessions.purgeExpired(this.batchSize, this.stopping.signal);
        const durationMs = performance.now() - started;
        this.metrics?.purge('sweep', r.purged, durationMs);
        // Every run is logged; one that found nothing only at debug, as it runs every interval.
        const eventsPruned = this.events && !this.stopping.signal.aborted ? await this.events.prune(this.stopping.signal) : 0;
        if (r.purged > 0 || eventsPruned > 0) this.log.info('sweep', { ...r, eventsPruned, durationMs: Math.round(durationMs) });
        else this.log.debug('sweep: nothing to purge', { durationMs: Math.round(durationMs) });
      } catch (err) {
        this.metrics?.purge('sweep', undefined, performance.now() - started);
        this.log.warn('sweep failed; will retry at the next interval', { err });
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  /** Stops the timer and waits for a run under way to finish its current batch. */
  async stop(): Promise<void> {
    this.stopping.abort();
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
