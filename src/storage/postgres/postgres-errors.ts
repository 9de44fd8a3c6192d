import {
  DomainError, OutcomeUnknownError, StorageBusyError, StorageError, StorageFullError, StorageUnavailableError, UniqueViolationError,
} from '../../domain/errors';

/*
 * PostgreSQL errors as domain errors, by SQLSTATE
 * (https://www.postgresql.org/docs/15/errcodes-appendix.html) or by the
 * driver's connection codes, never by message. A server error answers the
 * statement it came with: that statement (and its transaction) did not
 * commit. A connection that fails under a write is different: the commit may
 * have reached the server before the socket went, so the outcome is unknown.
 */

/** Codes of the postgres driver and of Node's sockets for a connection that could not be made: nothing was sent. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'CONNECT_TIMEOUT', 'CONNECTION_ENDED']);
/** Codes for a connection lost with statements on it. */
const LOST = new Set(['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'ECONNRESET', 'EPIPE']);

export type WritePhase = 'read' | 'write';

/** Whether `err` is the driver's or the socket's report of a connection lost with statements on it (not a server's answer). */
export function isConnectionLost(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && LOST.has(code);
}

/**
 * @param phase 'write' when a statement that changes rows, or the COMMIT of
 *   a transaction that did, may have reached the server.
 */
export function toStorageError(err: unknown, phase: WritePhase): unknown {
  if (err instanceof DomainError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return new StorageError('PostgreSQL storage failed', undefined, { cause: err });
  if (NOT_CONNECTED.has(code)) return new StorageUnavailableError(`cannot reach PostgreSQL (${code}); nothing was written; retry with backoff`, { cause: err });
  if (LOST.has(code)) {
    return phase === 'write'
      ? new OutcomeUnknownError(`the connection to PostgreSQL was lost before the commit was confirmed (${code}): the write may or may not have been applied; retrying CreateSession with the same request_id is safe`, { cause: err })
      : new StorageUnavailableError(`the connection to PostgreSQL was lost (${code}); retry with backoff`, { cause: err });
  }
  // The server ended the session under the statement (pg_terminate_backend, a
  // shutdown or crash). A COMMIT already written locally while it waited for a
  // synchronous standby stays committed, so under a write this is unknown too.
  if ((code === '57P01' || code === '57P02') && phase === 'write') {
    return new OutcomeUnknownError(`PostgreSQL ended the connection before the commit was confirmed (SQLSTATE ${code}): the write may or may not have been applied; retrying CreateSession with the same request_id is safe`, { cause: err });
  }
  if (code === '23505') return new UniqueViolationError('a session with this id, token or request_id is already stored: nothing was written', { cause: err });
  if (code === '25006') return new StorageUnavailableError('PostgreSQL is read-only here (a standby, or a primary being demoted): nothing was written; retry once failover completes', { cause: err });
  if (code === '57014') return new StorageUnavailableError('a PostgreSQL statement ran past database-statement-timeout and was cancelled: nothing was written', { cause: err });
  if (code === '40001' || code === '40P01' || code === '55P03') {
    return new StorageBusyError(`PostgreSQL refused the transaction for contention (${code}): nothing was written; retry with backoff`, { cause: err });
  }
  if (code === '53100') return new StorageFullError('PostgreSQL has no disk space left: the write was not applied', { cause: err });
  // Class 08 (connection exception), 53 (resources: connections, memory), 57P (shutdown, starting).
  if (code.startsWith('08') || code.startsWith('53') || code.startsWith('57P')) {
    return new StorageUnavailableError(`PostgreSQL cannot serve now (SQLSTATE ${code}): nothing was written; retry with backoff`, { cause: err });
  }
  if (code.startsWith('28')) return new StorageUnavailableError(`PostgreSQL refused the login (SQLSTATE ${code}): check database-url's user and password`, { cause: err });
  if (code === '3D000') return new StorageUnavailableError('the database named in database-url does not exist (SQLSTATE 3D000)', { cause: err });
  return new StorageError(`PostgreSQL storage failed (SQLSTATE ${code})`, code, { cause: err });
}
