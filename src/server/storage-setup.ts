import type { Clock } from '../domain/clock';
import { EventFeed } from '../domain/event-feed';
import { SessionManager } from '../domain/session-manager';
import type { StorageBackend } from '../domain/storage-admin';
import { PostgresStorage } from '../storage/postgres/postgres-storage';
import { SqliteStorage, type StorageHooks } from '../storage/sqlite/sqlite-storage';
import type { Config } from './config';
import type { Logger } from './log';
import type { Metrics } from './metrics/metrics';
import { StorageObserver } from './storage-observer';
import type { PrimaryStorage } from './worker-messages';

/** The configured backend, opened, and what reports on it; `sqlite` is the same storage when the backend is SQLite. */
export interface OpenedStorage {
  storage: StorageBackend;
  sqlite: SqliteStorage | undefined;
  observer: StorageObserver;
}

/**
 * Opens the configured backend, as one server or the primary of --workers
 * does, or as a worker does when `primary` is given: its checkpoints and purge
 * batches then run in the primary (SQLite's checkpointsInPrimary).
 * @throws Error when the database cannot be opened, checked or migrated.
 */
export async function openStorage(
  config: Config, log: Logger, metrics: Metrics,
  { primary, hooks }: { primary?: PrimaryStorage | undefined; hooks?: Pick<StorageHooks, 'fsync'> | undefined } = {},
): Promise<OpenedStorage> {
  const observer = new StorageObserver(metrics, log, config.storage.journalMode === 'wal' ? config.storage.walAutocheckpoint : 0);
  const onShed = () => metrics.writeShed();
  if (config.postgres) return { storage: await PostgresStorage.open(config.postgres, { log, onShed }), sqlite: undefined, observer };
  const sqlite = SqliteStorage.open(primary ? { ...config.storage, checkpointsInPrimary: true } : config.storage, {
    ...hooks, primary, onShed, onCheckpoint: (r) => observer.checkpoint(r),
  });
  return { storage: sqlite, sqlite, observer };
}

/** The domain over the storage: the sessions and the event feed (the sweep prunes the feed's outbox). */
export function sessionsOn(storage: StorageBackend, config: Config, clock: Clock): { sessions: SessionManager; feed: EventFeed } {
  const sessions = new SessionManager(storage.repository, clock, config.policy, { revokeBatchSize: config.revokeBatchSize, maxPageBytes: config.maxPageBytes });
  return { sessions, feed: new EventFeed(storage.repository, clock, config.policy, config.events) };
}

/** The storage and session gauges (Metrics.watch), once per database: by one server, or by the primary of --workers. */
export function watchStorage(metrics: Metrics, storage: StorageBackend, sessions: SessionManager, serving: () => boolean): void {
  metrics.watch({
    storageStatus: async () => {
      const s = await storage.status();
      return s.backend === 'sqlite' ? s : { databaseBytes: s.tableBytes + s.indexBytes };
    },
    wal: storage.wal !== undefined,
    sessionCounts: () => sessions.counts(),
    serving,
  });
}
