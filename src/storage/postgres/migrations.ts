import type { Pool } from './pool';

/*
 * Numbered schema migrations for PostgreSQL, recorded in sessiond_migrations.
 * All of them run in one transaction under a transaction-level advisory
 * lock: replicas that start together queue on the lock, and each one after
 * the first finds the schema current. PostgreSQL's DDL is transactional, so
 * a crash part-way leaves the previous version. Never edit a released
 * migration: append a new one.
 */
const MIGRATIONS: readonly string[] = [
  // 1: the SQLite schema's columns and meaning, with dead_at kept in the row so
  // that "is live" is one comparison and a purge one index range. Secondary
  // indexes end in seq: keyset pages are one index range scan, no sort.
  `CREATE TABLE sessions (
     seq               bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     id                text    NOT NULL UNIQUE,
     token_hash        bytea   NOT NULL UNIQUE,
     server_id         text    NOT NULL,
     subject           text    NOT NULL,
     attributes        text    NOT NULL,
     ip                text    NOT NULL,
     user_agent        text    NOT NULL,
     create_time       bigint  NOT NULL,
     update_time       bigint  NOT NULL,
     expire_time       bigint  NOT NULL,
     idle_expire_time  bigint  NOT NULL,
     last_active_time  bigint  NOT NULL,
     idle_timeout_ms   bigint  NOT NULL,
     token_rotate_time bigint  NOT NULL,
     revoke_time       bigint,
     version           bigint  NOT NULL,
     dead_at           bigint  NOT NULL,
     request_id        text
   );
   CREATE INDEX sessions_by_server ON sessions (server_id, seq);
   CREATE INDEX sessions_by_subject ON sessions (subject, seq);
   CREATE INDEX sessions_by_server_subject ON sessions (server_id, subject, seq);
   CREATE INDEX sessions_by_dead_at ON sessions (dead_at);
   CREATE UNIQUE INDEX sessions_by_request_id ON sessions (server_id, request_id) WHERE request_id IS NOT NULL;
   CREATE TABLE sessiond_meta (key text PRIMARY KEY, value text NOT NULL);`,
  // 2: the session events outbox (postgres-events.ts). Sequences come from
  // the one-row counter, not an identity column: its row lock, held until
  // commit, makes numbers follow commit order across replicas.
  `CREATE TABLE session_events (
     sequence   bigint PRIMARY KEY,
     type       text   NOT NULL,
     session_id text   NOT NULL,
     server_id  text   NOT NULL,
     subject    text   NOT NULL,
     time       bigint NOT NULL,
     cause      text   NOT NULL
   );
   CREATE TABLE sessiond_event_log (
     id             int     PRIMARY KEY CHECK (id = 1),
     last_sequence  bigint  NOT NULL,
     pruned_through bigint  NOT NULL,
     events_off     boolean NOT NULL DEFAULT false
   );
   INSERT INTO sessiond_event_log (id, last_sequence, pruned_through) VALUES (1, 0, 0);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** One fixed key for pg_advisory_xact_lock: "sessiond" in ASCII, as a bigint. */
const MIGRATION_LOCK = 0x73657373696f6e64n;

/**
 * Brings the schema to SCHEMA_VERSION, once among every replica starting at
 * the same time.
 * @returns the versions before and after.
 * @throws Error when the database's schema is newer than this build knows.
 */
export async function migrate(pool: Pool): Promise<{ from: number; to: number }> {
  return pool.transaction(async (tx, wrote) => {
    // Replicas wait here for the first one's migration, past the usual statement timeout.
    await tx.unsafe("SET LOCAL statement_timeout = '120s'; SET LOCAL lock_timeout = '120s'");
    await tx.unsafe(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
    await tx.unsafe('CREATE TABLE IF NOT EXISTS sessiond_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
    const [row] = await tx.unsafe<{ v: number }[]>('SELECT coalesce(max(version), 0)::int AS v FROM sessiond_migrations');
    const from = row!.v;
    if (from > SCHEMA_VERSION) {
      throw new Error(`database schema version ${from} is newer than this sessiond supports (${SCHEMA_VERSION}); refusing to touch it`);
    }
    if (from < SCHEMA_VERSION) wrote();
    for (let v = from; v < SCHEMA_VERSION; v++) {
      await tx.unsafe(MIGRATIONS[v]!);
      await tx.unsafe('INSERT INTO sessiond_migrations (version) VALUES ($1)', [v + 1]);
    }
    return { from, to: SCHEMA_VERSION };
  }, 130_000);
}
