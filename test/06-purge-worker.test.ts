import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock } from '../src/domain/clock';
import { StorageError } from '../src/domain/errors';
import { DEFAULT_POLICY } from '../src/domain/session';
import { SessionManager } from '../src/domain/session-manager';
import { DEFAULT_STORAGE_OPTIONS, type StorageOptions } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { hashOf, record } from './helpers/repository-contract';
import { tempDir } from './helpers/server';

/*
 * Purges of a running server go to the checkpoint worker's connection
 * (checkpoint-worker.ts): the main connection's group committer never sees
 * them, and the worker checkpoints between batches, so a bulk purge never
 * leaves a large WAL behind it. Behaviour only; the bench measures the speed.
 */

const T0 = Date.UTC(2026, 0, 1);
const MINUTE = 60_000;

function open(t: ExecutionContext, options: Partial<StorageOptions> = {}) {
  const dir = tempDir('sessiond-purge-');
  const path = join(dir, 'sessions.db');
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path, ...options });
  const clock = new ManualClock(T0);
  const sessions = new SessionManager(storage.repository, clock, DEFAULT_POLICY);
  t.teardown(async () => {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { storage, sessions, path, clock };
}

/** `dead` sessions expired a minute before T0 and `live` ones, in one transaction on a connection of its own. */
function fill(path: string, dead: number, live: number): void {
  const db = new Database(path);
  const storage = db.prepare(`INSERT INTO sessions (id, token_hash, server_id, subject, attributes, ip, user_agent, create_time,
    update_time, expire_time, idle_expire_time, last_active_time, idle_timeout_ms, token_rotate_time, revoke_time, version, dead_at)
    VALUES (?, ?, 'srv', 'subject', '{}', '', '', 0, 0, ?, ?, 0, 60000, 0, NULL, 1, ?)`);
  db.transaction(() => {
    for (let i = 0; i < dead + live; i++) {
      const at = i < dead ? T0 - MINUTE : T0 + 60 * MINUTE;
      storage.run(`fill-${i}`, hashOf(`fill-${i}`), at, at, at);
    }
  })();
  // Copied back and emptied: the WAL holds only what the test does next.
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

/** Counts the units the main connection's group committer runs. */
function countWrites(storage: SqliteStorage): { units: number } {
  const counter = { units: 0 };
  const run = storage.writes.run.bind(storage.writes);
  storage.writes.run = <T>(work: () => T) => {
    counter.units++;
    return run(work);
  };
  return counter;
}

test('with the worker running, purge batches commit on its connection, not through the main group committer', async (t) => {
  const { storage, sessions, path } = open(t);
  fill(path, 120, 5);
  const writes = countWrites(storage);
  const r = await sessions.purgeExpired(25);
  t.deepEqual(r, { purged: 120, batches: 5 });
  t.is(writes.units, 0, 'no purge unit went through the main connection');
  t.deepEqual(sessions.counts(), { live: 5, dead: 0 });
  // The main connection sees the worker's commits at once.
  await storage.writes.run(() => storage.sessions.insert(record({ expireTime: T0 - MINUTE, idleExpireTime: T0 - MINUTE }), hashOf('late')));
  t.deepEqual(await sessions.purgeExpired(25), { purged: 1, batches: 1 });
});

test('a bulk purge checkpoints between its batches: the WAL never holds much more than the threshold plus a batch', async (t) => {
  const threshold = 100;
  const { storage, path } = open(t, { walAutocheckpoint: threshold });
  fill(path, 3000, 0);
  const wal = storage['walIndex'] as { read(): { frames: number; backfilled: number } };
  let purged = 0;
  let largestLag = 0;
  let largestBatchFrames = 0;
  for (;;) {
    const before = wal.read();
    const n = await storage.purgeBatch(T0, 40);
    const after = wal.read();
    // A batch's own frames (a rewound WAL starts again from 0).
    largestBatchFrames = Math.max(largestBatchFrames, after.frames >= before.frames ? after.frames - before.frames : after.frames);
    largestLag = Math.max(largestLag, after.frames - after.backfilled);
    purged += n;
    if (n < 40) break;
  }
  t.is(purged, 3000);
  t.true(largestBatchFrames < threshold, `a batch of 40 wrote ${largestBatchFrames} frames: smaller than the threshold, or the bound below says nothing`);
  // Each batch that takes the lag past the threshold is followed by a checkpoint before the next batch runs.
  t.true(largestLag < threshold + largestBatchFrames * 2, `the uncopied WAL reached ${largestLag} frames (threshold ${threshold}, batches of up to ${largestBatchFrames} frames)`);
  t.true(storage.status().lastCheckpoint?.trigger === 'auto', 'the worker reported its checkpoints as automatic ones');
});

test('without the worker (it died, or --checkpoint-worker=false) purges go through the main connection and still count', async (t) => {
  const { storage, sessions, path } = open(t);
  fill(path, 60, 2);
  const writes = countWrites(storage);
  // The worker dies (not a close): Checkpointer's onExit fallback takes over.
  await (storage['checkpointer'] as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
  t.deepEqual(await sessions.purgeExpired(25), { purged: 60, batches: 3 });
  t.is(writes.units, 3, 'each batch was one unit of the group committer');
  t.deepEqual(sessions.counts(), { live: 2, dead: 0 });

  const off = open(t, { checkpointWorker: false });
  fill(off.path, 10, 0);
  t.deepEqual(await off.sessions.purgeExpired(25), { purged: 10, batches: 1 });
});

test('closing storage during a purge: a batch already handed to the worker finishes, later ones are refused', async (t) => {
  const { storage, sessions, path } = open(t);
  fill(path, 500, 7);
  t.is(await storage.purgeBatch(T0, 10), 10);
  const handedOver = storage.purgeBatch(T0, 10);
  const closing = storage.close();
  await t.throwsAsync(storage.purgeBatch(T0, 10), { instanceOf: StorageError, message: /closing/ });
  await t.throwsAsync(sessions.purgeExpired(10), { instanceOf: StorageError, message: /closing/ });
  t.is(await handedOver, 10);
  await closing;
  const db = new Database(path, { readonly: true });
  t.teardown(() => db.close());
  t.is((db.prepare('SELECT count(*) AS n FROM sessions WHERE dead_at <= ?').get(T0) as { n: number }).n, 480);
  t.is((db.prepare('SELECT count(*) AS n FROM sessions WHERE dead_at > ?').get(T0) as { n: number }).n, 7, 'no live session was touched');
  t.is(db.pragma('integrity_check', { simple: true }), 'ok');
});

test('a purge batch that meets another process holding the write lock past the busy timeout fails with StorageBusyError', async (t) => {
  const { storage, path } = open(t, { busyTimeoutMs: 100 });
  fill(path, 5, 0);
  const other = new Database(path);
  t.teardown(() => other.close());
  other.exec('BEGIN IMMEDIATE');
  const err = await t.throwsAsync(storage.purgeBatch(T0, 10));
  t.is((err as { kind?: string }).kind, 'unavailable');
  other.exec('ROLLBACK');
  t.is(await storage.purgeBatch(T0, 10), 5, 'and purges once the lock goes');
});

test('the main connection never cuts the -wal file back (the worker applies journal_size_limit); without the worker it does again', async (t) => {
  const { storage } = open(t, { journalSizeLimit: 64 * 1024 });
  const main = storage['db'] as Database.Database;
  t.is(main.pragma('journal_size_limit', { simple: true }), -1);
  t.is(storage.status().journalSizeLimit, 64 * 1024, 'the status reports the configured limit');
  await (storage['checkpointer'] as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
  t.is(main.pragma('journal_size_limit', { simple: true }), 64 * 1024);
  t.is(main.pragma('wal_autocheckpoint', { simple: true }), DEFAULT_STORAGE_OPTIONS.walAutocheckpoint);
});
