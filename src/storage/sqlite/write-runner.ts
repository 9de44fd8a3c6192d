import type { WriteOptions } from '../../domain/session-repository';

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

/**
 * Runs purge batches somewhere other than the WriteRunner's connection. A
 * purge dirties a page or more per deleted row in every index, so running it
 * on the checkpoint worker's connection, paced by its checkpoints, keeps a
 * purge of millions of rows from stalling every other call.
 */
export interface PurgeRunner {
  /**
   * A purge batch in a transaction of its own.
   * @returns how many rows were deleted, once committed.
   */
  purgeBatch(now: number, limit: number): Promise<number>;
}
