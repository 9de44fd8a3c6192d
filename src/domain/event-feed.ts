import { FailedPreconditionError, OutOfRangeError } from './errors';
import { requireServerId, type Principal } from './principals';
import { checkString, type SessionPolicy } from './session';
import type { SessionEvent } from './session-events';
import type { SessionRepository } from './session-repository';
import type { Clock } from './clock';

export interface WatchInput {
  readonly serverId: string;
  readonly subject: string;
  /** undefined: from the newest event now on. */
  readonly afterSequence: number | undefined;
}

export interface EventFeedOptions {
  /** --session-events: false refuses watches (nothing is written to watch). */
  readonly enabled: boolean;
  /** How often the log's head is read while streams wait: other processes' (and replicas') commits show up within it. */
  readonly pollIntervalMs: number;
  /** Retention: events older than this are pruned by the sweep. */
  readonly retentionMs: number;
  /** Retention: at most this many events are kept. */
  readonly retentionCount: number;
  /** Events read from storage per page (each stream's memory bound, before its own filters). */
  readonly pageSize?: number;
  /** Events deleted per prune transaction. */
  readonly pruneBatchSize?: number;
}

export interface EventSlice {
  /** The caller's events of the page, in order. */
  readonly events: SessionEvent[];
  /** Every event up to this sequence has been considered: the position to read after next. */
  readonly through: number;
  /** The log's head when the page was read. */
  readonly head: number;
}

/**
 * WatchSessionEvents without the stream: where a watch starts, the caller's
 * events after a position, a wait for new ones, and retention. Each stream
 * reads the outbox page by page at its own pace, so a slow consumer costs one
 * page of memory, whatever its lag. One poll of the head serves every stream
 * of the process.
 */
export class EventFeed {
  private readonly pageSize: number;
  private readonly pruneBatchSize: number;
  private head = 0;
  private readonly waiters = new Set<{ after: number; wake: () => void }>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(private readonly repo: SessionRepository, private readonly clock: Clock, private readonly policy: SessionPolicy, readonly options: EventFeedOptions) {
    this.pageSize = options.pageSize ?? 500;
    this.pruneBatchSize = options.pruneBatchSize ?? 1000;
  }

  /**
   * Checks a watch and finds its starting position.
   * @throws FailedPreconditionError when events are off; InvalidArgumentError;
   *   PermissionDeniedError for a server_id outside the caller's; OutOfRangeError
   *   for a position outside the log.
   */
  async start(caller: Principal, input: WatchInput): Promise<number> {
    if (!this.options.enabled) throw new FailedPreconditionError('session events are off on this server (--session-events off): nothing is recorded to watch');
    checkString('server_id', input.serverId, this.policy.maxIdBytes);
    checkString('subject', input.subject, this.policy.maxIdBytes);
    if (input.serverId !== '') requireServerId(caller, input.serverId);
    const log = await this.repo.readEvents(Number.MAX_SAFE_INTEGER, 1);
    this.head = Math.max(this.head, log.head);
    if (input.afterSequence === undefined) return log.head;
    checkPosition(input.afterSequence, log.head, log.prunedThrough);
    return input.afterSequence;
  }

  /**
   * The caller's events after `after` that match the filter, from one page of the log.
   * @throws OutOfRangeError once retention has pruned past `after` (a consumer too far behind).
   */
  async next(caller: Principal, input: WatchInput, after: number): Promise<EventSlice> {
    const page = await this.repo.readEvents(after, this.pageSize);
    checkPosition(after, page.head, page.prunedThrough);
    this.head = Math.max(this.head, page.head);
    const events = page.events.filter((e) =>
      caller.scope.includes(e.serverId) && (input.serverId === '' || e.serverId === input.serverId) && (input.subject === '' || e.subject === input.subject));
    const through = page.events.length === this.pageSize ? page.events[page.events.length - 1]!.sequence : Math.max(after, page.head);
    return { events, through, head: page.head };
  }

  /**
   * Resolves once the log's head is past `after` (true), or after `timeoutMs` (false).
   * The head is read every pollIntervalMs while anyone waits.
   */
  waitBeyond(after: number, timeoutMs: number): Promise<boolean> {
    if (this.head > after) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        after,
        wake: () => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(true);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        resolve(false);
      }, timeoutMs).unref();
      this.waiters.add(waiter);
      this.timer ??= setInterval(() => void this.poll(), this.options.pollIntervalMs).unref();
    });
  }

  /** Wakes every waiter at once (shutdown): each reads, finds nothing new, and sees the stream closing. */
  wakeAll(): void {
    for (const w of [...this.waiters]) w.wake();
  }

  /**
   * Applies retention, in batches, until nothing more is due or `signal` aborts.
   * @returns how many events were pruned.
   */
  async prune(signal?: AbortSignal): Promise<number> {
    let pruned = 0;
    for (;;) {
      const n = await this.repo.pruneEvents(this.clock.now() - this.options.retentionMs, this.options.retentionCount, this.pruneBatchSize);
      pruned += n;
      if (n < this.pruneBatchSize || signal?.aborted) return pruned;
    }
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    if (this.waiters.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    this.polling = true;
    try {
      this.head = Math.max(this.head, (await this.repo.readEvents(Number.MAX_SAFE_INTEGER, 1)).head);
      for (const w of [...this.waiters]) if (this.head > w.after) w.wake();
    } catch {
      // Storage is down: the waiters time out and their streams read (and fail) on their own.
    } finally {
      this.polling = false;
    }
  }
}

function checkPosition(after: number, head: number, prunedThrough: number): void {
  if (after < prunedThrough) {
    throw new OutOfRangeError(`after_sequence ${after} is older than the retention window (events up to ${prunedThrough} were pruned): list sessions again, then watch after that answer's sequence`);
  }
  if (after > head) {
    throw new OutOfRangeError(`after_sequence ${after} is past the newest event (${head}): it comes from another database, or from before a restore; list sessions again, then watch after that answer's sequence`);
  }
}
