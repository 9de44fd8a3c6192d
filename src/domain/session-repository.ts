import type { SessionRecord } from './session';
import type { EventPage, ModificationEvent } from './session-events';

/** A value, or a promise of it: backends that read synchronously (SQLite) answer reads without a promise hop. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * The storage contract. The domain owns it (imports run storage -> domain);
 * every implementation must pass test/helpers/repository-contract.ts.
 *
 * Reads may answer synchronously or with a promise (MaybePromise); writes
 * always resolve once committed. Every write is atomic: on any error nothing
 * is changed, except OutcomeUnknownError, after which it may or may not have
 * committed.
 *
 * Errors, for every method (thrown, or the promise rejects with them):
 * - UniqueViolationError: insert only; the id, the token hash, or the
 *   (serverId, requestId) pair is taken.
 * - StorageBusyError: another writer held a lock past the busy timeout.
 * - StorageUnavailableError: the database cannot be reached, is read-only
 *   (a standby), or a statement ran past its timeout; nothing was written.
 * - OutcomeUnknownError: the connection was lost after a write was sent and
 *   before its commit was confirmed.
 * - OverloadedError: too many writes already wait; refused at once.
 * - StorageFullError: the disk or the database's size limit is full.
 * - StorageError: any other fault (I/O, corruption).
 */
export interface SessionRepository {
  /** Which backend this is, as GetStorageStatus and the health metadata name it. */
  readonly backend: 'sqlite' | 'postgres';

  /**
   * Stores a new session with the hash of its token and, optionally, the
   * CreateSession idempotency key. With `limit`, in the same transaction and
   * exactly under concurrency (no two creates of one subject count at once):
   * when the session's (serverId, subject) already has `limit.max` sessions
   * live at `limit.now`, the oldest are revoked at `limit.now` to make room
   * (evict), or nothing is written (refuse). Appends, when events are on, a
   * REVOKED event (cause "limit", at limit.now) per evicted session, then the
   * CREATED event (at the session's createTime).
   * @returns the ids of the sessions revoked to make room, oldest first.
   * @throws UniqueViolationError if the id, the token hash, or the (serverId, requestId) pair exists;
   *   SessionLimitError when refused for the limit.
   */
  insert(session: SessionRecord, tokenHash: Buffer, requestId?: string, limit?: SubjectLimit): Promise<readonly string[]>;

  /**
   * The session created with this idempotency key for this server, in any
   * state, or undefined (never created, or purged).
   */
  findByRequestId(serverId: string, requestId: string): MaybePromise<SessionRecord | undefined>;

  /** The session with this id in any state (live, expired, revoked), or undefined once purged. */
  findById(id: string): MaybePromise<SessionRecord | undefined>;

  /** The session whose token hashes to `tokenHash`, in any state, or undefined. */
  findByTokenHash(tokenHash: Buffer): MaybePromise<SessionRecord | undefined>;

  /**
   * Reads the session, passes it to `change` and stores what it returns, all in
   * one transaction, with no other write to the row in between. `change` may
   * throw a domain error (a stale etag, a session that is not live) to abort
   * without writing; it must be synchronous, and may be called more than once
   * (a backend may retry after a serialization conflict), so it only computes.
   * Returning null keeps the row as it is. With `tokenHash` set, the stored
   * hash is replaced in the same transaction; with `event` set (and events
   * on), that event is appended in it too.
   * @returns the stored session, or undefined when no row has this id.
   */
  modify(id: string, change: (current: SessionRecord) => Modification | null, options?: WriteOptions): Promise<SessionRecord | undefined>;

  /**
   * Marks at most `limit` sessions live at `now` that match the filter as
   * revoked at `now`, in one statement, durably (as WriteOptions.durable),
   * with a REVOKED event (cause "revoke") for each when events are on. At
   * least one of serverId and subject is set. Callers loop while a batch comes
   * back full, so that one call never holds a lock (or the event loop) for long.
   * @returns how many sessions were revoked.
   */
  revokeMatching(filter: SessionFilter, now: number, limit: number): Promise<number>;

  /**
   * Live sessions matching the filter, in insertion order, after the cursor.
   * `cursor` is 0 for the first page, then a previous page's `nextCursor` (or
   * one of its `cursors`).
   * @returns up to `limit` sessions, the cursor after each of them, the
   *   cursor after the last one, which is undefined when there are no more
   *   live sessions right now, and the event log's head read in the same
   *   snapshot as the page.
   */
  list(filter: SessionFilter, cursor: number, limit: number, now: number): MaybePromise<ListPage>;

  /**
   * Deletes at most `limit` sessions that are not live at `now`, oldest
   * deadline first, in one transaction; rows another purge holds are skipped,
   * so that several servers sweep one database without waiting on each other.
   * A deleted session that was never revoked gets an EXPIRED event (at `now`,
   * cause "ttl" or "idle", whichever deadline passed first) when events are on.
   * Callers loop to purge more, yielding between batches.
   * @returns how many rows were deleted, once committed.
   */
  purgeBatch(now: number, limit: number): Promise<number>;

  /**
   * The events after sequence `after`, ascending, at most `limit`, with the
   * log's head and retention mark read in the same snapshot. Sequences
   * increase in commit order: once a reader has seen sequence N, no event
   * numbered N or below commits later.
   */
  readEvents(after: number, limit: number): MaybePromise<EventPage>;

  /**
   * Deletes at most `limit` of the oldest events, in sequence order, while
   * each is older than `before` or not among the newest `keep`; stops at the
   * first one that is neither, so the log stays one contiguous range, and
   * raises its retention mark (EventPage.prunedThrough) to the last deleted.
   * @returns how many events were deleted, once committed.
   */
  pruneEvents(before: number, keep: number, limit: number): Promise<number>;

  /** How many sessions are live, and how many are dead but not purged. */
  countSessions(now: number): MaybePromise<{ live: number; dead: number }>;

  /**
   * Runs `reads` (reads of this repository, as they come: values or promises)
   * so that they may share one snapshot and the cost of starting a read
   * (SQLite: one read transaction); a backend whose reads are each a statement
   * of their own simply runs them. Nothing may be written from `reads`.
   */
  snapshot<T>(reads: () => T): T;
}

export interface SubjectLimit {
  readonly max: number;
  readonly evict: boolean;
  readonly now: number;
}

export interface Modification {
  readonly next: SessionRecord;
  readonly tokenHash?: Buffer;
  /** The event this change makes (none for a touch). */
  readonly event?: ModificationEvent;
}

export interface SessionFilter {
  /** Empty string: any. */
  readonly serverId: string;
  /** Empty string: any. */
  readonly subject: string;
  /**
   * Only sessions whose server_id is one of `exact` or starts with one of
   * `prefixes` (a caller's server_ids); undefined: any server_id.
   */
  readonly within?: ServerIdSet | undefined;
  /** revokeMatching only: the session with this id is left as it is. */
  readonly exceptId?: string | undefined;
}

/** A set of server_ids as stored patterns: exact names, and prefixes (a pattern "web-*" is the prefix "web-"). */
export interface ServerIdSet {
  readonly exact: readonly string[];
  readonly prefixes: readonly string[];
}

export interface ListPage {
  readonly sessions: SessionRecord[];
  /** cursors[i] is the cursor that continues after sessions[i]. */
  readonly cursors: number[];
  readonly nextCursor: number | undefined;
  /** The sequence of the last event committed when the page was read (0: none yet). */
  readonly sequence: number;
}

export interface WriteOptions {
  /**
   * Resolve only once the write is on stable storage, whatever the backend's
   * durability setting (SQLite at synchronous=NORMAL syncs the WAL only at
   * checkpoints). Revocations and token rotations ask for it: a power loss
   * must never bring back a revoked session or a replaced token.
   */
  readonly durable?: boolean;
}
