import type { Database } from 'better-sqlite3';
import { OverloadedError, StorageBusyError, StorageError } from '../../domain/errors';
import type { WriteOptions } from '../../domain/session-repository';
import type { WriteRunner } from './write-runner';
import { toStorageError } from './sqlite-errors';

interface Job {
  work: () => unknown;
  /** Run with { durable: true }: answered only once a sync after its commit has returned. */
  durable: boolean;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  /** performance.now() after which a busy database fails the job with UNAVAILABLE. */
  giveUpAt: number;
}

export interface GroupCommitOptions {
  /** How long a write may wait, in total, for a lock held by another connection. */
  busyTimeoutMs: number;
  /** Most units in one transaction; bounds the time one flush holds the event loop. */
  maxBatch?: number;
  /**
   * Most units that may wait to be committed; past it run() refuses at once
   * with OverloadedError, so that a flood is shed instead of every caller's
   * latency growing with the queue. Unbounded when absent.
   */
  maxPending?: number;
  /** Called for each unit refused because maxPending were waiting; must not throw. */
  onShed?: () => void;
  /**
   * Asked before each batch: true holds the batch back for a few milliseconds
   * (on a timer, the event loop stays free) and asks again. The SQLite storage
   * uses it to let the checkpointer catch up (see wal-pressure.ts).
   */
  shouldWait?: () => boolean;
  /**
   * Durability after COMMIT (commit-sync.ts): the callers it covers are
   * answered once sync() resolves: with `everyCommit` every unit
   * (synchronous=FULL with the fsync off the event loop), else only the units
   * run with { durable: true } that succeeded, while the others of their batch
   * are answered at COMMIT. The next batch does not wait for it. A failure is
   * final: queued and later units fail with it, before anything is written.
   */
  durable?: { sync(): Promise<void>; readonly failed: Error | undefined; readonly everyCommit: boolean };
}

const WAIT_POLL_MS = 5;

/**
 * Group commit: every write unit queued during one event-loop turn runs in one
 * transaction, each unit inside its own SAVEPOINT so that a unit that throws
 * (a stale etag, a full disk) is rolled back alone. Callers are resolved only
 * after COMMIT returns, so an acknowledged write is as durable as the
 * synchronous setting makes a commit; a durable unit (a revocation, a token
 * rotation) only once a sync that covers its commit has returned (`durable`),
 * whatever the setting. One commit, and one sync, then serves many calls.
 *
 * A lock held by another process does not freeze the event loop: SQLite's own
 * busy handler is given only a few milliseconds (the connection's
 * busy_timeout), and the retry waits on a timer, so reads, health checks and
 * other calls keep being served. Units that have waited longer than
 * busyTimeoutMs fail with StorageBusyError (UNAVAILABLE, retryable).
 *
 * The queue is bounded (maxPending): a unit that finds it full is refused at
 * once with OverloadedError (UNAVAILABLE, retryable) and never runs, so under a
 * flood or a stalled disk callers learn to back off instead of waiting ever
 * longer behind the queue.
 */
export class GroupCommitter implements WriteRunner {
  private queue: Job[] = [];
  private scheduled = false;
  private retryDelayMs = 0;
  private readonly maxBatch: number;
  private closed = false;
  private idle: (() => void) | undefined;
  /** Committed batches whose callers wait for options.durable. */
  private syncing = 0;

  constructor(private readonly db: Database, private readonly options: GroupCommitOptions) {
    this.maxBatch = options.maxBatch ?? 512;
  }

  run<T>(work: () => T, options?: WriteOptions): Promise<T> {
    if (this.closed) return Promise.reject(new StorageError('storage is closing; the write was not applied', undefined));
    const max = this.options.maxPending;
    if (max !== undefined && this.queue.length >= max) {
      this.options.onShed?.();
      return Promise.reject(new OverloadedError(
        `too many writes are waiting: ${this.queue.length} already wait to be committed (max-pending-writes ${max}); the write was not applied, retry with backoff`,
      ));
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        work, durable: options?.durable === true, resolve: resolve as (v: unknown) => void, reject, giveUpAt: performance.now() + this.options.busyTimeoutMs,
      });
      this.schedule();
    });
  }

  /**
   * Refuses new units and resolves once every queued unit has committed or
   * failed (at most the busy timeout when another process holds the lock), so
   * that the connection can be closed under no pending flush.
   */
  close(): Promise<void> {
    this.closed = true;
    if (this.queue.length === 0 && !this.scheduled && this.syncing === 0) return Promise.resolve();
    return new Promise((resolve) => (this.idle = resolve));
  }

  /** Units waiting to be committed. */
  get pending(): number {
    return this.queue.length;
  }

  private schedule(delayMs = 0): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate runs after the I/O callbacks of this turn, so every call that
    // arrived in the same poll phase joins the batch.
    if (delayMs > 0) setTimeout(() => this.flush(), delayMs);
    else setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    if (this.queue.length === 0) {
      this.next();
      return;
    }
    const unsynced = this.options.durable?.failed;
    if (unsynced) {
      for (const job of this.queue.splice(0)) job.reject(unsynced);
      this.next();
      return;
    }
    if (this.options.shouldWait?.()) {
      this.schedule(WAIT_POLL_MS);
      return;
    }
    const batch = this.queue.splice(0, this.maxBatch);
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      this.onBeginFailed(batch, err);
      return;
    }
    this.retryDelayMs = 0;
    const results: { ok: boolean; value: unknown }[] = [];
    for (let i = 0; i < batch.length; i++) {
      try {
        results.push({ ok: true, value: this.savepoint(batch[i]!.work) });
      } catch (err) {
        const mapped = toStorageError(err);
        if (!this.db.inTransaction) {
          // SQLite rolled the whole transaction back (it may on SQLITE_FULL,
          // IOERR, NOMEM): the units before this one are lost as well. Fail
          // them all; the units not yet run go back to the queue.
          for (const job of batch.slice(0, i + 1)) job.reject(mapped);
          this.queue = batch.slice(i + 1).concat(this.queue);
          this.next();
          return;
        }
        results.push({ ok: false, value: mapped });
      }
    }
    try {
      this.db.exec('COMMIT');
    } catch (err) {
      // COMMIT failed (I/O error, disk full while spilling): nothing of the batch is kept.
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      const mapped = toStorageError(err);
      for (const job of batch) job.reject(mapped);
      this.next();
      return;
    }
    const answer = (i: number) => (results[i]!.ok ? batch[i]!.resolve(results[i]!.value) : batch[i]!.reject(results[i]!.value));
    const durable = this.options.durable;
    const later: number[] = [];
    for (let i = 0; i < batch.length; i++) {
      if (durable && (durable.everyCommit || (batch[i]!.durable && results[i]!.ok))) later.push(i);
      else answer(i);
    }
    if (durable && later.length > 0) {
      this.syncing++;
      durable.sync().then(() => later.forEach(answer), (err: unknown) => later.forEach((i) => batch[i]!.reject(err))).finally(() => {
        this.syncing--;
        this.next();
      });
    }
    this.next();
  }

  private savepoint(work: () => unknown): unknown {
    this.db.exec('SAVEPOINT unit');
    try {
      const value = work();
      this.db.exec('RELEASE unit');
      return value;
    } catch (err) {
      // ROLLBACK TO undoes the unit; RELEASE then drops the savepoint itself.
      // Neither is possible when SQLite has already rolled everything back.
      if (this.db.inTransaction) {
        this.db.exec('ROLLBACK TO unit');
        this.db.exec('RELEASE unit');
      }
      throw err;
    }
  }

  private onBeginFailed(batch: Job[], err: unknown): void {
    const mapped = toStorageError(err);
    if (!(mapped instanceof StorageBusyError)) {
      for (const job of batch) job.reject(mapped);
      this.next();
      return;
    }
    const now = performance.now();
    const waiting = batch.filter((job) => {
      if (job.giveUpAt > now) return true;
      job.reject(mapped);
      return false;
    });
    this.queue = waiting.concat(this.queue);
    this.retryDelayMs = Math.min(Math.max(this.retryDelayMs * 2, 2), 50);
    if (this.queue.length > 0) this.schedule(this.retryDelayMs);
    else this.next();
  }

  private next(): void {
    if (this.queue.length > 0) this.schedule();
    else if (!this.scheduled && this.syncing === 0) this.idle?.();
  }
}
