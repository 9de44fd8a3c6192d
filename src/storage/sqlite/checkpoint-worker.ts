/*
 * Runs in a worker thread with its own connection, so that WAL checkpoints
 * (which copy pages and fsync the database) never run inside a commit on the
 * main thread, where they stalled every call for 10-17 ms. It polls the WAL
 * index for the frame count and checkpoints PASSIVE at the autocheckpoint
 * threshold, as SQLite itself would, and runs operators' checkpoints on demand.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';
import { WalIndex } from './wal-index';

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
}

export type WorkerRequest = { id: number; mode: string } | { id: number; close: true };

export type WorkerReply =
  | { id: number; busy: number; log: number; checkpointed: number; durationMs: number; auto: boolean }
  | { id: number; error: { message: string; code?: string } };

const data = workerData as WorkerData;
const port = parentPort!;
const db = new Database(data.path, { timeout: data.busyTimeoutMs });
// This connection never writes rows; its own autocheckpoint stays off.
db.pragma('wal_autocheckpoint = 0');

function run(id: number, mode: string, auto: boolean): void {
  const started = performance.now();
  try {
    const [row] = db.pragma(`wal_checkpoint(${mode})`) as { busy: number; log: number; checkpointed: number }[];
    port.postMessage({ id, ...row!, durationMs: performance.now() - started, auto } satisfies WorkerReply);
  } catch (err) {
    const e = err as { message?: string; code?: string };
    port.postMessage({ id, error: { message: String(e.message), code: e.code } } satisfies WorkerReply);
  }
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
const timer = data.autocheckpointFrames > 0
  ? setInterval(() => {
    const { frames, backfilled } = walIndex.read();
    if (frames - backfilled < data.autocheckpointFrames || performance.now() < nextTry) return;
    run(0, 'PASSIVE', true);
    const progressed = walIndex.read().backfilled !== backfilled;
    backoffMs = progressed ? 0 : Math.min(Math.max(backoffMs * 2, data.pollMs * 2), MAX_BACKOFF_MS);
    nextTry = performance.now() + backoffMs;
  }, data.pollMs)
  : undefined;

port.on('message', (msg: WorkerRequest) => {
  if ('close' in msg) {
    clearInterval(timer);
    db.close();
    port.postMessage({ id: msg.id, busy: 0, log: 0, checkpointed: 0, durationMs: 0, auto: false } satisfies WorkerReply);
    port.close();
    return;
  }
  run(msg.id, msg.mode, false);
});
