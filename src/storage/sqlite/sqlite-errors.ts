import { DomainError, StorageBusyError, StorageError, StorageFullError, UniqueViolationError } from '../../domain/errors';

/**
 * Turns a better-sqlite3 SqliteError into a domain error by its extended code
 * (https://sqlite.org/rescode.html), never by its message. Domain errors thrown
 * inside a transaction callback pass through unchanged.
 */
export function toStorageError(err: unknown): unknown {
  if (err instanceof DomainError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return err;
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new StorageBusyError('storage is busy: another writer holds the database lock; retry with backoff', { cause: err });
  }
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    return new UniqueViolationError('a session with this id, token or request_id is already stored: nothing was written', { cause: err });
  }
  // SQLite reports ENOSPC and max_page_count alike as SQLITE_FULL.
  if (code === 'SQLITE_FULL') {
    return new StorageFullError('storage is full: the write was not applied', { cause: err });
  }
  return new StorageError(`storage failed (${code})`, code, { cause: err });
}

/** Runs `fn`, rethrowing SQLite errors as domain errors. */
export function guarded<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toStorageError(err);
  }
}
