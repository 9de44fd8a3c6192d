import { StorageError } from '../domain/errors';
import type { SessionRecord } from '../domain/session';

/*
 * A stored session row as both backends read it (the same columns in SQLite
 * and PostgreSQL), and its check: a row no sessiond wrote is refused here,
 * once, for either backend.
 */

/** The columns of a session row, by their SQL names. */
export interface Row {
  seq: number;
  id: string;
  server_id: string;
  subject: string;
  attributes: string;
  ip: string;
  user_agent: string;
  create_time: number;
  update_time: number;
  expire_time: number;
  idle_expire_time: number;
  last_active_time: number;
  idle_timeout_ms: number;
  token_rotate_time: number;
  revoke_time: number | null;
  version: number;
}

/** The largest time a JS Date (and so a protobuf Timestamp from one) can hold: +-100,000,000 days. */
const MAX_TIME_MS = 8.64e15;
const TIME_COLUMNS = ['create_time', 'update_time', 'expire_time', 'idle_expire_time', 'last_active_time', 'token_rotate_time'] as const;

function corrupt(r: Row, what: string): StorageError {
  return new StorageError(`stored session ${r.id} (seq ${r.seq}) is corrupt: ${what}`, undefined);
}

/**
 * A row as a SessionRecord, refusing a row no sessiond wrote (edited by hand,
 * or damaged): attributes that are not a JSON object of strings, or a time no
 * Date can hold, which would otherwise fail later, in grpc-js's response
 * serializer, out of reach of the error table and the log, and end the
 * ValidateSessionStream of every session multiplexed on it.
 * @throws StorageError (INTERNAL) naming the row and the column.
 */
export function fromRow(r: Row): SessionRecord {
  for (const column of TIME_COLUMNS) {
    if (!(Math.abs(r[column]) <= MAX_TIME_MS)) throw corrupt(r, `${column} ${r[column]} is not a time`);
  }
  if (r.revoke_time !== null && !(Math.abs(r.revoke_time) <= MAX_TIME_MS)) throw corrupt(r, `revoke_time ${r.revoke_time} is not a time`);
  let attributes: unknown;
  try {
    attributes = JSON.parse(r.attributes);
  } catch {
    throw corrupt(r, 'attributes are not JSON');
  }
  if (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)
    || Object.values(attributes).some((v) => typeof v !== 'string')) {
    throw corrupt(r, 'attributes are not an object of strings');
  }
  return {
    id: r.id,
    serverId: r.server_id,
    subject: r.subject,
    attributes: attributes as Record<string, string>,
    ip: r.ip,
    userAgent: r.user_agent,
    createTime: r.create_time,
    updateTime: r.update_time,
    expireTime: r.expire_time,
    idleExpireTime: r.idle_expire_time,
    lastActiveTime: r.last_active_time,
    idleTimeoutMs: r.idle_timeout_ms,
    tokenRotateTime: r.token_rotate_time,
    revokeTime: r.revoke_time,
    version: r.version,
  };
}

