import type { SessionRecord } from './session';

/**
 * The storage contract. The domain owns it (imports run storage -> domain);
 * every implementation must pass test/helpers/repository-contract.ts.
 *
 * Errors, for every method that touches storage:
 * - StorageBusyError: another connection held the lock past the busy timeout.
 * - StorageFullError: the disk or max_page_count is full; nothing was written.
 * - StorageError: any other fault (I/O, corruption, read-only file).
 * Methods that write are atomic: on any error nothing is changed.
 */
export interface SessionRepository {
  /**
   * Stores a new session with the hash of its token and, optionally, the
   * CreateSession idempotency key.
   * @throws StorageError with sqliteCode SQLITE_CONSTRAINT_UNIQUE if the id, the
   *   token hash, or the (serverId, requestId) pair exists.
   */
  insert(session: SessionRecord, tokenHash: Buffer, requestId?: string): void;

  /**
   * The session created with this idempotency key for this server, in any
   * state, or undefined (never created, or purged).
   */
  findByRequestId(serverId: string, requestId: string): SessionRecord | undefined;

  /** The session with this id in any state (live, expired, revoked), or undefined once purged. */
  findById(id: string): SessionRecord | undefined;

  /** The session whose token hashes to `tokenHash`, in any state, or undefined. */
  findByTokenHash(tokenHash: Buffer): SessionRecord | undefined;

  /**
   * Reads the session, passes it to `change` and stores what it returns, all in
   * one transaction. `change` may throw a domain error (a stale etag, a session
   * that is not live) to abort without writing; it must not be async.
   * Returning null keeps the row as it is. With `tokenHash` set, the stored hash
   * is replaced in the same transaction.
   * @returns the stored session, or undefined when no row has this id.
   */
  modify(id: string, change: (current: SessionRecord) => Modification | null): SessionRecord | undefined;

  /**
   * Marks at most `limit` sessions live at `now` that match the filter as
   * revoked at `now`, in one statement. At least one of serverId and subject
   * is set. Callers loop while a batch comes back full, so that one call never
   * holds the write lock (or the event loop) for long.
   * @returns how many sessions were revoked.
   */
  revokeMatching(filter: SessionFilter, now: number, limit: number): number;

  /**
   * Live sessions matching the filter, in insertion order, after the cursor.
   * `cursor` is 0 for the first page, then a previous page's `nextCursor` (or
   * one of its `cursors`).
   * @returns up to `limit` sessions, the cursor after each of them, and the
   *   cursor after the last one, which is undefined when there are no more
   *   live sessions right now.
   */
  list(filter: SessionFilter, cursor: number, limit: number, now: number): ListPage;

  /**
   * Deletes at most `limit` sessions that are not live at `now`, oldest
   * deadline first, in one transaction. Callers loop to purge more, yielding
   * between batches.
   * @returns how many rows were deleted.
   */
  purgeBatch(now: number, limit: number): number;

  /** How many sessions are live, and how many are dead but not purged. */
  countSessions(now: number): { live: number; dead: number };

  /**
   * Runs `reads` (synchronous reads of this repository) against one consistent
   * snapshot, so that they see the same state and share the cost of starting a
   * read; inside a write already under way, simply runs them. Nothing may be
   * written from `reads`.
   */
  snapshot<T>(reads: () => T): T;
}

export interface Modification {
  readonly next: SessionRecord;
  readonly tokenHash?: Buffer;
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
}

/**
 * Runs purge batches somewhere other than the WriteRunner's connection. A
 * purge dirties a page or more per deleted row in every index, so an
 * implementation that runs it off the event loop (SQLite: on the checkpoint
 * worker's connection, paced by its checkpoints) keeps a purge of millions of
 * rows from stalling every other call.
 */
export interface PurgeRunner {
  /**
   * SessionRepository.purgeBatch in a transaction of its own.
   * @returns how many rows were deleted, once committed.
   */
  purgeBatch(now: number, limit: number): Promise<number>;
}

/**
 * Runs a synchronous unit of repository work atomically and resolves once it
 * is committed. Implementations may group units from concurrent calls into one
 * transaction (group commit); a unit that throws is rolled back alone and its
 * promise rejects with what it threw (or the mapped storage error).
 */
export interface WriteRunner {
  /**
   * @throws OverloadedError at once, running nothing, when too many units
   *   already wait; otherwise what the unit threw, or the mapped storage error.
   */
  run<T>(work: () => T, options?: WriteOptions): Promise<T>;
}

export interface WriteOptions {
  /**
   * Resolve only once the unit is on stable storage, whatever the synchronous
   * setting (SQLite at NORMAL syncs the WAL only at checkpoints). Revocations
   * and token rotations ask for it: a power loss must never bring back a
   * revoked session or a replaced token.
   */
  readonly durable?: boolean;
}
