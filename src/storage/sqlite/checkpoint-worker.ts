/*
 * Runs in a worker thread with its own connection, so that WAL checkpoints
 * (which copy pages and fsync the database) never run inside a commit on the
 * main thread, where they stalled every call for 10-17 ms. It polls the WAL
 * index for the frame count and checkpoints PASSIVE at the autocheckpoint
 * threshold, as SQLite itself would, and runs operators' checkpoints on demand.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';
import { readWalIndex } from './wal-index';

export interface WorkerData {
  path: string;
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

const timer = data.autocheckpointFrames > 0
  ? setInterval(() => {
    const { frames, backfilled } = readWalIndex(data.path);
    if (frames - backfilled >= data.autocheckpointFrames) run(0, 'PASSIVE', true);
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
