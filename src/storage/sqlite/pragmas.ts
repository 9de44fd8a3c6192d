import type { Database } from 'better-sqlite3';
import type { StorageOptions, Synchronous } from '../options';

// Their home is ../options (free of the SQLite driver); re-exported for the storage code and tests that import them from here.
export { DEFAULT_STORAGE_OPTIONS, type JournalMode, type StorageOptions, type Synchronous } from '../options';

const SYNCHRONOUS_NAMES = ['OFF', 'NORMAL', 'FULL', 'EXTRA'] as const;

export function synchronousName(value: number): string {
  return SYNCHRONOUS_NAMES[value] ?? String(value);
}

/**
 * How long SQLite's own busy handler may block the event loop on one attempt
 * to take the write lock; longer waits happen between attempts, on a timer
 * (see GroupCommitter).
 */
export const BUSY_SLICE_MS = 5;

/** synchronous=FULL kept by an fsync off the event loop rather than inside each commit (wal-sync.ts). */
export function syncsOffLoop(o: StorageOptions): boolean {
  return o.offLoopFsync && o.journalMode === 'wal' && o.synchronous === 'full' && o.path !== ':memory:';
}

/**
 * The synchronous setting of every connection that checkpoints. A durable
 * write is synced in the -wal file (commit-sync.ts), but once a checkpoint
 * has copied every frame into the database, the next writer rewinds the WAL
 * and writes over those frames. At OFF a checkpoint never syncs the database,
 * so a power loss after the rewind would lose a revocation that was answered
 * as durable; from NORMAL up it syncs the database before it marks the frames
 * copied (walCheckpoint in sqlite3.c), so before the WAL can rewind. In WAL
 * mode NORMAL syncs nothing at commit either: a connection at NORMAL syncs
 * only in its checkpoints and when it rewinds the WAL.
 */
export function checkpointSynchronous(o: StorageOptions): Synchronous {
  return o.durableRevocations && o.journalMode === 'wal' && o.synchronous === 'off' && o.path !== ':memory:' ? 'normal' : o.synchronous;
}

/**
 * The values set on the main connection. Four may differ from the configuration
 * on purpose: synchronous=full is set as normal when the storage fsyncs off
 * the event loop itself (see syncsOffLoop), and off as normal when this
 * connection runs the checkpoints (see checkpointSynchronous); busy_timeout
 * is one slice of the configured wait; with the checkpoint worker in WAL
 * mode, autocheckpoint is off because the worker runs it at the configured
 * threshold off the main thread, and journal_size_limit
 * is -1 because SQLite cuts the -wal file back inside the first commit after
 * the WAL rewinds, in whichever connection makes it: an ftruncate that blocks
 * the event loop while the file system frees the WAL's blocks, for seconds
 * when a large WAL is on a discard-mounted disk.
 * The worker applies the limit instead (checkpoint-worker.ts).
 */
export function connectionPragmas(o: StorageOptions): StorageOptions {
  // A cluster worker's checkpoints run in the primary, on its checkpoint worker: the same settings as with one here.
  const worker = o.journalMode === 'wal' && (o.checkpointWorker || o.checkpointsInPrimary);
  return {
    ...o,
    synchronous: syncsOffLoop(o) ? 'normal' : worker ? o.synchronous : checkpointSynchronous(o),
    busyTimeoutMs: Math.min(o.busyTimeoutMs, BUSY_SLICE_MS),
    walAutocheckpoint: worker ? 0 : o.walAutocheckpoint,
    journalSizeLimit: worker ? -1 : o.journalSizeLimit,
  };
}

/**
 * Applies every pragma and reads each one back. SQLite answers a pragma it
 * cannot honour by keeping the old value rather than failing: journal_mode=WAL
 * stays "delete" on some network filesystems and "memory" for :memory:, so a
 * setting that did not take is an error here, not a surprise in production.
 * @throws Error listing every pragma that did not take effect.
 */
export function applyPragmas(db: Database, o: StorageOptions): void {
  // busy_timeout first: switching to WAL needs a lock that another process may hold.
  db.pragma(`busy_timeout = ${o.busyTimeoutMs | 0}`);
  db.pragma(`journal_mode = ${o.journalMode}`);
  db.pragma(`synchronous = ${o.synchronous}`);
  db.pragma(`cache_size = ${o.cacheSize | 0}`);
  db.pragma(`wal_autocheckpoint = ${o.walAutocheckpoint | 0}`);
  db.pragma(`journal_size_limit = ${Math.trunc(o.journalSizeLimit)}`);

  const problems: string[] = [];
  const expect = (name: string, want: string | number, got: unknown) => {
    if (String(got).toLowerCase() !== String(want).toLowerCase()) problems.push(`${name}=${want} did not take effect (SQLite reports ${String(got)})`);
  };
  expect('busy_timeout', o.busyTimeoutMs | 0, db.pragma('busy_timeout', { simple: true }));
  expect('journal_mode', o.journalMode, db.pragma('journal_mode', { simple: true }));
  expect('synchronous', o.synchronous, synchronousName(db.pragma('synchronous', { simple: true }) as number));
  expect('cache_size', o.cacheSize | 0, db.pragma('cache_size', { simple: true }));
  expect('wal_autocheckpoint', o.walAutocheckpoint | 0, db.pragma('wal_autocheckpoint', { simple: true }));
  expect('journal_size_limit', Math.trunc(o.journalSizeLimit), db.pragma('journal_size_limit', { simple: true }));
  if (o.maxDbSize > 0) applyMaxPageCount(db, o.maxDbSize, problems);
  if (problems.length > 0) {
    const walRefused = o.journalMode === 'wal' && problems.some((p) => p.startsWith('journal_mode='));
    throw new Error(`${o.path}: ${problems.join('; ')}${walRefused ? ' (WAL needs a local filesystem with shared memory)' : ''}`);
  }
}

/**
 * Pages at the top of --max-db-size that only revocations may fill: each one
 * now writes its event, so a database that creates have filled must still
 * have room to revoke (an eighth of the limit, at most 64 MiB of 4 KiB pages).
 */
export function revocationReservePages(limitPages: number): number {
  return Math.max(1, Math.min(Math.floor(limitPages / 8), 16_384));
}

/** max_page_count for ordinary writes and for revocations: --max-db-size in whole pages of `pageSize`, less the reserve. */
export function pageLimits(maxBytes: number, pageSize: number): { normal: number; revoking: number } {
  const revoking = Math.floor(maxBytes / pageSize);
  return { normal: revoking - revocationReservePages(revoking), revoking };
}

/**
 * PRAGMA max_page_count from a size in bytes, in the database's own page size.
 * SQLite never lowers it below the pages the file already has (it answers
 * with that count instead), so a limit under the current size is reported.
 * Then the revocation reserve is taken off for ordinary writes (which SQLite
 * again keeps at the file's size if revocations have used the reserve).
 */
function applyMaxPageCount(db: Database, maxBytes: number, problems: string[]): void {
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const { normal, revoking: want } = pageLimits(maxBytes, pageSize);
  const got = db.pragma(`max_page_count = ${want}`, { simple: true }) as number;
  if (got === want) db.pragma(`max_page_count = ${normal}`);
  else {
    const pages = db.pragma('page_count', { simple: true }) as number;
    problems.push(
      `max_page_count=${want} (max-db-size ${maxBytes} bytes in ${pageSize}-byte pages) did not take effect (SQLite reports ${got}): ` +
      `the database already has ${pages} pages (${pages * pageSize} bytes); raise max-db-size`,
    );
  }
}
