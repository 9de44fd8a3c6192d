import type { Database } from 'better-sqlite3';

/*
 * Numbered schema migrations, tracked in PRAGMA user_version. Each runs in its
 * own transaction with the version bump, so a crash mid-migration leaves the
 * previous version intact. Never edit a released migration: append a new one.
 */
const MIGRATIONS: readonly string[] = [
  // 1: sessions, with a dead_at column (min of the two expiries and the
  // revocation) so that "is live" is one comparison and the sweep one index range.
  `CREATE TABLE sessions (
     seq               INTEGER PRIMARY KEY AUTOINCREMENT,
     id                TEXT    NOT NULL UNIQUE,
     token_hash        BLOB    NOT NULL UNIQUE,
     server_id         TEXT    NOT NULL,
     subject           TEXT    NOT NULL,
     attributes        TEXT    NOT NULL,
     ip                TEXT    NOT NULL,
     user_agent        TEXT    NOT NULL,
     create_time       INTEGER NOT NULL,
     update_time       INTEGER NOT NULL,
     expire_time       INTEGER NOT NULL,
     idle_expire_time  INTEGER NOT NULL,
     last_active_time  INTEGER NOT NULL,
     idle_timeout_ms   INTEGER NOT NULL,
     token_rotate_time INTEGER NOT NULL,
     revoke_time       INTEGER,
     version           INTEGER NOT NULL,
     dead_at           INTEGER NOT NULL,
     request_id        TEXT
   ) STRICT;
   -- Secondary indexes carry the rowid (seq), so "filter = ? AND seq > ? ORDER BY seq"
   -- is a single index range scan: keyset pagination without OFFSET or a sort.
   CREATE INDEX sessions_by_server ON sessions(server_id);
   CREATE INDEX sessions_by_subject ON sessions(subject);
   CREATE INDEX sessions_by_server_subject ON sessions(server_id, subject);
   CREATE INDEX sessions_by_dead_at ON sessions(dead_at);
   -- CreateSession idempotency keys are unique per server; most rows have none.
   CREATE UNIQUE INDEX sessions_by_request_id ON sessions(server_id, request_id) WHERE request_id IS NOT NULL;
   CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;`,
  // 2: the session events outbox (sqlite-events.ts). AUTOINCREMENT, so that a
  // sequence deleted by retention is never handed out again.
  `CREATE TABLE session_events (
     sequence   INTEGER PRIMARY KEY AUTOINCREMENT,
     type       TEXT    NOT NULL,
     session_id TEXT    NOT NULL,
     server_id  TEXT    NOT NULL,
     subject    TEXT    NOT NULL,
     time       INTEGER NOT NULL,
     cause      TEXT    NOT NULL
   ) STRICT;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Refuses a file written by a newer sessiond. Runs before any pragma is set,
 * since switching journal_mode already rewrites the file header.
 * @throws Error when the file's schema is newer than this build knows.
 */
export function checkSchemaVersion(db: Database): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new Error(`database schema version ${current} is newer than this sessiond supports (${SCHEMA_VERSION}); refusing to touch it`);
  }
  return current;
}

/**
 * Brings the schema to SCHEMA_VERSION. The version is read again inside each
 * migration's write transaction: another sessiond process on the same file
 * may have run that migration while this one waited for the lock.
 * @throws Error when the file's schema is newer than this build knows.
 */
export function migrate(db: Database): void {
  const step = db.transaction((): boolean => {
    const v = checkSchemaVersion(db);
    if (v >= SCHEMA_VERSION) return false;
    db.exec(MIGRATIONS[v]!);
    // PRAGMA cannot take a bound parameter; v is an integer from this file.
    db.pragma(`user_version = ${v + 1}`);
    return true;
  });
  if (checkSchemaVersion(db) >= SCHEMA_VERSION) return;
  while (step.immediate()) {
    // one migration per transaction, until none is left
  }
}
