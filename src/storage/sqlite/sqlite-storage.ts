import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { FailedPreconditionError } from '../../domain/errors';
import type {
  CheckpointMode, CheckpointResult, CheckpointTrigger, StorageAdmin, StorageHealth, StorageStatus, WalSnapshot,
} from '../../domain/storage-admin';
import { migrate } from './migrations';
import { applyPragmas, synchronousName, type StorageOptions } from './pragmas';
import { SqliteSessionRepository } from './sqlite-session-repository';
import { guarded, toStorageError } from './sqlite-errors';
import { fileBytes, readWalIndex } from './wal-index';

/**
 * One SQLite database in WAL mode: the session repository plus the operator
 * operations on the file. One connection: better-sqlite3 is synchronous, so
 * statements from concurrent gRPC calls never interleave inside a transaction.
 */
export class SqliteStorage implements StorageAdmin {
  readonly sessions: SqliteSessionRepository;
  private lastCheckpoint: CheckpointResult | undefined;
  private closed = false;
  private readonly heartbeat: Database.Statement<[string]>;

  private constructor(private readonly db: Database.Database, readonly options: StorageOptions) {
    this.sessions = new SqliteSessionRepository(db);
    this.heartbeat = db.prepare(
      "INSERT INTO meta (key, value) VALUES ('heartbeat', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
  }

  /**
   * Opens (creating if needed) the database, applies and verifies the pragmas,
   * and migrates the schema.
   * @throws Error naming the file and the problem: it cannot be opened or is
   *   not a database, a pragma did not take effect, or the schema is too new.
   */
  static open(options: StorageOptions): SqliteStorage {
    mkdirSync(dirname(options.path), { recursive: true });
    let db: Database.Database | undefined;
    try {
      db = new Database(options.path, { timeout: options.busyTimeoutMs });
      applyPragmas(db, options);
      migrate(db);
      return new SqliteStorage(db, options);
    } catch (err) {
      db?.close();
      const code = (err as { code?: string }).code;
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(`cannot open database ${options.path}: ${message}${code ? ` (${code})` : ''}`, { cause: err });
    }
  }

  checkpoint(mode: CheckpointMode, trigger: CheckpointTrigger): CheckpointResult {
    const journalMode = this.journalMode();
    if (journalMode !== 'wal') {
      throw new FailedPreconditionError(`checkpoints need journal_mode=wal; this database is in ${journalMode} mode`);
    }
    const started = performance.now();
    const [row] = guarded(() => this.db.pragma(`wal_checkpoint(${mode})`)) as { busy: number; log: number; checkpointed: number }[];
    const result: CheckpointResult = {
      mode,
      busy: row!.busy !== 0,
      logFrames: row!.log,
      checkpointedFrames: row!.checkpointed,
      walBytes: fileBytes(`${this.options.path}-wal`),
      durationMs: performance.now() - started,
      time: Date.now(),
      trigger,
    };
    this.lastCheckpoint = result;
    return result;
  }

  status(): StorageStatus {
    return guarded(() => {
      const p = (name: string) => this.db.pragma(name, { simple: true }) as number;
      const wal = this.walSnapshot();
      const index = readWalIndex(this.options.path);
      return {
        ...wal,
        path: this.options.path,
        synchronous: synchronousName(p('synchronous')),
        cacheSize: p('cache_size'),
        busyTimeoutMs: p('busy_timeout'),
        walAutocheckpoint: p('wal_autocheckpoint'),
        journalSizeLimit: p('journal_size_limit'),
        walCheckpointedFrames: wal.journalMode === 'wal' ? index.backfilled : 0,
        databaseBytes: fileBytes(this.options.path),
        pageSize: p('page_size'),
        pageCount: p('page_count'),
        freelistCount: p('freelist_count'),
        schemaVersion: p('user_version'),
        lastCheckpoint: this.lastCheckpoint,
      };
    });
  }

  walSnapshot(): WalSnapshot {
    let journalMode = 'unknown';
    try {
      journalMode = this.journalMode();
    } catch {
      // A closed or broken connection: report what the files say.
    }
    const wal = journalMode === 'wal';
    return {
      journalMode,
      walFrames: wal ? readWalIndex(this.options.path).frames : 0,
      walBytes: fileBytes(`${this.options.path}-wal`),
    };
  }

  probe(): StorageHealth {
    if (this.closed) return { ok: false, reason: 'database is closed' };
    try {
      const mode = this.journalMode();
      if (mode !== this.options.journalMode) {
        return { ok: false, reason: `journal_mode is ${mode}, configured ${this.options.journalMode}` };
      }
      this.heartbeat.run(new Date().toISOString());
      return { ok: true };
    } catch (err) {
      const mapped = toStorageError(err) as { kind?: string; message?: string };
      // Another process holding the lock is contention, not breakage.
      if (mapped.kind === 'unavailable') return { ok: true };
      return { ok: false, reason: mapped.message ?? String(err) };
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  private journalMode(): string {
    // Reading journal_mode takes no lock and never changes the mode.
    return String(this.db.pragma('journal_mode', { simple: true })).toLowerCase();
  }
}
