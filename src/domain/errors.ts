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

/** Storage is locked by another writer (SQLITE_BUSY / SQLITE_LOCKED): retry later. */
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

/** Storage has no room left (SQLITE_FULL): nothing was written. */
export class StorageFullError extends DomainError {
  readonly kind = 'resource-exhausted';
}

/** Any other storage fault: I/O errors, corruption, a read-only file. */
export class StorageError extends DomainError {
  readonly kind = 'internal';
  constructor(message: string, readonly sqliteCode: string | undefined, options?: { cause?: unknown }) {
    super(message, options);
  }
}
