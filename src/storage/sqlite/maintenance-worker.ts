/*
 * One maintenance job in a worker thread, on a connection of its own: an
 * online backup, or an integrity check. Both read the whole database; here
 * they cost the event loop nothing, and SQLite's WAL lets the main
 * connection go on writing meanwhile.
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';

export type MaintenanceJob =
  | { kind: 'backup'; path: string; dest: string; busyTimeoutMs: number; pagesPerStep: number }
  | { kind: 'check'; path: string; full: boolean; busyTimeoutMs: number; maxProblems: number };

export type MaintenanceReply =
  | { ok: true; kind: 'backup'; bytes: number; sha256: string; problems: string[] }
  | { ok: true; kind: 'check'; problems: string[] }
  | { ok: false; message: string; code?: string };

function check(db: Database.Database, full: boolean, maxProblems: number): string[] {
  const name = full ? 'integrity_check' : 'quick_check';
  const rows = db.pragma(`${name}(${maxProblems | 0})`) as Record<string, string>[];
  const messages = rows.map((r) => String(Object.values(r)[0]));
  return messages.length === 1 && messages[0] === 'ok' ? [] : messages;
}

function sha256Of(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

function fsyncPath(path: string, flags: string): void {
  const fd = openSync(path, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function run(job: MaintenanceJob): Promise<MaintenanceReply> {
  const db = new Database(job.path, { fileMustExist: true });
  try {
    db.pragma(`busy_timeout = ${job.busyTimeoutMs | 0}`);
    if (job.kind === 'check') return { ok: true, kind: 'check', problems: check(db, job.full, job.maxProblems) };
    // The backup API copies a consistent snapshot, a step of pages at a time,
    // restarting when another connection writes in between; in WAL mode it
    // sees the database as of one read transaction per step.
    await db.backup(job.dest, { progress: () => job.pagesPerStep });
  } finally {
    db.close();
  }
  const copy = new Database(job.dest, { fileMustExist: true });
  let problems: string[];
  try {
    // A copy a restore can open with nothing beside it: no -wal, no -shm.
    copy.pragma('journal_mode = DELETE');
    problems = check(copy, false, 100);
  } finally {
    copy.close();
  }
  fsyncPath(job.dest, 'r+');
  fsyncPath(dirname(job.dest), 'r');
  return { ok: true, kind: 'backup', bytes: statSync(job.dest).size, sha256: sha256Of(job.dest), problems };
}

const job = workerData as MaintenanceJob;
run(job).then(
  (reply) => parentPort!.postMessage(reply),
  (err: unknown) => parentPort!.postMessage({ ok: false, message: err instanceof Error ? err.message : String(err), code: (err as { code?: string }).code }),
);
