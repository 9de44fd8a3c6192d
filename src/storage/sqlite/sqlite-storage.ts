import Database from 'better-sqlite3';
import { performance } from 'node:perf_hooks';
import { FailedPreconditionError, StorageError } from '../../domain/errors';
import { SqliteFiles } from './sqlite-files';
import type { PurgeRunner } from './write-runner';
import type {
  CheckpointMode, CheckpointResult, CheckpointTrigger, FileAdmin, HealthFacts, StorageBackend, StorageHealth, StorageStatus, WalAdmin, WalSnapshot,
} from '../../domain/storage-admin';
import { Checkpointer, type RawCheckpoint } from './checkpointer';
import { GroupCommitter } from './group-commit';
import { CommitSync, commitSyncPlan, type SyncFn } from './commit-sync';
import { openConnection } from './open-connection';
import { checkpointSynchronous, connectionPragmas, pageLimits, type StorageOptions } from './pragmas';
import { SqliteRepository } from './sqlite-repository';
import { SqliteEventLog } from './sqlite-events';
import { SqliteSessionRepository } from './sqlite-session-repository';
import { guarded, toStorageError } from './sqlite-errors';
import { fileBytes, WalIndex } from './wal-index';
import { WalPressure } from './wal-pressure';

/** Uncheckpointed frames, in multiples of wal_autocheckpoint, past which writes wait for the checkpointer. */
const WAL_PRESSURE_FACTOR = 4;

/** How often the checkpoint worker looks at the WAL size. */
const CHECKPOINT_POLL_MS = 50;

/** Observers of what storage does on its own or on request, for metrics and logs. */
export interface StorageHooks {
  /** Called with every checkpoint that ran (admin, auto, shutdown); must not throw. */
  onCheckpoint?(result: CheckpointResult): void;
  /** The syncs after COMMIT (commit-sync.ts); fs.fdatasync and fs.fsync unless a test stands in a disk of its own. */
  fsync?: SyncFn;
  /** Called for each write refused because max-pending-writes were already waiting; must not throw. */
  onShed?(): void;
  /** A cluster worker's (checkpointsInPrimary): checkpoints and purge batches run in the primary, on its checkpoint worker thread, not on this event loop. */
  primary?: { checkpoint(mode: CheckpointMode, trigger: CheckpointTrigger): Promise<CheckpointResult>; purgeBatch(now: number, limit: number): Promise<number> };
}

/**
 * One SQLite database in WAL mode: the session repository, the group-commit
 * write runner, the checkpoint worker, and the operator operations on the file.
 * One connection on the main thread: better-sqlite3 is synchronous, so units
 * from concurrent gRPC calls never interleave inside a transaction.
 */
export class SqliteStorage implements StorageBackend, WalAdmin, PurgeRunner {
  readonly backend = 'sqlite';
  /** The storage contract (what the domain uses). */
  readonly repository: SqliteRepository;
  /** The rows, synchronously, writes included: for the group committer's units and SQLite's own tests. */
  readonly sessions: SqliteSessionRepository;
  readonly wal: WalAdmin = this;
  readonly files: FileAdmin;
  readonly writes: GroupCommitter;
  private lastCheckpoint: CheckpointResult | undefined;
  private closing: Promise<CheckpointResult | undefined> | undefined;
  private closed = false;
  private readonly heartbeat: Database.Statement<[string]>;
  private readonly checkpointer: Checkpointer | undefined;
  /** The -shm header, read without a lock; its descriptor stays open until the connection is closed (see wal-index.ts). */
  private readonly walIndex: WalIndex;
  /** The syncs after COMMIT that SQLite does not make at this setting (commit-sync.ts); absent when it makes them all. */
  private readonly commitSync: CommitSync | undefined;
  /** --max-db-size in pages, for revocations and for the other writes (pageLimits); absent without a limit. */
  private readonly limits: { normal: number; revoking: number } | undefined;

  private constructor(private readonly db: Database.Database, readonly options: StorageOptions, private readonly hooks: StorageHooks) {
    const events = new SqliteEventLog(db, options.sessionEvents);
    db.transaction(() => events.openWith(options.sessionEvents)).immediate();
    this.limits = options.maxDbSize > 0 ? pageLimits(options.maxDbSize, db.pragma('page_size', { simple: true }) as number) : undefined;
    this.sessions = new SqliteSessionRepository(db, events, this.limits);
    this.walIndex = WalIndex.open(options.path);
    // The connection has read the database by now, so in WAL mode the -wal file exists.
    const plan = commitSyncPlan(options);
    this.commitSync = plan && new CommitSync(plan.targets, plan.everyCommit, hooks.fsync);
    const pressureFrames = options.journalMode === 'wal' && options.walAutocheckpoint > 0 ? options.walAutocheckpoint * WAL_PRESSURE_FACTOR : 0;
    // The WAL index is shared memory: a cluster worker reads the lag the primary's checkpointer works off.
    const pressure = pressureFrames > 0
      ? new WalPressure(pressureFrames, () => this.walIndex.read(), () => options.checkpointsInPrimary || this.checkpointer?.running === true)
      : undefined;
    this.writes = new GroupCommitter(db, {
      busyTimeoutMs: options.busyTimeoutMs,
      maxBatch: options.groupCommit ? undefined : 1,
      maxPending: options.maxPendingWrites,
      onShed: () => hooks.onShed?.(),
      shouldWait: pressure && (() => pressure.shouldWait()),
      durable: this.commitSync,
    });
    this.repository = new SqliteRepository(this.sessions, this.writes, this);
    this.files = new SqliteFiles(options, () => this.closing !== undefined);
    this.heartbeat = db.prepare(
      "INSERT INTO meta (key, value) VALUES ('heartbeat', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
    if (options.journalMode === 'wal' && options.checkpointWorker && !options.checkpointsInPrimary) {
      this.checkpointer = new Checkpointer(
        {
          path: options.path, walIndexFd: this.walIndex.descriptor, busyTimeoutMs: options.busyTimeoutMs, autocheckpointFrames: options.walAutocheckpoint, pollMs: CHECKPOINT_POLL_MS,
          synchronous: checkpointSynchronous(options), cacheSize: options.cacheSize, journalSizeLimit: options.journalSizeLimit,
          sessionEvents: options.sessionEvents,
        },
        (raw) => this.record(raw.mode ?? 'PASSIVE', 'auto', raw),
        // Without the worker, SQLite's own autocheckpoint must come back, or the
        // WAL grows without bound, and so must the limit it was cut back to;
        // the checkpoints now run on this connection, at their own setting.
        () => {
          if (!this.db.open) return;
          this.db.pragma(`synchronous = ${checkpointSynchronous(options)}`);
          this.db.pragma(`wal_autocheckpoint = ${options.walAutocheckpoint | 0}`);
          this.db.pragma(`journal_size_limit = ${Math.trunc(options.journalSizeLimit)}`);
        },
      );
    }
  }

  /**
   * Opens the database, or creates it where no file is (0600, in a 0700
   * folder, see file-modes.ts); checks the file (see database-file.ts),
   * tightens its mode if others may read it, applies and verifies the pragmas,
   * and migrates the schema. Nothing is written to a file that fails a check.
   * @throws Error naming the file and the problem: its folder cannot be made
   *   or written, it is empty, truncated, damaged, not SQLite or another
   *   application's database, a pragma did not take effect, or the schema is
   *   too new.
   */
  static open(options: StorageOptions, hooks: StorageHooks = {}): SqliteStorage {
    let db: Database.Database | undefined;
    try {
      db = openConnection(options);
      return new SqliteStorage(db, options, hooks);
    } catch (err) {
      db?.close();
      const code = (err as { code?: string }).code;
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(`cannot open database ${options.path}: ${message}${code ? ` (${code})` : ''}`, { cause: err });
    }
  }

  async checkpoint(mode: CheckpointMode, trigger: CheckpointTrigger): Promise<CheckpointResult> {
    this.requireWal();
    if (this.closing) throw new FailedPreconditionError('the database is closing');
    if (this.hooks.primary) return (this.lastCheckpoint = await this.hooks.primary.checkpoint(mode, trigger));
    if (this.checkpointer?.running) return this.record(mode, trigger, await this.checkpointer.checkpoint(mode));
    return this.checkpointHere(mode, trigger);
  }

  /**
   * One purge batch: on the checkpoint worker's connection while it runs (see
   * checkpoint-worker.ts), else through the group committer on this one.
   */
  async purgeBatch(now: number, limit: number): Promise<number> {
    if (this.closing) throw new StorageError('storage is closing; the purge was not applied', undefined);
    if (this.hooks.primary) return this.hooks.primary.purgeBatch(now, limit);
    if (!this.checkpointer?.running) return this.writes.run(() => this.sessions.purgeBatch(now, limit));
    try {
      return await this.checkpointer.purge(now, limit);
    } catch (err) {
      // The worker exited with the batch in hand. It answers every SQLite error,
      // so it can only have died between transactions: the batch committed or
      // never ran. Going on here at worst reports one batch fewer than deleted.
      if (this.checkpointer.running || this.closing) throw err;
      return this.writes.run(() => this.sessions.purgeBatch(now, limit));
    }
  }

  status(): StorageStatus {
    return guarded(() => {
      const p = (name: string) => this.db.pragma(name, { simple: true }) as number;
      const wal = this.walSnapshot();
      const index = this.walIndex.read();
      return {
        backend: 'sqlite',
        ...wal,
        path: this.options.path,
        // The guarantee configured (applyPragmas checked that the connection
        // took it), which is not always the connection's own setting: see
        // syncsOffLoop and checkpointSynchronous.
        synchronous: this.options.synchronous.toUpperCase(),
        cacheSize: p('cache_size'),
        // The configured totals: the connection itself holds one busy slice, and
        // autocheckpoint is run by the worker at this threshold.
        busyTimeoutMs: this.options.busyTimeoutMs,
        walAutocheckpoint: this.options.journalMode === 'wal' ? this.options.walAutocheckpoint : p('wal_autocheckpoint'),
        // Configured; with the worker it is applied on the worker's connection (see connectionPragmas).
        journalSizeLimit: this.checkpointer || this.options.checkpointsInPrimary ? this.options.journalSizeLimit : p('journal_size_limit'),
        walCheckpointedFrames: wal.journalMode === 'wal' ? index.backfilled : 0,
        databaseBytes: fileBytes(this.options.path),
        pageSize: p('page_size'),
        pageCount: p('page_count'),
        freelistCount: p('freelist_count'),
        // The limit as SQLite applies it to revocations: ordinary writes stop a reserve short of it (revocationReservePages).
        maxDatabaseBytes: (this.limits?.revoking ?? 0) * p('page_size'),
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
      walFrames: wal ? this.walIndex.read().frames : 0,
      walBytes: fileBytes(`${this.options.path}-wal`),
    };
  }

  healthFacts(): HealthFacts {
    return { backend: 'sqlite', wal: this.walSnapshot() };
  }

  probe(): StorageHealth {
    if (this.closed) return { ok: false, reason: 'database is closed' };
    if (this.commitSync?.failed) return { ok: false, reason: this.commitSync.failed.message };
    try {
      const mode = this.journalMode();
      if (mode !== this.options.journalMode) {
        return { ok: false, reason: `journal_mode is ${mode}, configured ${this.options.journalMode}` };
      }
      // Outside the group committer on purpose: a probe must not queue behind
      // a backlog. Synchronous, so it cannot land inside a batch's transaction.
      this.heartbeat.run(new Date().toISOString());
      return { ok: true };
    } catch (err) {
      const mapped = toStorageError(err) as { kind?: string; message?: string };
      // Another process holding the lock is contention, not breakage. A full
      // database (max-db-size, or the disk) still serves every read, the
      // validations included; writes answer RESOURCE_EXHAUSTED by themselves.
      // Going NOT_SERVING would take every replica out of rotation at once.
      if (mapped.kind === 'unavailable' || mapped.kind === 'resource-exhausted') return { ok: true };
      return { ok: false, reason: mapped.message ?? String(err) };
    }
  }

  close(): Promise<CheckpointResult | undefined> {
    this.closing ??= (async () => {
      await this.writes.close();
      await this.checkpointer?.close();
      // The last checkpoint runs on this connection; a cluster worker leaves it to the primary, which truncates once every worker has closed.
      const last = this.journalMode() === 'wal' && !this.options.checkpointsInPrimary;
      if (last) this.db.pragma(`synchronous = ${checkpointSynchronous(this.options)}`);
      const final = last ? this.checkpointHere('TRUNCATE', 'shutdown') : undefined;
      this.closed = true;
      this.db.close();
      // Only now: closing the -shm descriptor drops every lock this process holds on it.
      this.walIndex.close();
      // writes.close() has waited for every sync; a descriptor of the database
      // file is closed only now, as closing it drops the process's locks on it.
      this.commitSync?.close();
      return final;
    })();
    return this.closing;
  }

  /**
   * A checkpoint on the main connection, blocking the event loop: only at
   * shutdown, or when the worker is gone. It may wait for readers up to the
   * configured busy timeout.
   */
  private checkpointHere(mode: CheckpointMode, trigger: CheckpointTrigger): CheckpointResult {
    return guarded(() => {
      this.db.pragma(`busy_timeout = ${this.options.busyTimeoutMs | 0}`);
      try {
        const started = performance.now();
        const [row] = this.db.pragma(`wal_checkpoint(${mode})`) as { busy: number; log: number; checkpointed: number }[];
        return this.record(mode, trigger, {
          busy: row!.busy !== 0, log: row!.log, checkpointed: row!.checkpointed, durationMs: performance.now() - started,
        });
      } finally {
        this.db.pragma(`busy_timeout = ${connectionPragmas(this.options).busyTimeoutMs | 0}`);
      }
    });
  }

  private record(mode: CheckpointMode, trigger: CheckpointTrigger, raw: RawCheckpoint): CheckpointResult {
    const result: CheckpointResult = {
      mode, busy: raw.busy, logFrames: raw.log, checkpointedFrames: raw.checkpointed,
      walBytes: fileBytes(`${this.options.path}-wal`), durationMs: raw.durationMs, time: Date.now(), trigger,
    };
    this.lastCheckpoint = result;
    this.hooks.onCheckpoint?.(result);
    return result;
  }

  private requireWal(): void {
    const journalMode = this.journalMode();
    if (journalMode !== 'wal') {
      throw new FailedPreconditionError(`checkpoints need journal_mode=wal; this database is in ${journalMode} mode`);
    }
  }

  private journalMode(): string {
    // Reading journal_mode takes no lock and never changes the mode.
    return String(this.db.pragma('journal_mode', { simple: true })).toLowerCase();
  }
}
