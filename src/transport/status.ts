import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { DomainError, type ErrorKind } from '../domain/errors';
import type { Logger } from '../server/log';

/**
 * The one table from domain errors to gRPC codes
 * (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). The meaning beside
 * each code is why it was picked.
 */
const CODES: Record<ErrorKind, status> = {
  // The request itself is wrong; retrying it unchanged will fail again.
  'invalid-argument': status.INVALID_ARGUMENT,
  // The named session is not there (or no longer live).
  'not-found': status.NOT_FOUND,
  // A retried create whose first attempt succeeded, after its answer left the cache.
  'already-exists': status.ALREADY_EXISTS,
  // The system is not in the state the request needs (a stale etag, not in WAL mode).
  'failed-precondition': status.FAILED_PRECONDITION,
  // No valid credentials.
  unauthenticated: status.UNAUTHENTICATED,
  // Credentials, or the peer, are not allowed.
  'permission-denied': status.PERMISSION_DENIED,
  // Transient: another writer holds the lock. Clients may retry with backoff.
  unavailable: status.UNAVAILABLE,
  // Out of space: a quota the caller cannot fix by retrying at once.
  'resource-exhausted': status.RESOURCE_EXHAUSTED,
  // A resume point outside the event log: AIP-193's code for a position past what exists.
  'out-of-range': status.OUT_OF_RANGE,
  // A fault on our side; the message is generic and the cause goes to the log.
  internal: status.INTERNAL,
};

/** A gRPC error ready to pass to a callback. */
export function statusError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

/**
 * Turns anything thrown by a handler into a status. Domain errors keep their
 * code and message (written for the caller); internal storage faults and
 * unknown errors become INTERNAL with a generic message, the cause logged.
 */
export function toServiceError(err: unknown, method: string, log: Logger): ServiceError {
  if (err instanceof DomainError && err.kind !== 'internal') {
    if (err.kind === 'unavailable' || err.kind === 'resource-exhausted') log.warn('storage refused a call', { method, err });
    // The message names the principal and the permission, never a key.
    else if (err.kind === 'unauthenticated' || err.kind === 'permission-denied') log.warn('call refused', { method, code: err.kind, reason: err.message });
    return statusError(CODES[err.kind], err.message);
  }
  log.error('handler failed', { method, err });
  return statusError(status.INTERNAL, 'internal error; the server log has the details');
}
