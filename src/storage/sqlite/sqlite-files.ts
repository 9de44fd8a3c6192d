import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DomainError, FailedPreconditionError, StorageError, StorageFullError } from '../../domain/errors';
import type { BackupResult, FileAdmin, IntegrityResult } from '../../domain/storage-admin';
import { createPrivateFile, makePrivateFolder } from './file-modes';
import { runMaintenance } from './maintenance';
import type { StorageOptions } from '../options';
import { toStorageError } from './sqlite-errors';

/** Pages a backup copies per step; the copy restarts only when another connection writes between steps. */
const BACKUP_PAGES_PER_STEP = 1024;
const BACKUP_NAME = /^sessions-\d{4}-\d\d-\d\dT[\d-]+Z-[0-9a-f]{6}\.db$/;

/**
 * Backups and integrity checks of the database file: each reads all of it,
 * so each runs in a worker thread on a connection of its own (maintenance.ts).
 */
export class SqliteFiles implements FileAdmin {
  /** The backup running now: backups run one after another. */
  private backups: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: StorageOptions, private readonly closing: () => boolean) {}

  backup(): Promise<BackupResult> {
    const next = this.backups.then(() => this.backupNow());
    this.backups = next.catch(() => {});
    return next;
  }

  private async backupNow(): Promise<BackupResult> {
    const dir = this.options.backupDir;
    if (dir === '') throw new FailedPreconditionError('no backup folder is configured: start the server with --backup-dir (SESSIOND_BACKUP_DIR)');
    if (this.closing()) throw new FailedPreconditionError('the database is closing');
    const time = Date.now();
    const started = performance.now();
    // Names sort by time: retention keeps the last ones.
    const dest = join(dir, `sessions-${new Date(time).toISOString().replace(/[:.]/g, '-')}-${randomBytes(3).toString('hex')}.db`);
    try {
      makePrivateFolder(dir);
      // 0600 before a byte is written: SQLite would create it 0644 less the umask.
      createPrivateFile(dest);
      const r = await runMaintenance({ kind: 'backup', path: this.options.path, dest, busyTimeoutMs: this.options.busyTimeoutMs, pagesPerStep: BACKUP_PAGES_PER_STEP });
      if (r.kind !== 'backup') throw new Error('the maintenance worker answered another job');
      if (r.problems.length > 0) throw new StorageError(`the backup failed its quick_check (${r.problems.slice(0, 3).join('; ')}); it was removed`, undefined);
      this.pruneBackups(dir);
      return { path: dest, bytes: r.bytes, sha256: r.sha256, time, durationMs: performance.now() - started };
    } catch (err) {
      rmSync(dest, { force: true });
      rmSync(`${dest}-journal`, { force: true });
      if ((err as { code?: string }).code === 'ENOSPC') throw new StorageFullError('no space left for the backup; it was removed', { cause: err });
      const mapped = toStorageError(err);
      if (mapped instanceof DomainError) throw mapped;
      throw new StorageError(`backup into ${dir} failed: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
    }
  }

  /** Removes the oldest backups past the retention; only files this server names. */
  private pruneBackups(dir: string): void {
    const ours = readdirSync(dir).filter((f) => BACKUP_NAME.test(f)).sort();
    for (const f of ours.slice(0, Math.max(0, ours.length - this.options.backupRetention))) rmSync(join(dir, f), { force: true });
  }

  async integrityCheck(full: boolean): Promise<IntegrityResult> {
    if (this.closing()) throw new FailedPreconditionError('the database is closing');
    const started = performance.now();
    try {
      const r = await runMaintenance({ kind: 'check', path: this.options.path, full, busyTimeoutMs: this.options.busyTimeoutMs, maxProblems: 100 });
      return { check: full ? 'integrity_check' : 'quick_check', problems: r.problems, durationMs: performance.now() - started };
    } catch (err) {
      const mapped = toStorageError(err);
      if (mapped instanceof DomainError) throw mapped;
      throw new StorageError(`integrity check failed to run: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
    }
  }
}
