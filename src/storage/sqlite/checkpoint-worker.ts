/*
 * Runs in a worker thread with its own connection, so that WAL checkpoints
 * (which copy pages and fsync the database) never run inside a commit on the
 * main thread, where every call would wait for them. It polls the WAL
 * index for the frame count and checkpoints PASSIVE at the autocheckpoint
 * threshold, as SQLite itself would, and runs operators' checkpoints on demand.
 *
 * It also runs the purges of expired sessions (the sweep and
 * PurgeExpiredSessions). A batch deletes a row from the table and from every
 * index; the id and token-hash indexes are not in expiry order, so a batch
 * dirties pages all over them. On the main thread that would be page reads,
 * cache spills and WAL writes blocking the event loop for every batch, and a
 * WAL growing faster than the worker could copy it back, which the first
 * commit after the WAL rewound would then cut back to journal_size_limit with
 * an ftruncate that blocks the main thread for seconds when the WAL is large.
 * Here the batches cost the event loop nothing, and
 * each batch that takes the WAL past the threshold is followed by a PASSIVE
 * checkpoint before the next batch runs, so the WAL stays near one
 * threshold's worth and is never large when it rewinds or is truncated.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';
import { SqliteEventLog } from './sqlite-events';
import { fileBytes, WalIndex } from './wal-index';

export interface WorkerData {
  path: string;
  /**
   * The main thread's descriptor of the -shm file. Borrowed, never closed here:
   * closing a descriptor drops the process's locks on the file (wal-index.ts).
   */
  walIndexFd: number | undefined;
  busyTimeoutMs: number;
  autocheckpointFrames: number;
  pollMs: number;
  /**
   * The configured pragmas, for the purges' commits on this connection;
   * synchronous as checkpoints need it (checkpointSynchronous in pragmas.ts).
   */
  synchronous: string;
  cacheSize: number;
  journalSizeLimit: number;
  /** --session-events: purges write EXPIRED events in their transaction. */
  sessionEvents: boolean;
}

export type WorkerRequest =
  | { id: number; mode: string }
  | { id: number; purge: { now: number; limit: number } }
  | { id: number; close: true };

export type WorkerReply =
  | { id: number; busy: number; log: number; checkpointed: number; durationMs: number; auto: boolean; mode?: string }
  | { id: number; purged: number }
  | { id: number; error: { message: string; code?: string } };

const data = workerData as WorkerData;
const port = parentPort!;
const db = new Database(data.path, { timeout: data.busyTimeoutMs });
// Its own autocheckpoint stays off: this thread checkpoints at the threshold itself.
db.pragma('wal_autocheckpoint = 0');
// Purge commits happen here: the configured durability (and the checkpoints'
// own, see checkpointSynchronous: in WAL mode OFF and NORMAL commit alike), a
// cache no larger than the operator allowed it (RSS), and journal_size_limit,
// which SQLite applies in whichever connection commits first after the WAL
// rewinds. The main connection has none (see connectionPragmas): cutting a
// large -wal file back is slow, and only this thread may wait for it.
db.pragma(`synchronous = ${data.synchronous}`);
db.pragma(`cache_size = ${data.cacheSize | 0}`);
db.pragma(`journal_size_limit = ${Math.trunc(data.journalSizeLimit)}`);
const walPath = `${data.path}-wal`;
const events = new SqliteEventLog(db, data.sessionEvents);
const purgeTx = db.transaction((now: number, limit: number) => events.purgeBatch(now, limit));

type Counts = { busy: number; log: number; checkpointed: number };

function replyError(id: number, err: unknown): void {
  const e = err as { message?: string; code?: string };
  port.postMessage({ id, error: { message: String(e.message), code: e.code } } satisfies WorkerReply);
}

function run(id: number, mode: string, auto: boolean): void {
  const started = performance.now();
  try {
    // FULL, RESTART and TRUNCATE hold the write lock while they copy, and
    // TRUNCATE also while it cuts the file: copy what can be copied without
    // the lock first, so that writers are held back only for the last frames.
    if (mode !== 'PASSIVE' && !auto) catchUp();
    const [row] = db.pragma(`wal_checkpoint(${mode})`) as Counts[];
    port.postMessage({ id, ...row!, durationMs: performance.now() - started, auto, mode } satisfies WorkerReply);
  } catch (err) {
    replyError(id, err);
  }
}

/** PASSIVE passes while they make progress (writers may go on meanwhile): at most a few. */
function catchUp(): void {
  for (let pass = 0; pass < 8; pass++) {
    const before = walIndex.read();
    if (before.backfilled >= before.frames) return;
    db.pragma('wal_checkpoint(PASSIVE)');
    if (walIndex.read().backfilled === before.backfilled) return;
  }
}

function purge(id: number, now: number, limit: number): void {
  try {
    port.postMessage({ id, purged: purgeTx.immediate(now, limit) } satisfies WorkerReply);
  } catch (err) {
    replyError(id, err);
    return;
  }
  // Before the next message (the next batch): the caller's pacing is this thread's own.
  poll();
}

// Without a descriptor to borrow (no -shm when the worker started), one of its
// own that is never closed: the thread ends long before the process does.
const walIndex = data.walIndexFd === undefined ? WalIndex.open(data.path) : WalIndex.borrow(data.path, data.walIndexFd);

// A reader pinning an old snapshot stops a checkpoint from copying anything;
// retrying every poll would only burn I/O and bury the last useful checkpoint
// in the status. So after a checkpoint that copied nothing, back off (doubling
// up to 5 s) until one makes progress again.
const MAX_BACKOFF_MS = 5000;
let backoffMs = 0;
let nextTry = 0;

/** A PASSIVE checkpoint once the WAL holds the threshold's worth of uncopied frames. */
function autoCheckpoint(): void {
  if (data.autocheckpointFrames <= 0) return;
  const { frames, backfilled } = walIndex.read();
  if (frames - backfilled < data.autocheckpointFrames || performance.now() < nextTry) return;
  run(0, 'PASSIVE', true);
  const progressed = walIndex.read().backfilled !== backfilled;
  backoffMs = progressed ? 0 : Math.min(Math.max(backoffMs * 2, data.pollMs * 2), MAX_BACKOFF_MS);
  nextTry = performance.now() + backoffMs;
}

/**
 * journal_size_limit, applied here rather than in a commit on the main thread:
 * once (nearly) every frame of a -wal file over the limit is copied back,
 * TRUNCATE copies the rest and empties it. Without a busy handler, so that it
 * never holds the write lock while it waits: a writer or a reader in the way
 * makes it give up until a later poll.
 */
function trimWal(): void {
  if (data.journalSizeLimit < 0 || performance.now() < trimNextTry || fileBytes(walPath) <= data.journalSizeLimit) return;
  let { frames, backfilled } = walIndex.read();
  // Less than the threshold left to copy: copy it now, without the write lock.
  if (backfilled < frames && frames - backfilled < data.autocheckpointFrames) {
    run(0, 'PASSIVE', true);
    ({ frames, backfilled } = walIndex.read());
  }
  // More left (a reader pins the WAL, or automatic checkpoints are off and the operator has not run one).
  if (backfilled < frames) {
    trimNextTry = performance.now() + TRIM_RETRY_MS;
    return;
  }
  db.pragma('busy_timeout = 0');
  try {
    run(0, 'TRUNCATE', true);
  } finally {
    db.pragma(`busy_timeout = ${data.busyTimeoutMs | 0}`);
  }
  // Still over the limit: something was in the way; do not retry on every poll.
  trimNextTry = fileBytes(walPath) > data.journalSizeLimit ? performance.now() + TRIM_RETRY_MS : 0;
}
const TRIM_RETRY_MS = 500;
let trimNextTry = 0;

const poll = (): void => {
  autoCheckpoint();
  trimWal();
};
const timer = data.autocheckpointFrames > 0 || data.journalSizeLimit >= 0 ? setInterval(poll, data.pollMs) : undefined;

port.on('message', (msg: WorkerRequest) => {
  if ('close' in msg) {
    clearInterval(timer);
    db.close();
    port.postMessage({ id: msg.id, busy: 0, log: 0, checkpointed: 0, durationMs: 0, auto: false } satisfies WorkerReply);
    port.close();
    return;
  }
  if ('purge' in msg) purge(msg.id, msg.purge.now, msg.purge.limit);
  else run(msg.id, msg.mode, false);
});
