import { closeSync, fdatasync, openSync } from 'node:fs';
import { StorageError } from '../../domain/errors';

export type WalSyncFn = (fd: number, done: (err: NodeJS.ErrnoException | null) => void) => void;

/**
 * synchronous=FULL for WAL mode, with the fsync off the event loop.
 *
 * SQLite at FULL fsyncs the -wal file inside every COMMIT, on the thread that
 * commits: with one connection on the main thread, the event loop waits for
 * the disk on every group commit (CreateSession ran at 0.64x the empty RPC at
 * FULL, 0.80x at NORMAL). Here the connection commits at NORMAL, which writes
 * the commit's frames into the -wal file with write(2) and does not sync, and
 * the group committer answers the commit's callers only after an fdatasync of
 * that file, run on libuv's thread pool, has returned. An acknowledged write is
 * then on disk, as at FULL.
 *
 * Why one fdatasync of the -wal file is enough: fsync flushes the file (the
 * inode), whichever descriptor it is called on, and the WAL is a log: frames
 * are only appended until a checkpoint has copied every one of them into the
 * database file and synced it (NORMAL syncs at checkpoints), and only then does
 * a writer start over at the head of the file. So a sync that starts after
 * commit N returned covers commit N and every commit before it; commits that
 * land while a sync is running wait for the next one, and many commits share
 * one sync, as many writes share one commit.
 *
 * The difference from SQLite's FULL: at FULL, other connections see a commit
 * only once it is synced. Here calls on this connection can read a committed
 * write during the sync (a millisecond or so) before its own caller is
 * answered; a power cut in that window loses a write that nobody was told had
 * succeeded, which is what FULL promises too.
 *
 * The -wal file stays the same file while the connection is open: SQLite
 * deletes it only when the last connection closes, and cuts it back with
 * ftruncate (journal_size_limit, TRUNCATE checkpoints), which keeps the inode.
 *
 * A failed fsync is final. After an EIO, Linux may drop the dirty pages and
 * report the next fsync as a success, so whether earlier commits reached the
 * disk cannot be known; every later write is refused until the process is
 * restarted (and SQLite recovers from what the disk holds).
 */
export class WalSync {
  private readonly fd: number;
  private syncing = false;
  /** Commits waiting for the next fdatasync: the running one may have started before they were written. */
  private waiting: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private failure: StorageError | undefined;
  private closed = false;

  /** @throws when the -wal file cannot be opened. */
  constructor(walPath: string, private readonly fsync: WalSyncFn = fdatasync) {
    // Read-only is enough: Linux syncs a file through any descriptor of it.
    this.fd = openSync(walPath, 'r');
  }

  /** Resolves once everything this connection has committed so far is on disk. */
  sync(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.syncing) this.start();
    });
  }

  /** Set once an fsync has failed; writes are refused from then on. */
  get failed(): StorageError | undefined {
    return this.failure;
  }

  /** Closes the descriptor; the group committer's close() has waited for every sync first. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }

  private start(): void {
    const batch = this.waiting;
    this.waiting = [];
    this.syncing = true;
    this.fsync(this.fd, (err) => {
      this.syncing = false;
      if (err && !this.failure) {
        this.failure = new StorageError(
          `the WAL could not be synced to disk (${err.code ?? err.message}): writes committed since the last good sync may be lost; ` +
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
}
