import type { TransactionSql } from 'postgres';
import type { EventCause, EventPage, SessionEvent, SessionEventType } from '../../domain/session-events';
import type { Pool, Row } from './pool';

/*
 * The session events outbox on PostgreSQL (migration 2). Every event is
 * written by its change's own statement or transaction, so it commits
 * exactly when the change does.
 *
 * Numbers come from sessiond_event_log.last_sequence, raised by the writing
 * transaction itself. The UPDATE's row lock is held until commit: the next
 * writer, on any replica, waits for it and then reads the committed value, so
 * sequences are handed out in commit order, and a reader that saw N never
 * sees a number <= N commit later (an identity column, or a sequence, hands
 * numbers out at insert and lets them commit in any order). A rollback gives
 * its numbers back, so there are no gaps. The counter is taken last, after
 * the session rows and advisory locks, so that it is held briefly and no lock
 * cycle forms; a write that makes no event never touches it.
 */

/** What a batch statement's rows turn into, as SQL over its RETURNING columns. */
export interface EventsOf {
  readonly type: SessionEventType;
  readonly time: string;
  readonly cause: string;
  /** Which rows get an event (all when unset). */
  readonly only?: string;
}

/**
 * `modifying` (an INSERT, UPDATE or DELETE returning id, server_id, subject
 * and what `events` reads) as one statement that also appends an event per
 * row it returns; it answers `n`, the rows modified. The counter's UPDATE
 * reads `e`, so PostgreSQL finishes `modifying` (its row locks, its unique
 * checks) before it takes the counter's lock, and skips it when `e` is empty.
 */
export function withEvents(modifying: string, events: EventsOf): string {
  return `WITH s AS (${modifying}),
  e AS (SELECT id, server_id, subject, ${events.time} AS time, ${events.cause}::text AS cause FROM s${events.only ? ` WHERE ${events.only}` : ''}),
  c AS (UPDATE sessiond_event_log SET last_sequence = last_sequence + (SELECT count(*) FROM e)
        WHERE id = 1 AND EXISTS (SELECT 1 FROM e) RETURNING last_sequence - (SELECT count(*) FROM e) AS base),
  w AS (INSERT INTO session_events (sequence, type, session_id, server_id, subject, time, cause)
        SELECT c.base + row_number() OVER (), '${events.type}', e.id, e.server_id, e.subject, e.time, e.cause FROM c, e)
  SELECT count(*) AS n FROM s`;
}

/** The last statement of a transaction that made these events, in this order. */
const APPEND = `WITH c AS (UPDATE sessiond_event_log SET last_sequence = last_sequence + $1 WHERE id = 1 RETURNING last_sequence - $1 AS base)
  INSERT INTO session_events (sequence, type, session_id, server_id, subject, time, cause)
  SELECT c.base + e.ord, e.type, e.session_id, e.server_id, e.subject, e.time, e.cause
  FROM c, ROWS FROM (json_to_recordset($2::json) AS (type text, session_id text, server_id text, subject text, time bigint, cause text))
    WITH ORDINALITY AS e(type, session_id, server_id, subject, time, cause, ord)`;

export interface NewEvent {
  readonly type: SessionEventType;
  readonly session: { readonly id: string; readonly serverId: string; readonly subject: string };
  readonly time: number;
  readonly cause: EventCause;
}

/** Appends `events` in `tx`: call it after the transaction's other writes. */
export async function appendEvents(tx: TransactionSql, events: readonly NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  const rows = events.map((e) => ({ type: e.type, session_id: e.session.id, server_id: e.session.serverId, subject: e.session.subject, time: e.time, cause: e.cause }));
  await tx.unsafe(APPEND, [events.length, rows] as never[], { prepare: true });
}

/**
 * `inner` (a query, ordered by `order`) with the log's head and retention
 * mark, in one statement and so one snapshot. The one-row table comes first,
 * so the head is there even when `inner` has no rows; rowsOf drops that row.
 */
export function atHead(inner: string, order: string): string {
  // id = 1: the planner then knows the table is one row (the primary key),
  // whatever its statistics say, and costs the join as the page alone (no JIT).
  return `SELECT l.last_sequence AS log_head, l.pruned_through AS log_pruned_through, p.*
    FROM sessiond_event_log l LEFT JOIN LATERAL (${inner}) p ON true WHERE l.id = 1 ORDER BY p.${order}`;
}

/** The rows of an atHead answer, without the one that carries only the head. */
export function rowsOf(rows: readonly Row[], order: string): { rows: Row[]; head: number; prunedThrough: number } {
  const first = rows[0]!;
  return { rows: rows.filter((r) => r[order] !== null), head: first['log_head'] as number, prunedThrough: first['log_pruned_through'] as number };
}

const READ = atHead('SELECT sequence, type, session_id, server_id, subject, time, cause FROM session_events WHERE sequence > $1 ORDER BY sequence LIMIT $2', 'sequence');

// The oldest `limit` events, up to the first one that is neither older than
// $1 nor outside the newest $2. The mark's UPDATE reads `d`, so it runs after
// the deletes: every pruner locks events, then the log row, as writers lock the
// log row and then only insert, so no cycle. Two replicas pruning at once
// delete each event once, and GREATEST keeps the higher mark.
const PRUNE = `WITH o AS (SELECT e.sequence, e.sequence > l.last_sequence - $2 AND e.time >= $1 AS stop
         FROM session_events e CROSS JOIN sessiond_event_log l ORDER BY e.sequence LIMIT $3),
  d AS (DELETE FROM session_events WHERE sequence IN
          (SELECT sequence FROM o WHERE sequence < coalesce((SELECT min(sequence) FROM o WHERE stop), 9223372036854775807))
        RETURNING sequence),
  m AS (UPDATE sessiond_event_log SET pruned_through = GREATEST(pruned_through, (SELECT max(sequence) FROM d))
        WHERE id = 1 AND EXISTS (SELECT 1 FROM d) RETURNING 1)
  SELECT count(*) AS n FROM d`;

export async function readEvents(pool: Pool, after: number, limit: number): Promise<EventPage> {
  const page = rowsOf(await pool.query(READ, [after, limit], 'read'), 'sequence');
  return { events: page.rows.map(eventOf), head: page.head, prunedThrough: page.prunedThrough };
}

export async function pruneEvents(pool: Pool, before: number, keep: number, limit: number): Promise<number> {
  const [row] = await pool.query<{ n: number }>(PRUNE, [before, keep, limit], 'write');
  return row!.n;
}

/**
 * Records at open whether this replica writes events. After a run with them
 * off, changes were made that have no event: a consumer resuming from before
 * them, or from the head as it was, would miss them silently. As on SQLite,
 * one sequence is burned and everything up to it marked pruned, so every such
 * resume is OUT_OF_RANGE and the consumer lists again. The events go first,
 * then the log row, in the order a prune locks them.
 */
export async function openEventLog(pool: Pool, enabled: boolean): Promise<void> {
  if (!enabled) {
    await pool.query('UPDATE sessiond_event_log SET events_off = true WHERE id = 1 AND NOT events_off', [], 'write');
    return;
  }
  await pool.transaction(async (tx, wrote) => {
    wrote();
    await tx.unsafe('DELETE FROM session_events WHERE sequence <= (SELECT last_sequence FROM sessiond_event_log WHERE events_off)', [], { prepare: true });
    // Another replica opening at once finds events_off cleared and burns nothing more.
    await tx.unsafe(`UPDATE sessiond_event_log SET last_sequence = last_sequence + 1, pruned_through = last_sequence + 1, events_off = false
      WHERE id = 1 AND events_off`, [], { prepare: true });
  });
}

function eventOf(r: Row): SessionEvent {
  return {
    sequence: r['sequence'] as number,
    type: r['type'] as SessionEventType,
    sessionId: r['session_id'] as string,
    serverId: r['server_id'] as string,
    subject: r['subject'] as string,
    time: r['time'] as number,
    cause: r['cause'] as EventCause,
  };
}
