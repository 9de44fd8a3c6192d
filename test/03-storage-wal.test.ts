import test, { type ExecutionContext } from 'ava';
import { status as grpcStatus } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { ServingStatus } from '../src/client/client';
import { SCHEMA_VERSION } from '../src/storage/sqlite/migrations';
import { DEFAULT_STORAGE_OPTIONS, type StorageOptions } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { rejectsWithCode } from './helpers/grpc';
import { hashOf, record } from './helpers/repository-contract';
import { startTestServer, tempDir, type TestServer } from './helpers/server';

/*
 * SQLite in WAL mode, as API.md's "Storage" section and the AdminService and
 * Health rows promise it. Direct SqliteStorage where the file is the point,
 * the real server and client where the RPC is.
 */

const MiB = 1024 * 1024;

/** No background writes (health heartbeat, sweep) during a test, so WAL counts only move when the test writes. */
const QUIET = { SESSIOND_HEALTH_PROBE_INTERVAL: '1h', SESSIOND_SWEEP_INTERVAL: '1h' };

async function server(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ env: { ...QUIET, ...env } });
  t.teardown(() => s.close());
  return s;
}

/** A SqliteStorage on a fresh file; the folder is removed at teardown. */
function openStorage(t: ExecutionContext, options: Partial<StorageOptions> = {}) {
  const dir = tempDir('sessiond-wal-');
  const path = join(dir, 'sessions.db');
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path, ...options });
  // close() may be synchronous or return a promise (it may checkpoint first): await covers both.
  t.teardown(async () => {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { storage, path, dir };
}

const size = (path: string) => (existsSync(path) ? statSync(path).size : -1);

async function createSome(s: TestServer, n: number, extra: { ttlSeconds?: number } = {}): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await s.client.createSession({
      serverId: 'web-1',
      subject: `user-${i}`,
      attributes: { i: String(i) },
      ttl: extra.ttlSeconds ? { seconds: extra.ttlSeconds, nanos: 0 } : undefined,
    });
    tokens.push(r.token);
  }
  return tokens;
}

function mdValue(md: { get(key: string): unknown[] }, key: string): string | undefined {
  const v = md.get(key);
  return v.length === 0 ? undefined : String(v[0]);
}

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

// ------------------------------------------------------------------ Checkpoint through AdminService

test('Checkpoint runs each of the four modes and reports sane numbers', async (t) => {
  const s = await server(t);
  const wal = `${s.dbPath}-wal`;
  for (const mode of [
    CheckpointMode.CHECKPOINT_MODE_PASSIVE,
    CheckpointMode.CHECKPOINT_MODE_FULL,
    CheckpointMode.CHECKPOINT_MODE_RESTART,
    CheckpointMode.CHECKPOINT_MODE_TRUNCATE,
  ]) {
    const name = CheckpointMode[mode];
    await createSome(s, 3);
    t.true(size(wal) > 0, `${name}: the writes are in the WAL`);
    const r = await s.client.checkpoint({ mode });
    t.is(r.mode, mode, name);
    t.false(r.busy, `${name}: nothing else holds the database`);
    t.true(r.checkpointedFrames >= 0, name);
    t.true(r.logFrames >= r.checkpointedFrames, name);
    t.truthy(r.duration, name);
    t.is(r.walBytes, size(wal), `${name}: wal_bytes is the -wal file size after the checkpoint`);
    if (mode === CheckpointMode.CHECKPOINT_MODE_TRUNCATE) {
      t.is(r.walBytes, 0);
      t.is(size(wal), 0, 'TRUNCATE leaves an empty -wal file');
    } else {
      t.true(r.logFrames > 0, `${name}: the writes are counted`);
      t.is(r.checkpointedFrames, r.logFrames, `${name}: with no reader every frame is copied back`);
      t.true(r.walBytes > 0, `${name}: only TRUNCATE shrinks the file`);
    }
  }
});

test('Checkpoint without a mode is PASSIVE; an unknown mode is INVALID_ARGUMENT', async (t) => {
  const s = await server(t);
  await createSome(s, 1);
  const r = await s.client.checkpoint({});
  t.is(r.mode, CheckpointMode.CHECKPOINT_MODE_PASSIVE);
  t.true(r.logFrames > 0);
  await rejectsWithCode(t, s.client.checkpoint({ mode: 99 as CheckpointMode }), grpcStatus.INVALID_ARGUMENT, /mode/);
});

test('Checkpoint with a reader holding an old snapshot: PASSIVE copies part, RESTART reports busy', async (t) => {
  const s = await server(t, { SESSIOND_BUSY_TIMEOUT: '100ms' });
  await createSome(s, 2);
  const reader = new Database(s.dbPath, { readonly: true });
  t.teardown(() => reader.close());
  reader.exec('BEGIN');
  t.true((reader.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n >= 2);
  // Written after the reader's snapshot: these frames cannot be copied back while it reads.
  await createSome(s, 3);
  const passive = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  t.false(passive.busy, 'PASSIVE never waits and never reports busy');
  t.true(passive.logFrames > 0);
  t.true(passive.checkpointedFrames < passive.logFrames, `${passive.checkpointedFrames} of ${passive.logFrames} frames copied`);
  const restart = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_RESTART });
  t.true(restart.busy, 'RESTART cannot finish while a reader uses the WAL');
  const status = await s.client.getStorageStatus();
  t.true(status.lastCheckpoint?.busy);
  reader.exec('COMMIT');
  const again = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  t.false(again.busy, 'with the reader gone TRUNCATE completes');
  t.is(again.walBytes, 0);
});

// ------------------------------------------------------------------ GetStorageStatus

test('GetStorageStatus reports the default pragmas as in force, WAL frames, counts, schema and last checkpoint', async (t) => {
  const s = await server(t);
  const before = await s.client.getStorageStatus();
  t.is(before.lastCheckpoint, undefined, 'no checkpoint has run yet');

  await createSome(s, 2, { ttlSeconds: 60 });
  await createSome(s, 3);
  s.clock.advance(2 * 60_000);
  const live = await s.client.listSessions({});
  await s.client.deleteSession(live.sessions[0]!.id);

  const st = await s.client.getStorageStatus();
  t.is(st.path, s.dbPath);
  t.is(st.journalMode, 'wal');
  t.is(st.synchronous, 'NORMAL');
  t.is(st.cacheSize, -2000);
  t.is(st.busyTimeoutMs, 5000);
  t.is(st.walAutocheckpoint, 1000);
  t.is(st.journalSizeLimit, DEFAULT_STORAGE_OPTIONS.journalSizeLimit);
  t.is(st.journalSizeLimit, 8 * MiB);
  t.true(st.walFrames > 0, 'the writes are in the WAL');
  t.is(st.walBytes, size(`${s.dbPath}-wal`));
  t.true(st.walBytes > 0);
  t.is(st.databaseBytes, size(s.dbPath));
  t.true(st.pageSize >= 512);
  t.true(st.pageCount > 0);
  t.true(st.freelistCount >= 0);
  t.is(st.liveSessions, 2, 'three default-ttl sessions, one deleted');
  t.is(st.expiredSessions, 3, 'two past their ttl, one revoked');
  t.is(st.schemaVersion, SCHEMA_VERSION);

  const from = Date.now();
  const c = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  const to = Date.now();
  const after = await s.client.getStorageStatus();
  t.is(after.walFrames, 0);
  t.is(after.walBytes, 0);
  t.is(after.walCheckpointedFrames, 0);
  t.is(after.databaseBytes, after.pageSize * after.pageCount, 'every page is in the database file');
  t.is(after.databaseBytes, size(s.dbPath));
  const last = after.lastCheckpoint;
  t.truthy(last);
  t.is(last?.mode, CheckpointMode.CHECKPOINT_MODE_TRUNCATE);
  t.is(last?.trigger, 'admin');
  t.false(last?.busy);
  t.is(last?.logFrames, c.logFrames);
  t.is(last?.checkpointedFrames, c.checkpointedFrames);
  const time = last?.time?.getTime() ?? 0;
  t.true(time >= from && time <= to, `checkpoint time ${time} within [${from}, ${to}]`);

  await createSome(s, 1);
  const passive = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  const afterPassive = await s.client.getStorageStatus();
  t.true(afterPassive.walFrames > 0);
  t.is(afterPassive.walFrames, passive.logFrames);
  t.is(afterPassive.walCheckpointedFrames, afterPassive.walFrames, 'PASSIVE with no reader backfills everything');
  t.is(afterPassive.lastCheckpoint?.mode, CheckpointMode.CHECKPOINT_MODE_PASSIVE);
});

test('GetStorageStatus reports configured (non-default) pragmas, e.g. synchronous FULL', async (t) => {
  const s = await server(t, {
    SESSIOND_SYNCHRONOUS: 'full',
    SESSIOND_CACHE_SIZE: '-4096',
    SESSIOND_BUSY_TIMEOUT: '1500ms',
    SESSIOND_WAL_AUTOCHECKPOINT: '250',
    SESSIOND_JOURNAL_SIZE_LIMIT: '1MiB',
  });
  const st = await s.client.getStorageStatus();
  t.is(st.journalMode, 'wal');
  t.is(st.synchronous, 'FULL');
  t.is(st.cacheSize, -4096);
  t.is(st.busyTimeoutMs, 1500);
  t.is(st.walAutocheckpoint, 250);
  t.is(st.journalSizeLimit, MiB);
});

/** Polls `check` every 25 ms until it holds or `ms` pass; returns whether it held. */
async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

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
  // Well over the worker's polling interval.
  await new Promise((resolve) => setTimeout(resolve, 400));
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

test('with --checkpoint-worker=false, SQLite checkpoints inside commits at wal_autocheckpoint, and no worker reports one', async (t) => {
  const seen: string[] = [];
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
  // Well over the worker's polling interval: nothing runs in the background.
  await new Promise((resolve) => setTimeout(resolve, 200));
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
  // Several worker polls: frames not yet copied back are never cut.
  await new Promise((resolve) => setTimeout(resolve, 300));
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

// ------------------------------------------------------------------ Health metadata

test('every health Check carries the journal mode and WAL frames as response metadata', async (t) => {
  const s = await server(t);
  await createSome(s, 2);
  for (const service of ['', 'sessions.v1.SessionService', 'sessions.v1.AdminService']) {
    const h = await s.client.health(service);
    const st = await s.client.getStorageStatus();
    t.is(h.status, ServingStatus.SERVING, service);
    t.is(mdValue(h.metadata, 'x-sessiond-journal-mode'), 'wal', service);
    t.true(st.walFrames > 0);
    t.is(mdValue(h.metadata, 'x-sessiond-wal-frames'), String(st.walFrames), service);
    t.is(mdValue(h.metadata, 'x-sessiond-wal-bytes'), String(st.walBytes), service);
    t.is(mdValue(h.metadata, 'x-sessiond-not-serving-reason'), undefined, service);
  }

  await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  const emptied = await s.client.health();
  t.is(mdValue(emptied.metadata, 'x-sessiond-wal-frames'), '0');
  t.is(mdValue(emptied.metadata, 'x-sessiond-wal-bytes'), '0');

  await createSome(s, 1);
  const grown = await s.client.health();
  const st = await s.client.getStorageStatus();
  t.true(st.walFrames > 0);
  t.is(mdValue(grown.metadata, 'x-sessiond-wal-frames'), String(st.walFrames));
});

// ------------------------------------------------------------------ journal_mode=delete

test('with journal_mode=delete the server serves, says so in health, and refuses checkpoints', async (t) => {
  const s = await server(t, { SESSIOND_JOURNAL_MODE: 'delete' });
  const h = await s.client.health();
  t.is(h.status, ServingStatus.SERVING);
  t.is(mdValue(h.metadata, 'x-sessiond-journal-mode'), 'delete');
  t.is(mdValue(h.metadata, 'x-sessiond-wal-frames'), '0');

  const tokens = await createSome(s, 2);
  t.true((await s.client.validateSession(tokens[0]!)).valid);
  t.false(existsSync(`${s.dbPath}-wal`), 'no WAL file in rollback-journal mode');

  for (const mode of [
    CheckpointMode.CHECKPOINT_MODE_PASSIVE,
    CheckpointMode.CHECKPOINT_MODE_FULL,
    CheckpointMode.CHECKPOINT_MODE_RESTART,
    CheckpointMode.CHECKPOINT_MODE_TRUNCATE,
  ]) {
    await rejectsWithCode(t, s.client.checkpoint({ mode }), grpcStatus.FAILED_PRECONDITION, /\bdelete\b/);
  }
  const st = await s.client.getStorageStatus();
  t.is(st.journalMode, 'delete');
  t.is(st.walFrames, 0);
  t.is(st.walBytes, 0);
  t.is(st.liveSessions, 2);
  t.is(st.lastCheckpoint, undefined, 'a refused checkpoint is not recorded');
});

// ------------------------------------------------------------------ open errors, honestly provoked

test('open refuses a schema newer than this build and leaves its tables alone', (t) => {
  const dir = tempDir('sessiond-wal-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'future.db');
  const prep = new Database(path);
  prep.exec('CREATE TABLE future_only (x INTEGER)');
  prep.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  prep.close();

  const err = t.throws(() => SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path }));
  t.true(err?.message.includes(path), err?.message);
  t.regex(err?.message ?? '', new RegExp(`schema version ${SCHEMA_VERSION + 1} is newer`));

  const check = new Database(path, { readonly: true });
  t.teardown(() => check.close());
  t.is(check.pragma('user_version', { simple: true }), SCHEMA_VERSION + 1);
  const tables = (check.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
  t.deepEqual(tables, ['future_only'], 'no migration ran');
});

test('open of a directory throws naming the path', (t) => {
  const dir = tempDir('sessiond-wal-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'a-directory');
  mkdirSync(path);
  const err = t.throws(() => SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path }));
  t.true(err?.message.includes(`cannot open database ${path}`), err?.message);
  t.regex(err?.message ?? '', /it is a directory, not a database file/);
});

test('open of a file that is not SQLite throws naming the path and leaves the file as it was', (t) => {
  const dir = tempDir('sessiond-wal-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'notes.txt');
  const content = Buffer.from('these are my notes, not a database\n'.repeat(40));
  writeFileSync(path, content);
  const err = t.throws(() => SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path }));
  t.true(err?.message.includes(path), err?.message);
  t.regex(err?.message ?? '', /it is not a SQLite database/);
  t.deepEqual(readFileSync(path), content);
});

test('open reports journal_mode=wal not taking effect (an in-memory database stays "memory")', (t) => {
  const err = t.throws(() => SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path: ':memory:' }));
  t.regex(err?.message ?? '', /^cannot open database :memory:: /);
  t.regex(err?.message ?? '', /journal_mode=wal did not take effect \(SQLite reports memory\)/);
  t.regex(err?.message ?? '', /WAL needs a local filesystem/);
});

test('open lists every pragma SQLite did not honour', async (t) => {
  const dir = tempDir('sessiond-wal-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'sessions.db');
  // SQLite clamps a negative busy timeout to 0, and any negative journal size limit to -1, instead of failing.
  const err = t.throws(() => SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path, busyTimeoutMs: -5, journalSizeLimit: -5 }));
  const message = err?.message ?? '';
  t.true(message.includes(path), message);
  t.regex(message, /busy_timeout=-5 did not take effect \(SQLite reports 0\)/);
  t.regex(message, /journal_size_limit=-5 did not take effect \(SQLite reports -1\)/);
  t.notRegex(message, /journal_mode|synchronous|cache_size|wal_autocheckpoint/, 'only the pragmas that failed are named');
  // The failed open released the file: a correct open works at once.
  const ok = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path });
  t.teardown(async () => {
    await ok.close();
  });
  t.is(ok.status().journalMode, 'wal');
});

// ------------------------------------------------------------------ migrations

test('a fresh file is migrated to SCHEMA_VERSION, and reopening keeps the data', async (t) => {
  const dir = tempDir('sessiond-wal-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'nested', 'deeper', 'sessions.db');
  const options = { ...DEFAULT_STORAGE_OPTIONS, path };

  const first = SqliteStorage.open(options);
  t.true(SCHEMA_VERSION >= 1);
  t.is(first.status().schemaVersion, SCHEMA_VERSION);
  const s = record();
  first.sessions.insert(s, hashOf(s.id));
  await first.close();

  const look = new Database(path, { readonly: true });
  t.is(look.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  const names = (look.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]).map((r) => r.name);
  for (const name of ['sessions', 'meta', 'sessions_by_server', 'sessions_by_subject', 'sessions_by_server_subject', 'sessions_by_dead_at']) {
    t.true(names.includes(name), `${name} exists`);
  }
  look.close();

  const second = SqliteStorage.open(options);
  t.teardown(async () => {
    await second.close();
  });
  t.is(second.status().schemaVersion, SCHEMA_VERSION);
  t.deepEqual(second.sessions.findById(s.id), s);
  t.deepEqual(second.sessions.findByTokenHash(hashOf(s.id)), s);
  t.deepEqual(second.sessions.countSessions(s.createTime), { live: 1, dead: 0 });
});

// ------------------------------------------------------------------ the token never reaches the disk

test('neither a token nor its decoded bytes are ever written; its SHA-256 is', async (t) => {
  const s = await server(t);
  const tokens = await createSome(s, 5);
  const rotated = await s.client.rotateSessionToken((await s.client.validateSession(tokens[0]!)).session!.id);
  tokens.push(rotated.token);

  const files = () => [s.dbPath, `${s.dbPath}-wal`, `${s.dbPath}-shm`].filter(existsSync).map((p) => ({ p, bytes: readFileSync(p) }));
  const sha = (token: string) => createHash('sha256').update(token, 'utf8').digest();
  const check = (stage: string) => {
    const all = files();
    t.true(all.length >= 2, `${stage}: the database and its WAL exist`);
    for (const token of tokens) {
      t.is(token.length, 43);
      const raw = Buffer.from(token, 'base64url');
      t.is(raw.length, 32);
      for (const { p, bytes } of all) {
        t.false(bytes.includes(Buffer.from(token, 'utf8')), `${stage}: token text in ${p}`);
        t.false(bytes.includes(raw), `${stage}: token bytes in ${p}`);
        t.false(bytes.includes(Buffer.from(token, 'utf16le')), `${stage}: token as UTF-16 in ${p}`);
      }
    }
    return all;
  };

  // Before any checkpoint the rows live only in the WAL.
  const before = check('before checkpoint');
  const walBefore = before.find((f) => f.p.endsWith('-wal'))!.bytes;
  for (const token of tokens) t.true(walBefore.includes(sha(token)), 'the hash is in the WAL, so the search works');

  const c = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  t.true(c.checkpointedFrames > 0);
  const after = check('after PASSIVE checkpoint');
  const db = after.find((f) => f.p === s.dbPath)!.bytes;
  // tokens[0] was rotated away: its row now holds the new token's hash.
  for (const token of tokens.slice(1)) t.true(db.includes(sha(token)), 'the hash reached the database file');
});

// ------------------------------------------------------------------ query plans

type Plan = string[];

function plan(db: Database.Database, sql: string, params: unknown[]): Plan {
  return (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((r) => r.detail);
}

function assertIndexed(t: ExecutionContext, name: string, p: Plan, expected: RegExp): void {
  t.true(p.some((d) => expected.test(d)), `${name}: expected ${expected} in ${JSON.stringify(p)}`);
  t.false(p.some((d) => /^SCAN sessions\b(?! USING (COVERING )?INDEX)/.test(d)), `${name}: full table scan in ${JSON.stringify(p)}`);
  t.false(p.some((d) => /TEMP B-TREE/.test(d)), `${name}: needs a sort in ${JSON.stringify(p)}`);
}

test('list filters, revocations, lookups and the purge use an index (EXPLAIN QUERY PLAN on a second connection)', (t) => {
  const { storage, path } = openStorage(t);
  // Some rows, so that the plans are for a table that is not empty.
  for (let i = 0; i < 50; i++) {
    const s = record({ serverId: `srv-${i % 3}`, subject: `user-${i % 7}` });
    storage.sessions.insert(s, hashOf(s.id));
  }
  const other = new Database(path, { readonly: true });
  t.teardown(() => other.close());

  // The statements the repository really runs (private fields, read here on purpose so a
  // changed query is checked as it is, not as a copy in this file remembers it).
  const repo = storage.sessions;
  const lists = repo['lists'];
  const revokes = repo['revokes'];
  const named = { serverId: 'srv-1', subject: 'user-2', cursor: 10, now: Date.now(), limit: 101 };
  // The same plans with a caller's server_ids (exact names and prefixes) applied on top.
  for (const [set, params] of [['any', named], ['within', { ...named, exact: '["srv-1"]', prefixes: '["srv-"]' }]] as const) {
    const l = lists[set];
    const r = revokes[set];
    assertIndexed(t, `list by server (${set})`, plan(other, l.server.source, [params]),
      /^SEARCH sessions USING (COVERING )?INDEX sessions_by_server(_subject)? \(server_id=\? AND rowid>\?\)$/);
    assertIndexed(t, `list by subject (${set})`, plan(other, l.subject.source, [params]),
      /^SEARCH sessions USING (COVERING )?INDEX sessions_by_subject \(subject=\? AND rowid>\?\)$/);
    assertIndexed(t, `list by both (${set})`, plan(other, l.both.source, [params]),
      /^SEARCH sessions USING (COVERING )?INDEX sessions_by_server_subject \(server_id=\? AND subject=\? AND rowid>\?\)$/);
    assertIndexed(t, `list of all (${set})`, plan(other, l.all.source, [params]), /^SEARCH sessions USING INTEGER PRIMARY KEY \(rowid>\?\)$/);

    for (const [name, stmt, index] of [['server', r.server, /sessions_by_server(_subject)? \(server_id=\?/], ['subject', r.subject, /sessions_by_subject \(subject=\?\)/], ['both', r.both, /sessions_by_server_subject \(server_id=\? AND subject=\?\)/]] as const) {
      const p = plan(other, stmt.source, [params]);
      // The batch is chosen through the index, then updated by key.
      assertIndexed(t, `revoke by ${name} (${set})`, p, new RegExp(`^SEARCH sessions USING (COVERING )?INDEX ${index.source}`));
      assertIndexed(t, `revoke by ${name} (${set}, update by key)`, p, /^SEARCH sessions USING INTEGER PRIMARY KEY \(rowid=\?\)$/);
    }
  }

  assertIndexed(t, 'find by id', plan(other, repo['byId'].source, ['x']), /^SEARCH sessions USING INDEX sqlite_autoindex_sessions_\d \(id=\?\)$/);
  assertIndexed(t, 'find by token hash', plan(other, repo['byToken'].source, [Buffer.alloc(32)]), /^SEARCH sessions USING INDEX sqlite_autoindex_sessions_\d \(token_hash=\?\)$/);
  assertIndexed(t, 'find by request id', plan(other, repo['byRequestId'].source, ['srv-1', 'req']), /^SEARCH sessions USING INDEX sessions_by_request_id \(server_id=\? AND request_id=\?\)$/);

  const purge = plan(other, repo['purgeStmt'].source, [Date.now(), 1000]);
  assertIndexed(t, 'purge batch', purge, /^SEARCH sessions USING (COVERING )?INDEX sessions_by_dead_at \(dead_at<\?\)$/);
  assertIndexed(t, 'purge batch (delete by key)', purge, /^SEARCH sessions USING INTEGER PRIMARY KEY \(rowid=\?\)$/);

  // The assertion itself can fail: a query on an unindexed column is a full scan.
  const scan = plan(other, 'SELECT id FROM sessions WHERE user_agent = ? ORDER BY expire_time', ['x']);
  t.true(scan.some((d) => /^SCAN sessions$/.test(d)), JSON.stringify(scan));
  t.true(scan.some((d) => /TEMP B-TREE/.test(d)), JSON.stringify(scan));
});
