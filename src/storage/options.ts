/*
 * What the storage is configured with: the backend, the SQLite and PostgreSQL options, their allowed
 * values and defaults. Free of imports, so that configuration can describe
 * and check them without loading the SQLite driver.
 */

export const JOURNAL_MODES = ['wal', 'delete', 'truncate', 'persist'] as const;
export type JournalMode = (typeof JOURNAL_MODES)[number];

export const SYNCHRONOUS_MODES = ['off', 'normal', 'full', 'extra'] as const;
export type Synchronous = (typeof SYNCHRONOUS_MODES)[number];

export interface StorageOptions {
  readonly path: string;
  readonly journalMode: JournalMode;
  readonly synchronous: Synchronous;
  readonly cacheSize: number;
  readonly busyTimeoutMs: number;
  readonly walAutocheckpoint: number;
  readonly journalSizeLimit: number;
  /**
   * Bytes the database may grow to, applied as PRAGMA max_page_count in whole
   * pages; past it writes fail with SQLITE_FULL (RESOURCE_EXHAUSTED). 0: no limit.
   * It bounds the database's pages, not the -wal file beside it.
   */
  readonly maxDbSize: number;
  /**
   * Writes queued in one event-loop turn share one transaction (true), or each
   * commits alone (false: only to measure what group commit buys, make bench).
   */
  readonly groupCommit: boolean;
  /**
   * WAL checkpoints run on a worker thread's connection (true), or inside
   * commits on the main connection, as SQLite's own autocheckpoint does
   * (false: only to measure what the worker buys, make bench).
   */
  readonly checkpointWorker: boolean;
  /**
   * This connection belongs to a worker of --workers: the primary process runs
   * the checkpoints on the shared file, the final TRUNCATE among them, so this
   * storage runs none of its own (no worker thread, no autocheckpoint).
   */
  readonly checkpointsInPrimary: boolean;
  /**
   * With synchronous=full in WAL mode, the connection commits at NORMAL and
   * the -wal file is fsynced on libuv's thread pool before callers are
   * answered (true, see wal-sync.ts), or SQLite fsyncs inside each commit on
   * the main thread (false: only to measure what it buys, make bench).
   */
  readonly offLoopFsync: boolean;
  /**
   * Revocations and token rotations (writes run with { durable: true }) are
   * answered only once synced to disk, at every synchronous setting (true, see
   * commit-sync.ts), or at commit like other writes (false: only to measure
   * it, make bench).
   */
  readonly durableRevocations: boolean;
  /**
   * Writes that may wait for the group committer at once; past it a write is
   * refused at once with UNAVAILABLE (retryable) instead of queueing, so that
   * a flood sheds load before every caller's latency runs away.
   */
  readonly maxPendingWrites: number;
  /** Where Backup writes; empty: backups are refused (FAILED_PRECONDITION). */
  readonly backupDir: string;
  /** Backups kept in backupDir; the oldest beyond it are removed after each new one. */
  readonly backupRetention: number;
  /** --session-events: every change writes its event to the outbox in its own transaction. */
  readonly sessionEvents: boolean;
}

export const DEFAULT_STORAGE_OPTIONS: Omit<StorageOptions, 'path'> = Object.freeze({
  journalMode: 'wal',
  synchronous: 'normal',
  cacheSize: -2000,
  busyTimeoutMs: 5000,
  walAutocheckpoint: 1000,
  // A little over one autocheckpoint's worth of 4 KiB frames, so the WAL is cut
  // back after a checkpoint burst without being truncated on every cycle.
  journalSizeLimit: 8 * 1024 * 1024,
  maxDbSize: 0,
  groupCommit: true,
  checkpointWorker: true,
  checkpointsInPrimary: false,
  offLoopFsync: true,
  durableRevocations: true,
  maxPendingWrites: 4096,
  backupDir: '',
  backupRetention: 7,
  sessionEvents: true,
});

export const STORAGE_BACKENDS = ['sqlite', 'postgres'] as const;
export type StorageBackend = (typeof STORAGE_BACKENDS)[number];

export interface PostgresOptions {
  /** libpq-style URL; holds the password, so it is never logged or echoed. */
  readonly url: string;
  readonly poolSize: number;
  readonly statementTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** As StorageOptions.maxPendingWrites: writes that may wait for a connection at once. */
  readonly maxPendingWrites: number;
  /** As StorageOptions.sessionEvents. */
  readonly sessionEvents: boolean;
}

export const DEFAULT_POSTGRES_OPTIONS: Omit<PostgresOptions, 'url'> = Object.freeze({
  poolSize: 10,
  statementTimeoutMs: 5000,
  connectTimeoutMs: 5000,
  maxPendingWrites: 4096,
  sessionEvents: true,
});
