import type { Database, Statement } from 'better-sqlite3';
import { expiryCause, type EventCause, type EventPage, type SessionEvent, type SessionEventType } from '../../domain/session-events';

/** The deleted rows' columns an EXPIRED event needs, in this order (raw mode). */
const PURGE_SQL = `DELETE FROM sessions WHERE seq IN (SELECT seq FROM sessions WHERE dead_at <= ? ORDER BY dead_at LIMIT ?)
  RETURNING id, server_id, subject, revoke_time, expire_time, idle_expire_time`;

/**
 * The session events outbox on one connection. Every append runs inside the
 * caller's transaction (a group-commit unit, or the purge's own), so an event
 * commits exactly when its change does. SQLite has one writer at a time, so
 * AUTOINCREMENT numbers events in commit order, and never hands out a number
 * again once retention has deleted it (sqlite_sequence keeps the highest).
 */
export class SqliteEventLog {
  private readonly appendStmt: Statement;
  private readonly purgeStmt: Statement<[number, number], unknown[]>;
  private readonly readStmt: Statement<[number, number], unknown[]>;
  private readonly headStmt: Statement<[], { seq: number }>;
  private readonly markStmt: Statement<[], { value: string }>;
  private readonly oldestStmt: Statement<[number], unknown[]>;
  private readonly pruneStmt: Statement<[number]>;
  private readonly setMarkStmt: Statement<[string]>;
  private readonly pruneTx: (before: number, keep: number, limit: number) => number;

  /** @param enabled false: appends do nothing (--session-events off); reads still work. */
  constructor(private readonly db: Database, readonly enabled: boolean) {
    this.appendStmt = db.prepare('INSERT INTO session_events (type, session_id, server_id, subject, time, cause) VALUES (?, ?, ?, ?, ?, ?)');
    this.purgeStmt = db.prepare<[number, number], unknown[]>(PURGE_SQL).raw(true);
    this.readStmt = db.prepare<[number, number], unknown[]>(
      'SELECT sequence, type, session_id, server_id, subject, time, cause FROM session_events WHERE sequence > ? ORDER BY sequence LIMIT ?',
    ).raw(true);
    this.headStmt = db.prepare("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'session_events'), 0) AS seq");
    this.markStmt = db.prepare("SELECT value FROM meta WHERE key = 'events_pruned_through'");
    this.oldestStmt = db.prepare<[number], unknown[]>('SELECT sequence, time FROM session_events ORDER BY sequence LIMIT ?').raw(true);
    this.pruneStmt = db.prepare('DELETE FROM session_events WHERE sequence <= ?');
    this.setMarkStmt = db.prepare("INSERT INTO meta (key, value) VALUES ('events_pruned_through', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    const prune = db.transaction((before: number, keep: number, limit: number): number => {
      const newestToDrop = this.head() - keep;
      let last = 0;
      let n = 0;
      for (const [sequence, time] of this.oldestStmt.all(limit) as [number, number][]) {
        if (sequence > newestToDrop && time >= before) break;
        last = sequence;
        n++;
      }
      if (n === 0) return 0;
      this.pruneStmt.run(last);
      this.setMarkStmt.run(String(last));
      return n;
    });
    this.pruneTx = (before, keep, limit) => prune.immediate(before, keep, limit);
  }

  append(type: SessionEventType, s: { id: string; serverId: string; subject: string }, time: number, cause: EventCause = ''): void {
    if (this.enabled) this.appendStmt.run(type, s.id, s.serverId, s.subject, time, cause);
  }

  /** Appends REVOKED (cause) for rows of [id, server_id, subject], as UPDATE ... RETURNING gives them. */
  appendRevoked(rows: unknown[][], time: number, cause: EventCause): void {
    if (!this.enabled) return;
    for (const [id, serverId, subject] of rows) this.appendStmt.run('REVOKED', id, serverId, subject, time, cause);
  }

  /**
   * Deletes at most `limit` sessions dead at `now`, with an EXPIRED event for
   * each that was never revoked (a revoked one had its REVOKED already). Runs
   * inside the caller's transaction.
   */
  purgeBatch(now: number, limit: number): number {
    const rows = this.purgeStmt.all(now, limit) as [string, string, string, number | null, number, number][];
    if (this.enabled) {
      for (const [id, serverId, subject, revokeTime, expireTime, idleExpireTime] of rows) {
        if (revokeTime === null) this.appendStmt.run('EXPIRED', id, serverId, subject, now, expiryCause({ expireTime, idleExpireTime }));
      }
    }
    return rows.length;
  }

  head(): number {
    return this.headStmt.get()!.seq;
  }

  prunedThrough(): number {
    return Number(this.markStmt.get()?.value ?? 0);
  }

  /** Reads in one snapshot: the caller's transaction, or a deferred one of its own. */
  read(after: number, limit: number): EventPage {
    const read = () => ({
      events: this.readStmt.all(after, limit).map(eventOf),
      head: this.head(),
      prunedThrough: this.prunedThrough(),
    });
    return this.db.inTransaction ? read() : this.db.transaction(read).deferred();
  }

  prune(before: number, keep: number, limit: number): number {
    return this.pruneTx(before, keep, limit);
  }

  /**
   * After a run with --session-events off, changes were made that have no
   * event: a consumer resuming from before them, or from the head as it was,
   * would miss them silently. One sequence is burned and everything up to it
   * marked pruned, so every such resume is OUT_OF_RANGE and the consumer lists
   * again (its list then reads the new head). Called at open, in a transaction.
   */
  openWith(enabled: boolean): void {
    const off = this.db.prepare("SELECT value FROM meta WHERE key = 'events_off'").get() !== undefined;
    if (!enabled && !off) this.db.prepare("INSERT INTO meta (key, value) VALUES ('events_off', '1')").run();
    if (enabled && off) {
      const burned = this.head() + 1;
      const moved = this.db.prepare("UPDATE sqlite_sequence SET seq = ? WHERE name = 'session_events'").run(burned).changes;
      if (moved === 0) this.db.prepare("INSERT INTO sqlite_sequence (name, seq) VALUES ('session_events', ?)").run(burned);
      this.pruneStmt.run(burned);
      this.setMarkStmt.run(String(burned));
      this.db.prepare("DELETE FROM meta WHERE key = 'events_off'").run();
    }
  }
}

function eventOf(v: unknown[]): SessionEvent {
  return {
    sequence: v[0] as number,
    type: v[1] as SessionEventType,
    sessionId: v[2] as string,
    serverId: v[3] as string,
    subject: v[4] as string,
    time: v[5] as number,
    cause: v[6] as EventCause,
  };
}
