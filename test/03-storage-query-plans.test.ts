import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { hashOf, record } from './helpers/repository-contract';
import { openStorage } from './helpers/storage';

/* The queries the server runs use an index (EXPLAIN QUERY PLAN). */

// ------------------------------------------------------------------ query plans

type Plan = string[];

function plan(db: Database.Database, sql: string, params: unknown[]): Plan {
  return (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((r) => r.detail);
}

function assertIndexed(t: ExecutionContext, name: string, p: Plan, expected: RegExp): void {
  t.true(p.some((d) => expected.test(d)), `${name}: expected ${expected} in ${JSON.stringify(p)}`);
  t.false(p.some((d) => /^SCAN sessions\b(?! USING (COVERING )?INDEX)/.test(d)), `${name}: full table scan in ${JSON.stringify(p)}`);
  t.false(p.some((d) => /TEMP B-TREE/.test(d)), `${name}: needs a sort in ${JSON.stringify(p)}`);
}

test('list filters, revocations, lookups and the purge use an index (EXPLAIN QUERY PLAN on a second connection)', (t) => {
  const { storage, path } = openStorage(t);
  // Some rows, so that the plans are for a table that is not empty.
  for (let i = 0; i < 50; i++) {
    const s = record({ serverId: `srv-${i % 3}`, subject: `user-${i % 7}` });
    storage.sessions.insert(s, hashOf(s.id));
  }
  const other = new Database(path, { readonly: true });
  t.teardown(() => other.close());

  // The statements the repository really runs (private fields, read here on purpose so a
  // changed query is checked as it is, not as a copy in this file remembers it).
  const repo = storage.sessions;
  const lists = repo['lists'];
  const revokes = repo['revokes'];
  const named = { serverId: 'srv-1', subject: 'user-2', cursor: 10, now: Date.now(), limit: 101, exceptId: 'keep-me' };
  // The same plans with a caller's server_ids (exact names and prefixes) applied on top.
  for (const [set, params] of [['any', named], ['within', { ...named, exact: '["srv-1"]', prefixes: '["srv-"]' }]] as const) {
    const l = lists[set];
    const r = revokes[set];
    assertIndexed(t, `list by server (${set})`, plan(other, l.server.source, [params]),
      /^SEARCH sessions USING (COVERING )?INDEX sessions_by_server(_subject)? \(server_id=\? AND rowid>\?\)$/);
    assertIndexed(t, `list by subject (${set})`, plan(other, l.subject.source, [params]),
      /^SEARCH sessions USING (COVERING )?INDEX sessions_by_subject \(subject=\? AND rowid>\?\)$/);
    assertIndexed(t, `list by both (${set})`, plan(other, l.both.source, [params]),
      /^SEARCH sessions USING (COVERING )?INDEX sessions_by_server_subject \(server_id=\? AND subject=\? AND rowid>\?\)$/);
    assertIndexed(t, `list of all (${set})`, plan(other, l.all.source, [params]), /^SEARCH sessions USING INTEGER PRIMARY KEY \(rowid>\?\)$/);

    for (const [name, stmt, index] of [['server', r.server, /sessions_by_server(_subject)? \(server_id=\?/], ['subject', r.subject, /sessions_by_subject \(subject=\?\)/], ['both', r.both, /sessions_by_server_subject \(server_id=\? AND subject=\?\)/]] as const) {
      const p = plan(other, stmt.source, [params]);
      // The batch is chosen through the index, then updated by key.
      assertIndexed(t, `revoke by ${name} (${set})`, p, new RegExp(`^SEARCH sessions USING (COVERING )?INDEX ${index.source}`));
      assertIndexed(t, `revoke by ${name} (${set}, update by key)`, p, /^SEARCH sessions USING INTEGER PRIMARY KEY \(rowid=\?\)$/);
    }
  }

  assertIndexed(t, 'find by id', plan(other, repo['byId'].source, ['x']), /^SEARCH sessions USING INDEX sqlite_autoindex_sessions_\d \(id=\?\)$/);
  assertIndexed(t, 'find by token hash', plan(other, repo['byToken'].source, [Buffer.alloc(32)]), /^SEARCH sessions USING INDEX sqlite_autoindex_sessions_\d \(token_hash=\?\)$/);
  assertIndexed(t, 'find by request id', plan(other, repo['byRequestId'].source, ['srv-1', 'req']), /^SEARCH sessions USING INDEX sessions_by_request_id \(server_id=\? AND request_id=\?\)$/);

  // --max-sessions-per-subject counts (and picks the oldest of) one subject's live sessions in every create.
  assertIndexed(t, 'live sessions of a subject', plan(other, repo['liveOfSubject'].source, ['srv-1', 'user-2', Date.now()]),
    /^SEARCH sessions USING INDEX sessions_by_server_subject \(server_id=\? AND subject=\?\)$/);

  const events = repo.events;
  const purge = plan(other, events['purgeStmt'].source, [Date.now(), 1000]);
  assertIndexed(t, 'purge batch', purge, /^SEARCH sessions USING (COVERING )?INDEX sessions_by_dead_at \(dead_at<\?\)$/);
  assertIndexed(t, 'purge batch (delete by key)', purge, /^SEARCH sessions USING INTEGER PRIMARY KEY \(rowid=\?\)$/);

  // A watch reads the outbox after its position; retention deletes its oldest prefix.
  assertIndexed(t, 'events after a sequence', plan(other, events['readStmt'].source, [5, 500]),
    /^SEARCH session_events USING INTEGER PRIMARY KEY \(rowid>\?\)$/);
  assertIndexed(t, 'oldest events', plan(other, events['oldestStmt'].source, [500]), /^SCAN session_events$/);
  assertIndexed(t, 'prune events', plan(other, events['pruneStmt'].source, [5]), /^SEARCH session_events USING INTEGER PRIMARY KEY \(rowid<\?\)$/);

  // The assertion itself can fail: a query on an unindexed column is a full scan.
  const scan = plan(other, 'SELECT id FROM sessions WHERE user_agent = ? ORDER BY expire_time', ['x']);
  t.true(scan.some((d) => /^SCAN sessions$/.test(d)), JSON.stringify(scan));
  t.true(scan.some((d) => /TEMP B-TREE/.test(d)), JSON.stringify(scan));
});
