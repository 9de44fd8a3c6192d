/** SQLite's checkpoint modes, https://sqlite.org/pragma.html#pragma_wal_checkpoint */
export type CheckpointMode = 'PASSIVE' | 'FULL' | 'RESTART' | 'TRUNCATE';

export type CheckpointTrigger = 'admin' | 'shutdown' | 'auto';

export interface CheckpointResult {
  readonly mode: CheckpointMode;
  /** SQLite's first number: the checkpoint could not complete (readers or writers in the way). */
  readonly busy: boolean;
  /** SQLite's second number: frames in the WAL. */
  readonly logFrames: number;
  /** SQLite's third number: frames copied back into the database. */
  readonly checkpointedFrames: number;
  /** Size of the -wal file afterwards. */
  readonly walBytes: number;
  readonly durationMs: number;
  /** When it finished, ms since the epoch. */
  readonly time: number;
  readonly trigger: CheckpointTrigger;
}

/** What the health endpoint and the metadata on each Check reply need: cheap to read. */
export interface WalSnapshot {
  readonly journalMode: string;
  /** Frames in the WAL log; 0 when not in WAL mode or no WAL exists yet. */
  readonly walFrames: number;
  readonly walBytes: number;
}

export interface StorageStatus extends WalSnapshot {
  readonly path: string;
  readonly synchronous: string;
  readonly cacheSize: number;
  readonly busyTimeoutMs: number;
  readonly walAutocheckpoint: number;
  readonly journalSizeLimit: number;
  readonly walCheckpointedFrames: number;
  readonly databaseBytes: number;
  readonly pageSize: number;
  readonly pageCount: number;
  readonly freelistCount: number;
  /** The most the database may grow to (max_page_count x page_size); 0: no limit. */
  readonly maxDatabaseBytes: number;
  readonly schemaVersion: number;
  readonly lastCheckpoint: CheckpointResult | undefined;
}

/** Whether storage can serve: the journal mode is as configured and a write goes through. */
export type StorageHealth = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Operator-facing storage operations. Errors as in SessionRepository, plus:
 */
export interface StorageAdmin {
  /**
   * Runs `PRAGMA wal_checkpoint(mode)` off the main thread. A busy result is
   * returned, not thrown.
   * @throws FailedPreconditionError when the database is not in WAL mode.
   */
  checkpoint(mode: CheckpointMode, trigger: CheckpointTrigger): Promise<CheckpointResult>;

  /** Pragmas as in force, file sizes and page counts. Never writes. */
  status(): StorageStatus;

  /** Journal mode and WAL size, read without touching the database lock. Never throws. */
  walSnapshot(): WalSnapshot;

  /** Checks the journal mode and makes a tiny write. Never throws; a busy lock counts as healthy. */
  probe(): StorageHealth;

  /**
   * Stops the checkpoint worker, runs a final TRUNCATE checkpoint (returned;
   * undefined when not in WAL mode) and closes the connection. Safe to call twice.
   */
  close(): Promise<CheckpointResult | undefined>;
}
