import type { MaybePromise, SessionRepository } from './session-repository';

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
  readonly backend: 'sqlite';
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

/** PostgreSQL's figures for GetStorageStatus. */
export interface PostgresStatus {
  readonly backend: 'postgres';
  /** The URL's hosts and database, without user or password. */
  readonly target: string;
  readonly serverVersion: string;
  /** false: connected to a standby (read-only); health is NOT_SERVING then. */
  readonly primary: boolean;
  readonly poolSize: number;
  /** Connections open now. */
  readonly poolOpen: number;
  /** Queries sent and not yet answered (or waiting for a connection). */
  readonly queriesInFlight: number;
  readonly tableBytes: number;
  readonly indexBytes: number;
  readonly schemaVersion: number;
}

export type AnyStorageStatus = StorageStatus | PostgresStatus;

/** What each health Check reply carries as metadata: cheap, synchronous, never throws. */
export interface HealthFacts {
  readonly backend: 'sqlite' | 'postgres';
  /** SQLite only. */
  readonly wal?: WalSnapshot;
}

/**
 * What the server needs of any backend: the repository, status, a health
 * probe and an orderly close. WAL administration is a capability only the
 * SQLite backend has (`wal`).
 */
export interface StorageBackend {
  readonly backend: 'sqlite' | 'postgres';
  readonly repository: SessionRepository;
  /** Checkpoints and WAL figures; undefined on a backend without a WAL of its own to run. */
  readonly wal: WalAdmin | undefined;
  /** Online backups and integrity checks of the database file; undefined where the database's operator runs them. */
  readonly files: FileAdmin | undefined;
  /** Never writes. */
  status(): MaybePromise<AnyStorageStatus>;
  healthFacts(): HealthFacts;
  /** Whether storage can serve: reachable, writable (not a standby), as configured. Never throws. */
  probe(): MaybePromise<StorageHealth>;
  /** Finishes queued writes, then closes; safe to call twice. SQLite: after a final TRUNCATE checkpoint, returned. */
  close(): Promise<CheckpointResult | undefined>;
}

/** The SQLite-only operations: checkpoints and WAL figures. */
export interface WalAdmin {
  /**
   * Runs `PRAGMA wal_checkpoint(mode)` off the main thread. A busy result is
   * returned, not thrown.
   * @throws FailedPreconditionError when the database is not in WAL mode.
   */
  checkpoint(mode: CheckpointMode, trigger: CheckpointTrigger): Promise<CheckpointResult>;
  /** Journal mode and WAL size, read without touching the database lock. Never throws. */
  walSnapshot(): WalSnapshot;
}

export interface BackupResult {
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
  /** When the snapshot began, ms since the epoch. */
  readonly time: number;
  readonly durationMs: number;
}

export interface IntegrityResult {
  readonly check: 'quick_check' | 'integrity_check';
  /** Empty when the check found nothing. */
  readonly problems: readonly string[];
  readonly durationMs: number;
}

/** The SQLite file's operations that read all of it: off the event loop, on connections of their own. */
export interface FileAdmin {
  /**
   * A consistent online copy into the backup folder, checked, fsynced, 0600;
   * older copies past the retention removed. One at a time.
   * @throws FailedPreconditionError when no backup folder is configured.
   */
  backup(): Promise<BackupResult>;
  integrityCheck(full: boolean): Promise<IntegrityResult>;
}
