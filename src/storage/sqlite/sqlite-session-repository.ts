import type { Database, Statement } from 'better-sqlite3';
import { deadAt, sessionLimitReached, type SessionRecord } from '../../domain/session';
import type { ListPage, Modification, SessionFilter, SubjectLimit } from '../../domain/session-repository';
import { fromRow, type Row } from '../session-row';
import { guarded } from './sqlite-errors';
import type { SqliteEventLog } from './sqlite-events';


/** The columns every session read selects, in the order rowOf reads them. */
export const COLUMNS = `seq, id, server_id, subject, attributes, ip, user_agent, create_time, update_time, expire_time,
  idle_expire_time, last_active_time, idle_timeout_ms, token_rotate_time, revoke_time, version`;

/**
 * A row read in raw mode (an array in COLUMNS order) as a Row. better-sqlite3
 * builds a named-column object through one V8 property set per column, which
 * cost more than the index lookup itself on ValidateSession; an array and
 * this literal (one hidden class) are much cheaper.
 */
function rowOf(v: unknown[]): Row {
  return {
    seq: v[0] as number,
    id: v[1] as string,
    server_id: v[2] as string,
    subject: v[3] as string,
    attributes: v[4] as string,
    ip: v[5] as string,
    user_agent: v[6] as string,
    create_time: v[7] as number,
    update_time: v[8] as number,
    expire_time: v[9] as number,
    idle_expire_time: v[10] as number,
    last_active_time: v[11] as number,
    idle_timeout_ms: v[12] as number,
    token_rotate_time: v[13] as number,
    revoke_time: v[14] as number | null,
    version: v[15] as number,
  };
}

/** Which statements a filter takes, and the parameters of its server_id set. */
function scopeOf(filter: SessionFilter): ['any', object] | ['within', { exact: string; prefixes: string }] {
  if (!filter.within) return ['any', {}];
  return ['within', { exact: JSON.stringify(filter.within.exact), prefixes: JSON.stringify(filter.within.prefixes) }];
}

/**
 * The rows of one better-sqlite3 connection, every statement prepared once,
 * every method synchronous: writes run inside the group committer's units
 * (SqliteRepository is the storage contract on top).
 */
export class SqliteSessionRepository {
  private readonly insertStmt: Statement;
  private readonly byId: Statement<[string], unknown[]>;
  private readonly byToken: Statement<[Buffer], unknown[]>;
  private readonly byRequestId: Statement<[string, string], unknown[]>;
  private readonly updateStmt: Statement;
  private readonly updateWithTokenStmt: Statement;
  private readonly lists: Record<'any' | 'within', Record<'all' | 'server' | 'subject' | 'both', Statement<unknown[], unknown[]>>>;
  private readonly revokes: Record<'any' | 'within', Record<'server' | 'subject' | 'both', Statement<unknown[], unknown[]>>>;
  private readonly countStmt: Statement<[{ now: number }], { live: number; dead: number }>;
  private readonly modifyTx: (id: string, change: (current: SessionRecord) => Modification | null) => SessionRecord | undefined;

  private readonly liveOfSubject: Statement<[string, string, number], unknown[]>;
  private readonly revokeBySeq: Statement<[number, number, number]>;
  private readonly beginStmt: Statement;
  private readonly commitStmt: Statement;

  /** max_page_count around revocations (see revocationReservePages); absent without --max-db-size. */
  private readonly reserve: { raise: Statement; lower: Statement } | undefined;

  constructor(private readonly db: Database, readonly events: SqliteEventLog, pageLimits?: { normal: number; revoking: number }) {
    this.reserve = pageLimits && {
      raise: db.prepare(`PRAGMA max_page_count = ${pageLimits.revoking | 0}`),
      lower: db.prepare(`PRAGMA max_page_count = ${pageLimits.normal | 0}`),
    };
    this.insertStmt = db.prepare(`INSERT INTO sessions (id, token_hash, server_id, subject, attributes, ip, user_agent,
      create_time, update_time, expire_time, idle_expire_time, last_active_time, idle_timeout_ms, token_rotate_time,
      revoke_time, version, dead_at, request_id)
      VALUES (@id, @tokenHash, @serverId, @subject, @attributes, @ip, @userAgent, @createTime, @updateTime, @expireTime,
      @idleExpireTime, @lastActiveTime, @idleTimeoutMs, @tokenRotateTime, @revokeTime, @version, @deadAt, @requestId)`);
    this.byId = db.prepare<[string], unknown[]>(`SELECT ${COLUMNS} FROM sessions WHERE id = ?`).raw(true);
    this.byToken = db.prepare<[Buffer], unknown[]>(`SELECT ${COLUMNS} FROM sessions WHERE token_hash = ?`).raw(true);
    this.byRequestId = db.prepare<[string, string], unknown[]>(`SELECT ${COLUMNS} FROM sessions WHERE server_id = ? AND request_id = ?`).raw(true);
    const set = `attributes = @attributes, update_time = @updateTime, idle_expire_time = @idleExpireTime,
      last_active_time = @lastActiveTime, token_rotate_time = @tokenRotateTime, revoke_time = @revokeTime,
      version = @version, dead_at = @deadAt`;
    this.updateStmt = db.prepare(`UPDATE sessions SET ${set} WHERE id = @id`);
    this.updateWithTokenStmt = db.prepare(`UPDATE sessions SET ${set}, token_hash = @tokenHash WHERE id = @id`);
    // A caller's server_ids, as JSON arrays bound to @exact and @prefixes (see within()).
    const scoped = `(server_id IN (SELECT value FROM json_each(@exact))
      OR EXISTS (SELECT 1 FROM json_each(@prefixes) AS p WHERE substr(server_id, 1, length(p.value)) = p.value))`;
    const page = (where: string) =>
      db.prepare<unknown[], unknown[]>(`SELECT ${COLUMNS} FROM sessions WHERE ${where} seq > @cursor AND dead_at > @now ORDER BY seq LIMIT @limit`).raw(true);
    const pages = (extra: string) => ({
      all: page(extra),
      server: page(`${extra} server_id = @serverId AND`),
      subject: page(`${extra} subject = @subject AND`),
      both: page(`${extra} server_id = @serverId AND subject = @subject AND`),
    });
    this.lists = { any: pages(''), within: pages(`${scoped} AND`) };
    // Bounded: a subject with a million sessions is revoked a batch per write unit.
    const revoke = (where: string) =>
      db.prepare<unknown[], unknown[]>(`UPDATE sessions SET revoke_time = @now, dead_at = @now
        WHERE seq IN (SELECT seq FROM sessions WHERE ${where} AND dead_at > @now AND id <> @exceptId LIMIT @limit)
        RETURNING id, server_id, subject`).raw(true);
    const revokes = (extra: string) => ({
      server: revoke(`${extra}server_id = @serverId`),
      subject: revoke(`${extra}subject = @subject`),
      both: revoke(`${extra}server_id = @serverId AND subject = @subject`),
    });
    this.revokes = { any: revokes(''), within: revokes(`${scoped} AND `) };
    this.liveOfSubject = db.prepare<[string, string, number], unknown[]>(
      'SELECT seq, id FROM sessions WHERE server_id = ? AND subject = ? AND dead_at > ? ORDER BY seq',
    ).raw(true);
    this.revokeBySeq = db.prepare<[number, number, number]>('UPDATE sessions SET revoke_time = ?, dead_at = ? WHERE seq = ?');
    this.beginStmt = db.prepare('BEGIN DEFERRED');
    this.commitStmt = db.prepare('COMMIT');
    this.countStmt = db.prepare(
      // Named, not ?1: better-sqlite3 treats ?NNN as named and refuses a positional value.
      'SELECT coalesce(sum(dead_at > @now), 0) AS live, coalesce(sum(dead_at <= @now), 0) AS dead FROM sessions',
    );
    // IMMEDIATE takes the write lock before the read, so no other connection
    // can change the row between our read and our write (no SQLITE_BUSY_SNAPSHOT).
    const tx = db.transaction((id: string, change: (current: SessionRecord) => Modification | null) => {
      const row = this.byId.get(id);
      if (!row) return undefined;
      const current = fromRow(rowOf(row));
      const m = change(current);
      if (!m) return current;
      const params = this.params(m.next);
      const write = () => {
        if (m.tokenHash) this.updateWithTokenStmt.run({ ...params, tokenHash: m.tokenHash });
        else this.updateStmt.run(params);
        if (m.event) this.events.append(m.event.type, m.next, m.event.time, m.event.cause);
      };
      if (m.event?.type === 'REVOKED') this.revoking(write);
      else write();
      return m.next;
    });
    this.modifyTx = (id, change) => tx.immediate(id, change);
  }

  /**
   * Inside a write unit, so no other create runs between the count and the
   * insert: the limit is exact.
   * @returns the ids revoked to make room.
   */
  insert(session: SessionRecord, tokenHash: Buffer, requestId?: string, limit?: SubjectLimit): string[] {
    return guarded(() => {
      const evicted: string[] = [];
      if (limit) {
        const live = this.liveOfSubject.all(session.serverId, session.subject, limit.now);
        if (live.length >= limit.max) {
          if (!limit.evict) throw sessionLimitReached(session, limit.max);
          for (const [seq, id] of live.slice(0, live.length - limit.max + 1)) {
            this.revokeBySeq.run(limit.now, limit.now, seq as number);
            evicted.push(id as string);
            this.events.append('REVOKED', { id: id as string, serverId: session.serverId, subject: session.subject }, limit.now, 'limit');
          }
        }
      }
      this.insertStmt.run({ ...this.params(session), tokenHash, requestId: requestId ?? null });
      this.events.append('CREATED', session, session.createTime);
      return evicted;
    });
  }

  findByRequestId(serverId: string, requestId: string): SessionRecord | undefined {
    return guarded(() => {
      const row = this.byRequestId.get(serverId, requestId);
      return row && fromRow(rowOf(row));
    });
  }

  findById(id: string): SessionRecord | undefined {
    return guarded(() => {
      const row = this.byId.get(id);
      return row && fromRow(rowOf(row));
    });
  }

  findByTokenHash(tokenHash: Buffer): SessionRecord | undefined {
    return guarded(() => {
      const row = this.byToken.get(tokenHash);
      return row && fromRow(rowOf(row));
    });
  }

  modify(id: string, change: (current: SessionRecord) => Modification | null): SessionRecord | undefined {
    return guarded(() => this.modifyTx(id, change));
  }

  revokeMatching(filter: SessionFilter, now: number, limit: number): number {
    const which = filter.serverId && filter.subject ? 'both' : filter.serverId ? 'server' : 'subject';
    const [set, within] = scopeOf(filter);
    // Ids are never empty: '' keeps none.
    return guarded(() => this.revoking(() => {
      const rows = this.revokes[set][which].all({ serverId: filter.serverId, subject: filter.subject, ...within, now, limit, exceptId: filter.exceptId ?? '' });
      this.events.appendRevoked(rows, now, 'revoke');
      return rows.length;
    }));
  }

  list(filter: SessionFilter, cursor: number, limit: number, now: number): ListPage {
    const which = filter.serverId && filter.subject ? 'both' : filter.serverId ? 'server' : filter.subject ? 'subject' : 'all';
    const [set, within] = scopeOf(filter);
    // One row beyond the page tells whether another page exists, so the last
    // page carries no next token (AIP-158) and clients need no extra round trip.
    const [rows, sequence] = guarded(() => this.snapshot(() => [
      this.lists[set][which].all({ serverId: filter.serverId, subject: filter.subject, ...within, cursor, now, limit: limit + 1 }).map(rowOf),
      this.events.head(),
    ] as const));
    const more = rows.length > limit;
    const pageRows = more ? rows.slice(0, limit) : rows;
    return {
      sessions: pageRows.map(fromRow),
      cursors: pageRows.map((r) => r.seq),
      nextCursor: more ? pageRows[pageRows.length - 1]!.seq : undefined,
      sequence,
    };
  }

  purgeBatch(now: number, limit: number): number {
    return guarded(() => this.events.purgeBatch(now, limit));
  }

  snapshot<T>(reads: () => T): T {
    // Each statement outside a transaction begins and ends a read of its own:
    // in WAL mode that is a lock on a read mark in the -shm file and a check of
    // the database size, three system calls, about a fifth of a token lookup
    // here. One deferred transaction around a batch pays for that once. It is
    // synchronous from BEGIN to COMMIT, so no group-commit flush can start
    // inside it, and the snapshot is released before anything else runs.
    if (this.db.inTransaction) return reads();
    this.beginStmt.run();
    try {
      return reads();
    } finally {
      if (this.db.inTransaction) this.commitStmt.run();
    }
  }

  countSessions(now: number): { live: number; dead: number } {
    return guarded(() => this.countStmt.get({ now })!);
  }

  /** Runs a revocation with the reserve pages of --max-db-size open to it: a full database still revokes. */
  private revoking<T>(write: () => T): T {
    if (!this.reserve) return write();
    this.reserve.raise.get();
    try {
      return write();
    } finally {
      this.reserve.lower.get();
    }
  }

  private params(s: SessionRecord) {
    return {
      id: s.id,
      serverId: s.serverId,
      subject: s.subject,
      attributes: JSON.stringify(s.attributes),
      ip: s.ip,
      userAgent: s.userAgent,
      createTime: s.createTime,
      updateTime: s.updateTime,
      expireTime: s.expireTime,
      idleExpireTime: s.idleExpireTime,
      lastActiveTime: s.lastActiveTime,
      idleTimeoutMs: s.idleTimeoutMs,
      tokenRotateTime: s.tokenRotateTime,
      revokeTime: s.revokeTime,
      version: s.version,
      deadAt: deadAt(s),
    };
  }
}
