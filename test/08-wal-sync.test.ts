import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { StorageError } from '../src/domain/errors';
import { GroupCommitter } from '../src/storage/sqlite/group-commit';
import { DEFAULT_STORAGE_OPTIONS, type StorageOptions } from '../src/storage/sqlite/pragmas';
import { SqliteStorage, type StorageHooks } from '../src/storage/sqlite/sqlite-storage';
import { CommitSync } from '../src/storage/sqlite/commit-sync';
import { hashOf, record } from './helpers/repository-contract';
import { tempDir } from './helpers/server';

/*
 * synchronous=FULL with the fsync off the event loop (commit-sync.ts): callers
 * are answered only after an fdatasync of the -wal file that started after
 * their commit; commits share syncs; a failed sync is final.
 */

type Done = (err: NodeJS.ErrnoException | null) => void;

/** A WAL database with a group committer whose fsyncs the test completes by hand. */
function rig(t: ExecutionContext) {
  const dir = tempDir('sessiond-walsync-');
  const path = join(dir, 'db.sqlite');
  const db = new Database(path);
  db.pragma('journal_mode = wal');
  db.pragma('synchronous = normal');
  db.exec('CREATE TABLE t (v INTEGER)');
  const pending: Done[] = [];
  const sync = new CommitSync([{ what: 'the WAL', path: `${path}-wal`, open: 'held' }], true, (_fd, done) => pending.push(done));
  const writes = new GroupCommitter(db, { busyTimeoutMs: 1000, durable: sync });
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const count = () => (db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n;
  t.teardown(async () => {
    while (pending.length > 0) pending.shift()!(null);
    await writes.close();
    sync.close();
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { db, sync, writes, pending, count, write: (v: number) => writes.run(() => insert.run(v).changes) };
}

/** Lets setImmediate (the group commit's flush) and promise callbacks run. */
const turn = () => new Promise((r) => setImmediate(r));

function settled<T>(p: Promise<T>): { done: boolean; value?: T; error?: unknown } {
  const s: { done: boolean; value?: T; error?: unknown } = { done: false };
  p.then((value) => Object.assign(s, { done: true, value }), (error: unknown) => Object.assign(s, { done: true, error }));
  return s;
}

test('a write is committed at once but answered only after the fsync that follows its commit', async (t) => {
  const r = rig(t);
  const w = settled(r.write(1));
  await turn();
  t.is(r.count(), 1, 'committed: visible on the connection');
  t.is(r.pending.length, 1, 'one fsync asked for');
  await turn();
  t.false(w.done, 'not answered while the fsync runs');
  r.pending.shift()!(null);
  await turn();
  t.true(w.done);
  t.is(w.value, 1);
});

test('commits made while a sync runs wait for the next one, and share it', async (t) => {
  const r = rig(t);
  const first = settled(r.write(1));
  await turn();
  t.is(r.pending.length, 1);
  const second = settled(r.write(2));
  await turn();
  const third = settled(r.write(3));
  await turn();
  t.is(r.count(), 3, 'later batches commit without waiting for the sync');
  t.is(r.pending.length, 1, 'but no second fsync runs alongside the first');
  r.pending.shift()!(null);
  await turn();
  t.true(first.done);
  t.false(second.done, 'the running fsync may have started before the second commit was written');
  t.false(third.done);
  t.is(r.pending.length, 1, 'one more fsync covers both');
  r.pending.shift()!(null);
  await turn();
  t.true(second.done && third.done);
  t.is(r.pending.length, 0);
});

test('a failed fsync fails the writes it covered and every write after it, which are not applied', async (t) => {
  const r = rig(t);
  const covered = settled(r.write(1));
  await turn();
  const waiting = settled(r.write(2));
  await turn();
  const eio = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
  r.pending.shift()!(eio);
  await turn();
  for (const s of [covered, waiting]) {
    t.true(s.error instanceof StorageError);
    t.regex((s.error as Error).message, /WAL could not be synced to disk \(EIO\).*refused until the server is restarted/);
  }
  t.is(r.pending.length, 0, 'no fsync after a failure');
  const rowsBefore = r.count();
  await t.throwsAsync(r.write(3), { instanceOf: StorageError, message: /EIO/ });
  t.is(r.count(), rowsBefore, 'a write after the failure is refused before it is written');
  t.truthy(r.sync.failed);
});

test('close waits for the callers of a commit whose sync is still running', async (t) => {
  const r = rig(t);
  const w = settled(r.write(1));
  await turn();
  const closed = settled(r.writes.close());
  await turn();
  t.false(closed.done);
  r.pending.shift()!(null);
  await turn();
  await turn();
  t.true(w.done);
  t.true(closed.done);
});

/**
 * Whether this process holds a read-only descriptor on `file`: SQLite opens
 * the -wal file read-write, the storage's own descriptor for fdatasync is
 * read-only (/proc/self/fdinfo: the low two bits of flags are the access mode).
 */
function holds(file: string): boolean {
  return readdirSync('/proc/self/fd').some((fd) => {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== file) return false;
      const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
      return flags !== undefined && (parseInt(flags, 8) & 3) === 0;
    } catch {
      return false; // closed since the listing
    }
  });
}

function openStorage(t: ExecutionContext, options: Partial<StorageOptions>, hooks: StorageHooks = {}) {
  const dir = tempDir('sessiond-walsync-');
  const path = join(dir, 'sessions.db');
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path, ...options }, hooks);
  t.teardown(async () => {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { storage, path };
}

test('synchronous=full in WAL mode: the storage fsyncs the -wal file itself, reports FULL, and keeps every acknowledged write', async (t) => {
  const { storage, path } = openStorage(t, { synchronous: 'full' });
  t.is(storage.status().synchronous, 'FULL', 'the guarantee is reported, not the connection setting');
  t.true(holds(`${path}-wal`), 'a descriptor on the -wal file, for fdatasync');
  const written = await Promise.all(Array.from({ length: 50 }, (_, i) => storage.writes.run(() => storage.sessions.insert(record(), hashOf(`full-${i}`)))));
  t.is(written.length, 50);
  t.true(storage.probe().ok);
  await storage.close();
  t.false(holds(`${path}-wal`), 'closed with the storage');
  const other = new Database(path, { readonly: true });
  t.is((other.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n, 50);
  other.close();
});

test('--off-loop-fsync=false, or synchronous=normal with --durable-revocations=false: SQLite syncs (or not) inside commits and the storage keeps no -wal descriptor of its own', async (t) => {
  const full = openStorage(t, { synchronous: 'full', offLoopFsync: false });
  t.is(full.storage.status().synchronous, 'FULL');
  t.false(holds(`${full.path}-wal`));
  await full.storage.writes.run(() => full.storage.sessions.insert(record(), hashOf('inline')));
  const normal = openStorage(t, { synchronous: 'normal', durableRevocations: false });
  t.is(normal.storage.status().synchronous, 'NORMAL');
  t.false(holds(`${normal.path}-wal`));
  // With durable revocations (the default) NORMAL holds one, for the revocations' fdatasync.
  const durable = openStorage(t, { synchronous: 'normal' });
  t.true(holds(`${durable.path}-wal`));
});

test('a disk that fails the fsync: the write fails with INTERNAL, later writes are refused, reads go on and the health probe says why', async (t) => {
  let syncs = 0;
  const { storage } = openStorage(t, { synchronous: 'full' }, {
    fsync: (_fd, done) => {
      syncs++;
      setImmediate(() => done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })));
    },
  });
  t.true(storage.probe().ok);
  const err = await t.throwsAsync(storage.writes.run(() => storage.sessions.insert(record(), hashOf('lost'))), { instanceOf: StorageError });
  t.is((err as StorageError & { kind: string }).kind, 'internal');
  t.regex(err!.message, /WAL could not be synced to disk \(EIO\)/);
  await t.throwsAsync(storage.writes.run(() => storage.sessions.insert(record(), hashOf('refused'))), { message: /EIO/ });
  t.is(syncs, 1, 'nothing is synced, or written, after the failure');
  t.is(storage.sessions.findByTokenHash(hashOf('refused')), undefined, 'the refused write was never applied');
  t.truthy(storage.sessions.findByTokenHash(hashOf('lost')), 'the failed one had committed: reads still see it, durable or not');
  const health = storage.probe();
  t.false(health.ok);
  t.regex(health.ok ? '' : health.reason, /WAL could not be synced.*restarted/);
});
