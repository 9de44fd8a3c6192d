import { deadAt, sessionLimitReached, type SessionRecord } from '../../domain/session';
import type { EventPage } from '../../domain/session-events';
import type { ListPage, Modification, SessionFilter, SessionRepository, SubjectLimit, WriteOptions } from '../../domain/session-repository';
import { fromRow as fromColumns, type Row as SessionRow } from '../session-row';
import type { Pool, Row } from './pool';
import { appendEvents, atHead, pruneEvents, readEvents, rowsOf, withEvents, type NewEvent } from './postgres-events';

/** The driver's row, whose columns are those of SessionRow (bigints read as numbers, see pool.ts). */
const fromRow = (r: Row): SessionRecord => fromColumns(r as unknown as SessionRow);

const COLUMNS = `seq, id, server_id, subject, attributes, ip, user_agent, create_time, update_time, expire_time,
  idle_expire_time, last_active_time, idle_timeout_ms, token_rotate_time, revoke_time, version`;

const INSERT = `INSERT INTO sessions (id, token_hash, server_id, subject, attributes, ip, user_agent,
  create_time, update_time, expire_time, idle_expire_time, last_active_time, idle_timeout_ms, token_rotate_time,
  revoke_time, version, dead_at, request_id)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`;
const BY_ID = `SELECT ${COLUMNS} FROM sessions WHERE id = $1`;
const BY_ID_FOR_UPDATE = `${BY_ID} FOR UPDATE`;
const BY_TOKEN = `SELECT ${COLUMNS} FROM sessions WHERE token_hash = $1`;
const BY_REQUEST_ID = `SELECT ${COLUMNS} FROM sessions WHERE server_id = $1 AND request_id = $2`;
const SET = `attributes = $2, update_time = $3, idle_expire_time = $4, last_active_time = $5, token_rotate_time = $6,
  revoke_time = $7, version = $8, dead_at = $9`;
const UPDATE = `UPDATE sessions SET ${SET} WHERE id = $1`;
const UPDATE_WITH_TOKEN = `UPDATE sessions SET ${SET}, token_hash = $10 WHERE id = $1`;
// Rows another replica's purge holds are skipped, not waited for: that purge deletes them.
const PURGE = `DELETE FROM sessions WHERE seq IN
  (SELECT seq FROM sessions WHERE dead_at <= $1 ORDER BY dead_at LIMIT $2 FOR UPDATE SKIP LOCKED)`;
// A revoked session had its REVOKED event; the others expired, by the deadline that passed first (expiryCause).
const PURGE_WITH_EVENTS = withEvents(`${PURGE} RETURNING id, server_id, subject, revoke_time, expire_time, idle_expire_time`, {
  type: 'EXPIRED', time: '$1', cause: "CASE WHEN expire_time <= idle_expire_time THEN 'ttl' ELSE 'idle' END", only: 'revoke_time IS NULL',
});
const INSERT_WITH_EVENT = withEvents(`${INSERT} RETURNING id, server_id, subject, create_time`, { type: 'CREATED', time: 'create_time', cause: "''" });
const LIVE_OF_SUBJECT = 'SELECT seq, id FROM sessions WHERE server_id = $1 AND subject = $2 AND dead_at > $3 ORDER BY seq';
const COUNT = 'SELECT count(*) FILTER (WHERE dead_at > $1) AS live, count(*) FILTER (WHERE dead_at <= $1) AS dead FROM sessions';

/**
 * The filter as SQL from parameter $first on, and its parameters. A caller's
 * server_ids are two JSON arrays: exact names, and prefixes (starts_with).
 */
function where(filter: SessionFilter, first: number): { sql: string; params: unknown[] } {
  const parts: string[] = [];
  const params: unknown[] = [];
  const next = (v: unknown) => {
    params.push(v);
    return `$${first + params.length - 1}`;
  };
  if (filter.serverId) parts.push(`server_id = ${next(filter.serverId)}`);
  if (filter.subject) parts.push(`subject = ${next(filter.subject)}`);
  if (filter.exceptId) parts.push(`id <> ${next(filter.exceptId)}`);
  if (filter.within) {
    // json, not text[]: the pool skips fetching array types at connect (fetch_types: false), and the
    // driver serializes a parameter the server describes as json with JSON.stringify itself.
    const exact = next(filter.within.exact);
    const prefixes = next(filter.within.prefixes);
    parts.push(`(server_id IN (SELECT json_array_elements_text(${exact}::json))
      OR EXISTS (SELECT 1 FROM json_array_elements_text(${prefixes}::json) AS p(v) WHERE starts_with(server_id, p.v)))`);
  }
  return { sql: parts.length ? `${parts.join(' AND ')} AND ` : '', params };
}

/**
 * The storage contract on PostgreSQL. Every read is one statement; every
 * write is one statement, or one transaction that locks the row it reads
 * (modify), so replicas never lose each other's updates.
 */
export class PostgresRepository implements SessionRepository {
  readonly backend = 'postgres';

  /**
   * @param durableSetting SQL that makes one transaction's commit wait for the disk when the server's synchronous_commit does not; empty when it does.
   * @param events false: writes append no event (--session-events off); reads still work.
   */
  constructor(private readonly pool: Pool, private readonly durableSetting = '', private readonly events = true) {}

  async insert(s: SessionRecord, tokenHash: Buffer, requestId?: string, limit?: SubjectLimit): Promise<readonly string[]> {
    const params = [
      s.id, tokenHash, s.serverId, s.subject, JSON.stringify(s.attributes), s.ip, s.userAgent,
      s.createTime, s.updateTime, s.expireTime, s.idleExpireTime, s.lastActiveTime, s.idleTimeoutMs, s.tokenRotateTime,
      s.revokeTime, s.version, deadAt(s), requestId ?? null,
    ];
    if (!limit) {
      await this.pool.query(this.events ? INSERT_WITH_EVENT : INSERT, params, 'write');
      return [];
    }
    return this.pool.transaction(async (tx, wrote) => {
      // Every create of this subject, on every replica, takes this lock first:
      // no two count at once, so the limit is exact. A hash collision only
      // makes two subjects wait for each other.
      await tx.unsafe('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`${s.serverId}/${s.subject}`] as never[], { prepare: true });
      const live = await tx.unsafe<{ seq: number; id: string }[]>(LIVE_OF_SUBJECT, [s.serverId, s.subject, limit.now] as never[], { prepare: true });
      const evicted: string[] = [];
      if (live.length >= limit.max) {
        if (!limit.evict) throw sessionLimitReached(s, limit.max);
        const victims = live.slice(0, live.length - limit.max + 1);
        wrote();
        await tx.unsafe('UPDATE sessions SET revoke_time = $1, dead_at = $1 WHERE seq = ANY(SELECT json_array_elements_text($2::json)::bigint)',
          [limit.now, victims.map((v) => v.seq)] as never[], { prepare: true });
        evicted.push(...victims.map((v) => v.id));
      }
      wrote();
      await tx.unsafe(INSERT, params as never[], { prepare: true });
      if (this.events) {
        // The victims are of this session's server and subject.
        const events: NewEvent[] = evicted.map((id) => ({ type: 'REVOKED', session: { id, serverId: s.serverId, subject: s.subject }, time: limit.now, cause: 'limit' }));
        events.push({ type: 'CREATED', session: s, time: s.createTime, cause: '' });
        await appendEvents(tx, events);
      }
      return evicted;
    });
  }

  async findByRequestId(serverId: string, requestId: string): Promise<SessionRecord | undefined> {
    const [row] = await this.pool.query(BY_REQUEST_ID, [serverId, requestId], 'read');
    return row && fromRow(row);
  }

  async findById(id: string): Promise<SessionRecord | undefined> {
    const [row] = await this.pool.query(BY_ID, [id], 'read');
    return row && fromRow(row);
  }

  async findByTokenHash(tokenHash: Buffer): Promise<SessionRecord | undefined> {
    const [row] = await this.pool.query(BY_TOKEN, [tokenHash], 'read');
    return row && fromRow(row);
  }

  modify(id: string, change: (current: SessionRecord) => Modification | null, options?: WriteOptions): Promise<SessionRecord | undefined> {
    return this.pool.transaction(async (tx, wrote) => {
      if (options?.durable && this.durableSetting) await tx.unsafe(this.durableSetting);
      // FOR UPDATE: another replica's modify of this row waits until we commit, then reads what we wrote.
      const [row] = await tx.unsafe<Row[]>(BY_ID_FOR_UPDATE, [id], { prepare: true });
      if (!row) return undefined;
      const current = fromRow(row);
      const m = change(current);
      if (!m) return current;
      const n = m.next;
      const params: unknown[] = [id, JSON.stringify(n.attributes), n.updateTime, n.idleExpireTime, n.lastActiveTime, n.tokenRotateTime, n.revokeTime, n.version, deadAt(n)];
      wrote();
      if (m.tokenHash) await tx.unsafe(UPDATE_WITH_TOKEN, [...params, m.tokenHash] as never[], { prepare: true });
      else await tx.unsafe(UPDATE, params as never[], { prepare: true });
      if (m.event && this.events) await appendEvents(tx, [{ ...m.event, session: n }]);
      return n;
    });
  }

  async revokeMatching(filter: SessionFilter, now: number, limit: number): Promise<number> {
    const w = where(filter, 3);
    // Bounded: a subject with a million sessions is revoked a batch per transaction.
    const update = `UPDATE sessions SET revoke_time = $1, dead_at = $1
      WHERE seq IN (SELECT seq FROM sessions WHERE ${w.sql}dead_at > $1 LIMIT $2 FOR UPDATE)`;
    const text = this.events ? withEvents(`${update} RETURNING id, server_id, subject`, { type: 'REVOKED', time: '$1', cause: "'revoke'" }) : update;
    const revoked = (rows: Row[] & { count: number }) => (this.events ? (rows[0]!['n'] as number) : rows.count);
    if (!this.durableSetting) return revoked(await this.pool.query(text, [now, limit, ...w.params], 'write'));
    return this.pool.transaction(async (tx, wrote) => {
      await tx.unsafe(this.durableSetting);
      wrote();
      return revoked(await tx.unsafe<Row[]>(text, [now, limit, ...w.params] as never[], { prepare: true }));
    });
  }

  async list(filter: SessionFilter, cursor: number, limit: number, now: number): Promise<ListPage> {
    const w = where(filter, 4);
    // One row beyond the page tells whether another page exists (AIP-158: the last page has no next token).
    // The head comes from the page's own snapshot: a watch from it misses no change the page does not show.
    const { rows, head } = rowsOf(await this.pool.query(
      atHead(`SELECT ${COLUMNS} FROM sessions WHERE ${w.sql}seq > $1 AND dead_at > $2 ORDER BY seq LIMIT $3`, 'seq'),
      [cursor, now, limit + 1, ...w.params], 'read',
    ), 'seq');
    const more = rows.length > limit;
    const pageRows = more ? rows.slice(0, limit) : rows;
    return {
      sessions: pageRows.map(fromRow),
      cursors: pageRows.map((r) => r['seq'] as number),
      nextCursor: more ? (pageRows[pageRows.length - 1]!['seq'] as number) : undefined,
      sequence: head,
    };
  }

  async purgeBatch(now: number, limit: number): Promise<number> {
    if (!this.events) return (await this.pool.query(PURGE, [now, limit], 'write')).count;
    const [row] = await this.pool.query<{ n: number }>(PURGE_WITH_EVENTS, [now, limit], 'write');
    return row!.n;
  }

  readEvents(after: number, limit: number): Promise<EventPage> {
    return readEvents(this.pool, after, limit);
  }

  pruneEvents(before: number, keep: number, limit: number): Promise<number> {
    return pruneEvents(this.pool, before, keep, limit);
  }

  async countSessions(now: number): Promise<{ live: number; dead: number }> {
    const [row] = await this.pool.query<{ live: number; dead: number }>(COUNT, [now], 'read');
    return { live: row!.live, dead: row!.dead };
  }

  snapshot<T>(reads: () => T): T {
    // Each read is a statement of its own, pipelined on the pool's connections.
    return reads();
  }
}
