/**
 * Domain errors. Each carries a `kind` that the transport maps to a status in
 * exactly one table (src/transport/status.ts); domain code never knows gRPC.
 */
export type ErrorKind =
  | 'invalid-argument'
  | 'not-found'
  | 'already-exists'
  | 'failed-precondition'
  | 'unauthenticated'
  | 'permission-denied'
  | 'unavailable'
  | 'resource-exhausted'
  | 'out-of-range'
  | 'internal';

export abstract class DomainError extends Error {
  abstract readonly kind: ErrorKind;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request field is missing, malformed or over its limit. The message names the field. */
export class InvalidArgumentError extends DomainError {
  readonly kind = 'invalid-argument';
  constructor(readonly field: string, message: string) {
    super(message);
  }
}

/** The named session does not exist or is no longer live. */
export class NotFoundError extends DomainError {
  readonly kind = 'not-found';
}

/** A create was already done for this idempotency key, and its answer can no longer be repeated. */
export class AlreadyExistsError extends DomainError {
  readonly kind = 'already-exists';
}

/** The caller's precondition (an etag, the journal mode) does not hold. */
export class FailedPreconditionError extends DomainError {
  readonly kind = 'failed-precondition';
}

/** No credentials were presented where they are required. */
export class UnauthenticatedError extends DomainError {
  readonly kind = 'unauthenticated';
}

/** The caller is known, or local, but not allowed. */
export class PermissionDeniedError extends DomainError {
  readonly kind = 'permission-denied';
}

/** Storage is locked by another writer (SQLite's BUSY / LOCKED): retry later. */
export class StorageBusyError extends DomainError {
  readonly kind = 'unavailable';
}

/**
 * Too many writes are already waiting to be committed: refused at once, before
 * anything is written, so that latency stays bounded under a flood. Retryable.
 */
export class OverloadedError extends DomainError {
  readonly kind = 'unavailable';
}

/**
 * The database cannot serve this call now: unreachable, read-only (a standby
 * during or after a failover), or a statement ran past its timeout. Nothing
 * was written. Retryable.
 */
export class StorageUnavailableError extends DomainError {
  readonly kind = 'unavailable';
}

/**
 * The connection was lost after a write was sent and before its commit was
 * confirmed: it may or may not have committed. Retryable where retrying is
 * safe: a CreateSession with its request_id, a revoke, a delete with
 * allow_missing.
 */
export class OutcomeUnknownError extends DomainError {
  readonly kind = 'unavailable';
}

/** An insert met a row with the same unique key (id, token hash, or server_id + request_id): nothing was written. */
export class UniqueViolationError extends DomainError {
  readonly kind = 'already-exists';
}

/** A create would give a subject more live sessions than --max-sessions-per-subject, with the refuse policy: nothing was written. */
export class SessionLimitError extends DomainError {
  readonly kind = 'resource-exhausted';
}

/**
 * A WatchSessionEvents position the log no longer holds (retention pruned
 * past it) or never held (ahead of its newest event): list again, then watch
 * from the sequence that answer gives.
 */
export class OutOfRangeError extends DomainError {
  readonly kind = 'out-of-range';
}

/** Storage has no room left (disk full, or the configured size limit): nothing was written. */
export class StorageFullError extends DomainError {
  readonly kind = 'resource-exhausted';
}

/** Any other storage fault: I/O errors, corruption, a read-only file. */
export class StorageError extends DomainError {
  readonly kind = 'internal';
  /** @param code the backend's own code (an SQLite extended result code, a PostgreSQL SQLSTATE), for logs. */
  constructor(message: string, readonly code: string | undefined, options?: { cause?: unknown }) {
    super(message, options);
  }
}
