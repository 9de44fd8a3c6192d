import { close, closeSync, fdatasync, fsync, open, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { StorageError } from '../../domain/errors';
import { syncsOffLoop, type StorageOptions } from './pragmas';

export type SyncFn = (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void;

/** A file or folder that must reach the disk after a commit for the commit to survive a power loss. */
export interface SyncTarget {
  /** Named in the error when its sync fails ("the WAL", "the database file"). */
  readonly what: string;
  readonly path: string;
  /**
   * held: opened once and kept open until close(); a descriptor of the
   * database file must be, as closing one drops the process's POSIX locks
   * on it, SQLite's included (see wal-index.ts). each: opened for each sync
   * and closed after it, for the rollback journal, which SQLite creates with
   * the first write transaction; one that is not there holds nothing to sync.
   */
  readonly open: 'held' | 'each';
  /** Directory entries need fsync; for a file, its data and size (fdatasync) are enough. */
  readonly folder?: boolean;
}

/**
 * What SQLite leaves unsynced at a commit that a power loss could undo, for
 * the group committer to sync before it answers (with `everyCommit`, every
 * commit; else only those holding a durable unit: revocations and token
 * rotations). Undefined when SQLite's own syncs already make every commit
 * durable, or nothing is to be made durable.
 *
 * WAL mode, at OFF and NORMAL: commits are not synced; the -wal file is (see
 * CommitSync on why one fdatasync of it suffices). At FULL with the off-loop
 * fsync, every commit's sync is this one; at FULL without it and at EXTRA,
 * SQLite syncs the -wal file inside each commit.
 *
 * Rollback journal modes (https://sqlite.org/atomiccommit.html): a commit
 * writes the journal, then the database pages, then "finalizes" the journal,
 * and that last step is the commit: a journal still there with a valid header
 * after a power loss is hot, and the next open rolls the transaction back.
 * From the pager (sqlite3PagerCommitPhaseOne, pager_end_transaction in
 * sqlite3.c): at NORMAL and above SQLite syncs the journal and then the
 * database file in every commit, at OFF neither. The finalization is synced
 * only in PERSIST mode from NORMAL (the zeroed header), in TRUNCATE mode
 * from FULL (the truncated file) and in DELETE mode only at EXTRA (the
 * folder, after the unlink). So the database file is synced here at OFF, and
 * the finalization wherever SQLite leaves it unsynced.
 */
export function commitSyncPlan(o: StorageOptions): { targets: SyncTarget[]; everyCommit: boolean } | undefined {
  if (o.path === ':memory:') return undefined;
  const wal: SyncTarget = { what: 'the WAL', path: `${o.path}-wal`, open: 'held' };
  if (syncsOffLoop(o)) return { targets: [wal], everyCommit: true };
  if (!o.durableRevocations) return undefined;
  if (o.journalMode === 'wal') return o.synchronous === 'off' || o.synchronous === 'normal' ? { targets: [wal], everyCommit: false } : undefined;
  const targets: SyncTarget[] = [];
  if (o.synchronous === 'off') targets.push({ what: 'the database file', path: o.path, open: 'held' });
  const journal: SyncTarget = { what: 'the rollback journal', path: `${o.path}-journal`, open: 'each' };
  if (o.journalMode === 'delete' && o.synchronous !== 'extra') targets.push({ what: 'the database folder', path: dirname(o.path), open: 'held', folder: true });
  if (o.journalMode === 'truncate' && (o.synchronous === 'off' || o.synchronous === 'normal')) targets.push(journal);
  if (o.journalMode === 'persist' && o.synchronous === 'off') targets.push(journal);
  return targets.length > 0 ? { targets, everyCommit: false } : undefined;
}

/**
 * Makes commits durable after COMMIT, with the syncs on libuv's thread pool
 * rather than inside the commit on the main thread, where the event loop
 * would wait for the disk on every group commit. The group committer answers
 * a commit's callers once sync() resolves.
 *
 * Why one fdatasync of the -wal file is enough: fsync flushes the file (the
 * inode), whichever descriptor it is called on, and the WAL is a log: frames
 * are only appended until a checkpoint has copied every one of them into the
 * database file and synced it (checkpoints run at NORMAL or above, see
 * checkpointSynchronous), and only then does a writer start over at the head
 * of the file. So a sync that starts after commit N returned covers commit N
 * and every commit before it; commits that land while a sync is running wait
 * for the next one, and many commits share one sync, as many writes share one
 * commit. The same holds of the rollback-mode targets: each later commit
 * starts from the state commit N left, so a later journal that survives a
 * power loss rolls back to N, not before it.
 *
 * The difference from SQLite's own syncs: other connections see a commit
 * before it is synced, and calls on this connection can read it during the
 * sync before its own caller is answered; a power cut
 * in that window loses a write that nobody was told had succeeded.
 *
 * The -wal file stays the same file while the connection is open: SQLite
 * deletes it only when the last connection closes, and cuts it back with
 * ftruncate (journal_size_limit, TRUNCATE checkpoints), which keeps the inode.
 *
 * A failed sync is final. After an EIO, Linux may drop the dirty pages and
 * report the next fsync as a success, so whether earlier commits reached the
 * disk cannot be known; every later write is refused until the process is
 * restarted (and SQLite recovers from what the disk holds).
 */
export class CommitSync {
  /** Descriptors of the held targets, by index; -1 for the ones opened on each sync. */
  private readonly fds: number[];
  private syncing = false;
  /** Commits waiting for the next round of syncs: the running one may have started before they were written. */
  private waiting: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private failure: StorageError | undefined;
  private closed = false;

  /**
   * @param everyCommit whether every commit waits for a sync, or only those holding a durable unit.
   * @param fsync stands in for fdatasync and fsync (a test's failing disk).
   * @throws when a held target cannot be opened.
   */
  constructor(private readonly targets: readonly SyncTarget[], readonly everyCommit: boolean, private readonly fsync?: SyncFn) {
    const fds: number[] = [];
    try {
      // Read-only is enough: Linux syncs a file through any descriptor of it.
      for (const t of targets) fds.push(t.open === 'held' ? openSync(t.path, 'r') : -1);
    } catch (err) {
      for (const fd of fds) if (fd >= 0) closeSync(fd);
      throw err;
    }
    this.fds = fds;
  }

  /** Resolves once everything this connection has committed so far is on disk. */
  sync(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.syncing) this.start();
    });
  }

  /** Set once a sync has failed; writes are refused from then on. */
  get failed(): StorageError | undefined {
    return this.failure;
  }

  /** Closes the held descriptors: only after the connection is closed, and after every sync (the group committer's close() waits for them). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds) if (fd >= 0) closeSync(fd);
  }

  private start(): void {
    const batch = this.waiting;
    this.waiting = [];
    this.syncing = true;
    this.syncFrom(0, (err, target) => {
      this.syncing = false;
      if (err && !this.failure) {
        this.failure = new StorageError(
          `${target!.what} could not be synced to disk (${err.code ?? err.message}): writes committed since the last good sync may be lost; ` +
          'every write is refused until the server is restarted',
          err.code ?? 'EIO',
          { cause: err },
        );
      }
      for (const w of batch) {
        if (this.failure) w.reject(this.failure);
        else w.resolve();
      }
      if (this.waiting.length > 0) {
        if (this.failure) for (const w of this.waiting.splice(0)) w.reject(this.failure);
        else this.start();
      }
    });
  }

  /** The targets one after another from index i; the first failure ends the round. */
  private syncFrom(i: number, done: (err: NodeJS.ErrnoException | null, target?: SyncTarget) => void): void {
    const target = this.targets[i];
    if (!target) {
      done(null);
      return;
    }
    const sync = this.fsync ?? (target.folder ? fsync : fdatasync);
    const next = (err: NodeJS.ErrnoException | null) => (err ? done(err, target) : this.syncFrom(i + 1, done));
    if (target.open === 'held') {
      sync(this.fds[i]!, next);
      return;
    }
    open(target.path, 'r', (openErr, fd) => {
      if (openErr) {
        next(openErr.code === 'ENOENT' ? null : openErr);
        return;
      }
      sync(fd, (err) => close(fd, (closeErr) => next(err ?? closeErr)));
    });
  }
}
