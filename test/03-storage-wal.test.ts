import test from 'ava';
import { status as grpcStatus } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { rejectsWithCode } from './helpers/grpc';
import { hashOf, record } from './helpers/repository-contract';
import { tempDir } from './helpers/server';
import { backgroundHandles, createSome, eventually, openStorage, server, size, workerPolled } from './helpers/storage';

/*
 * SQLite in WAL mode, and the storage settings taking effect on the file:
 * the -wal file, automatic checkpoints, group commit, checkpoints inside
 * commits without the worker, snapshot reads, journal_size_limit and the busy
 * timeout. Direct SqliteStorage where the file is the point, the real server
 * and client where the RPC is.
 */

// ------------------------------------------------------------------ journal mode and the -wal file

test('a fresh database is in WAL mode and writes go to the -wal file', async (t) => {
  const { storage, path } = openStorage(t);
  t.is(storage.status().journalMode, 'wal');
  t.is(storage.walSnapshot().journalMode, 'wal');
  // WAL is persistent: a new connection and the file header (bytes 18-19 = 2) agree.
  const other = new Database(path, { readonly: true });
  t.teardown(() => other.close());
  t.is(other.pragma('journal_mode', { simple: true }), 'wal');
  const header = readFileSync(path).subarray(0, 20);
  t.is(header.subarray(0, 16).toString('latin1'), 'SQLite format 3\0');
  t.deepEqual([header[18], header[19]], [2, 2]);

  const c = await storage.checkpoint('TRUNCATE', 'admin');
  t.is(c.walBytes, 0);
  t.is(size(`${path}-wal`), 0);
  t.is(storage.walSnapshot().walFrames, 0);

  const s = record();
  storage.sessions.insert(s, hashOf(s.id));
  t.true(size(`${path}-wal`) > 0, 'the write landed in the -wal file');
  const snap = storage.walSnapshot();
  t.true(snap.walFrames > 0);
  t.is(snap.walBytes, size(`${path}-wal`));
  t.is(storage.status().walFrames, snap.walFrames);
  // WAL frames are page-sized plus a 24-byte header, after the 32-byte file header.
  t.is(snap.walBytes, 32 + snap.walFrames * (storage.status().pageSize + 24));
});

test('wal_autocheckpoint takes effect: the WAL is checkpointed in the background at the configured frame count', async (t) => {
  const s = await server(t, { SESSIOND_WAL_AUTOCHECKPOINT: '20' });
  await createSome(s, 20);
  const fired = await eventually(async () => (await s.client.getStorageStatus()).lastCheckpoint?.trigger === 'auto', 5000);
  t.true(fired, 'an automatic checkpoint ran');
  const st = await s.client.getStorageStatus();
  t.is(st.walAutocheckpoint, 20);
  t.is(st.lastCheckpoint?.mode, CheckpointMode.CHECKPOINT_MODE_PASSIVE);
  t.true((st.lastCheckpoint?.checkpointedFrames ?? 0) >= 20);
});

test('wal_autocheckpoint=0 turns automatic checkpoints off', async (t) => {
  const s = await server(t, { SESSIOND_WAL_AUTOCHECKPOINT: '0' });
  await createSome(s, 20);
  const before = await s.client.getStorageStatus();
  t.true(before.walFrames >= 20);
  // The worker has looked at the WAL since: it would have checkpointed then.
  await workerPolled(s);
  const st = await s.client.getStorageStatus();
  t.is(st.walAutocheckpoint, 0);
  t.is(st.lastCheckpoint, undefined);
  t.is(st.walCheckpointedFrames, 0);
  t.is(st.walFrames, before.walFrames);
});

test('with group commit, concurrent writes share one commit; switched off (--group-commit=false), each commits alone', async (t) => {
  // Every commit appends the pages it dirtied to the WAL. On a fresh file the
  // table and each index are one page, so 20 inserts in one transaction add a
  // handful of frames, and 20 transactions add at least 20.
  const frames = async (groupCommit: boolean) => {
    const { storage } = openStorage(t, { groupCommit });
    const before = storage.walSnapshot().walFrames;
    await Promise.all(Array.from({ length: 20 }, (_, i) => storage.writes.run(() => storage.sessions.insert(record(), hashOf(`gc-${groupCommit}-${i}`)))));
    return storage.walSnapshot().walFrames - before;
  };
  const grouped = await frames(true);
  const alone = await frames(false);
  t.true(grouped < 20, `grouped: ${grouped} frames`);
  t.true(alone >= 20, `one commit each: ${alone} frames`);
});

// Serial, so that no other test of this file holds timers while the handles are counted.
test.serial('with --checkpoint-worker=false, SQLite checkpoints inside commits at wal_autocheckpoint, and no worker reports one', async (t) => {
  const seen: string[] = [];
  const handlesBefore = backgroundHandles();
  const dir = tempDir('sessiond-wal-');
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path: join(dir, 'sessions.db'), walAutocheckpoint: 10, checkpointWorker: false }, {
    onCheckpoint: (r) => seen.push(r.trigger),
  });
  t.teardown(async () => {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let written = 0;
  for (let i = 0; i < 40; i++) {
    const before = storage.walSnapshot().walFrames;
    await storage.writes.run(() => storage.sessions.insert(record(), hashOf(`inline-${i}`)));
    written += Math.max(0, storage.walSnapshot().walFrames - before);
  }
  // The commit that crossed 10 frames checkpointed them back before returning,
  // so a later commit rewound the WAL: it never holds all that was written.
  const st = storage.status();
  t.true(st.walCheckpointedFrames > 0 || st.walFrames < written, `frames ${st.walFrames}, written ${written}`);
  t.true(st.walFrames < 40 * 3, `the WAL stayed bounded: ${st.walFrames} frames`);
  // Nothing can report one later: the storage left no worker port and no timer behind.
  t.deepEqual(backgroundHandles(), handlesBefore);
  t.deepEqual(seen, []);
});

test('snapshot reads through one read transaction: a commit by another connection meanwhile is not seen inside it', async (t) => {
  const { storage, path } = openStorage(t);
  const s = record({ attributes: { v: '1' } });
  await storage.writes.run(() => storage.sessions.insert(s, hashOf(s.id)));
  const other = new Database(path);
  t.teardown(() => other.close());
  const seen = storage.sessions.snapshot(() => {
    const first = storage.sessions.findById(s.id)!.attributes.v;
    other.prepare("UPDATE sessions SET attributes = '{\"v\":\"2\"}' WHERE id = ?").run(s.id);
    return [first, storage.sessions.findById(s.id)!.attributes.v];
  });
  t.deepEqual(seen, ['1', '1'], 'both reads saw the snapshot the first one started');
  t.is(storage.sessions.findById(s.id)!.attributes.v, '2', 'the next read sees the commit');
  // Outside a snapshot every statement reads afresh.
  other.prepare("UPDATE sessions SET attributes = '{\"v\":\"3\"}' WHERE id = ?").run(s.id);
  t.is(storage.sessions.findById(s.id)!.attributes.v, '3');
  // And a write right after a snapshot takes the lock as usual.
  await storage.writes.run(() => storage.sessions.insert(record(), hashOf('after-snapshot')));
  t.truthy(storage.sessions.findByTokenHash(hashOf('after-snapshot')));
});

test('journal_size_limit takes effect: once a checkpoint has copied the WAL back, the worker cuts the -wal file back to the limit', async (t) => {
  const limit = 64 * 1024;
  // Autocheckpoint off, so the WAL grows well past the limit first.
  const s = await server(t, { SESSIOND_JOURNAL_SIZE_LIMIT: '64KiB', SESSIOND_WAL_AUTOCHECKPOINT: '0' });
  t.is((await s.client.getStorageStatus()).journalSizeLimit, limit);
  await createSome(s, 40);
  const grown = size(`${s.dbPath}-wal`);
  t.true(grown > limit, `the WAL grew to ${grown} bytes`);
  // A worker poll since: frames not yet copied back are never cut.
  await workerPolled(s);
  t.is(size(`${s.dbPath}-wal`), grown, 'a WAL that is not copied back keeps its size');
  const c = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  t.is(c.checkpointedFrames, c.logFrames);
  // No write needed: the worker cuts the file, so the main thread's commits never do (a large WAL took seconds).
  t.true(await eventually(async () => size(`${s.dbPath}-wal`) <= limit, 5000), `the WAL is back to ${size(`${s.dbPath}-wal`)} bytes`);
  // The worker's report of that TRUNCATE reaches the main thread as a message,
  // which may come a moment after the file was cut.
  t.true(await eventually(async () => (await s.client.getStorageStatus()).lastCheckpoint?.mode === CheckpointMode.CHECKPOINT_MODE_TRUNCATE, 5000));
  const last = (await s.client.getStorageStatus()).lastCheckpoint;
  t.is(last?.mode, CheckpointMode.CHECKPOINT_MODE_TRUNCATE);
  t.is(last?.trigger, 'auto');
  await createSome(s, 1);
  t.true(size(`${s.dbPath}-wal`) <= limit);
});

test('journal_size_limit without the worker (--checkpoint-worker=false): the first commit after a checkpoint cuts the -wal file back', async (t) => {
  const limit = 64 * 1024;
  const s = await server(t, { SESSIOND_JOURNAL_SIZE_LIMIT: '64KiB', SESSIOND_WAL_AUTOCHECKPOINT: '0', SESSIOND_CHECKPOINT_WORKER: 'false' });
  t.is((await s.client.getStorageStatus()).journalSizeLimit, limit);
  await createSome(s, 40);
  const grown = size(`${s.dbPath}-wal`);
  t.true(grown > limit, `the WAL grew to ${grown} bytes`);
  const c = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  t.is(c.checkpointedFrames, c.logFrames);
  t.is(size(`${s.dbPath}-wal`), grown, 'a PASSIVE checkpoint alone does not shrink the file');
  await createSome(s, 1);
  const after = size(`${s.dbPath}-wal`);
  t.true(after <= limit, `the WAL is back to ${after} bytes`);
});

test('the busy timeout takes effect: a write blocked by another connection fails UNAVAILABLE after about that long', async (t) => {
  const s = await server(t, { SESSIOND_BUSY_TIMEOUT: '300ms' });
  t.is((await s.client.getStorageStatus()).busyTimeoutMs, 300);
  const other = new Database(s.dbPath);
  t.teardown(() => other.close());
  other.exec('BEGIN IMMEDIATE');
  const started = Date.now();
  try {
    await rejectsWithCode(t, s.client.createSession({ serverId: 'web-1' }), grpcStatus.UNAVAILABLE);
  } finally {
    other.exec('ROLLBACK');
  }
  const waited = Date.now() - started;
  t.true(waited >= 250, `gave up after ${waited} ms`);
  t.true(waited < 4000, `gave up after ${waited} ms, not the default 5 s`);
  t.truthy((await s.client.createSession({ serverId: 'web-1' })).token, 'writes go through once the lock is released');
});
