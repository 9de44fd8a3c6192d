import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { fdatasync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CommitSync, commitSyncPlan, type SyncFn } from '../src/storage/sqlite/commit-sync';
import { GroupCommitter } from '../src/storage/sqlite/group-commit';
import { checkpointSynchronous, connectionPragmas, DEFAULT_STORAGE_OPTIONS, type StorageOptions } from '../src/storage/sqlite/pragmas';
import { startTestServer, tempDir, type TestServer } from './helpers/server';
import { waitFor } from './helpers/wait';

/*
 * Revocations and token rotations are durable before they are answered, at
 * every synchronous setting: DeleteSession, RevokeSessions and
 * RotateSessionToken are answered only after the storage's own sync of what
 * SQLite left unsynced at that setting (commit-sync.ts), and CreateSession
 * never waits for one. Through a real server and client, with the syncs
 * counted (and held, and failed) by a disk the test stands in, which syncs
 * for real once it lets a sync go.
 */

type Done = (err: NodeJS.ErrnoException | null) => void;

/** Stands in for fdatasync/fsync: records what each call syncs and holds it until released. */
class Disk {
  /** The file or folder of every sync asked for, in order. */
  readonly synced: string[] = [];
  private held: { fd: number; done: Done }[] = [];
  /** When set, every sync fails with it. */
  failWith: NodeJS.ErrnoException | undefined;

  readonly fsync: SyncFn = (fd, done) => {
    this.synced.push(readlinkSync(`/proc/self/fd/${fd}`));
    if (this.failWith) {
      const err = this.failWith;
      setImmediate(() => done(err));
    } else this.held.push({ fd, done });
  };

  get waiting(): number {
    return this.held.length;
  }

  /** Lets every held sync run, for real. */
  release(): void {
    for (const { fd, done } of this.held.splice(0)) fdatasync(fd, done);
  }
}

function settled<T>(p: Promise<T>): { done: boolean; error?: unknown } {
  const s: { done: boolean; error?: unknown } = { done: false };
  p.then(() => (s.done = true), (error: unknown) => Object.assign(s, { done: true, error }));
  return s;
}

async function server(t: ExecutionContext, env: Record<string, string>): Promise<{ s: TestServer; disk: Disk }> {
  const disk = new Disk();
  const s = await startTestServer({ env, storageHooks: { fsync: disk.fsync } });
  t.teardown(async () => {
    disk.release();
    await s.close();
  });
  return { s, disk };
}

/**
 * Runs `call` and checks that it is answered only after the syncs it caused,
 * which are of exactly `expected` (in order), and released by the test.
 */
async function answeredAfterSync(t: ExecutionContext, s: TestServer, disk: Disk, what: string, expected: string[], call: () => Promise<unknown>): Promise<void> {
  const before = disk.synced.length;
  const answer = settled(call());
  await waitFor(() => disk.waiting > 0, `the sync of ${what}`);
  // A round trip on the same connection that finishes while the sync is held:
  // the server has not answered the write by then.
  await s.client.health();
  t.false(answer.done, `${what} was answered before its sync returned`);
  // The rollback modes may sync two things, one after the other.
  while (!answer.done) {
    disk.release();
    await waitFor(() => disk.waiting > 0 || answer.done, `${what} to be answered or to sync again`);
  }
  t.is(answer.error, undefined, `${what} failed: ${String(answer.error)}`);
  t.deepEqual(disk.synced.slice(before), expected, `what ${what} synced`);
}

const SETTINGS: { journal: string; sync: string; targets: (dbPath: string) => string[] }[] = [
  { journal: 'wal', sync: 'normal', targets: (db) => [`${db}-wal`] },
  { journal: 'wal', sync: 'off', targets: (db) => [`${db}-wal`] },
  { journal: 'delete', sync: 'normal', targets: (db) => [dirname(db)] },
  { journal: 'delete', sync: 'off', targets: (db) => [db, dirname(db)] },
  { journal: 'truncate', sync: 'normal', targets: (db) => [`${db}-journal`] },
  { journal: 'persist', sync: 'off', targets: (db) => [db, `${db}-journal`] },
];

for (const { journal, sync, targets } of SETTINGS) {
  test(`journal_mode=${journal}, synchronous=${sync}: DeleteSession, RevokeSessions and RotateSessionToken are answered only after a sync, CreateSession without one`, async (t) => {
    const { s, disk } = await server(t, { SESSIOND_JOURNAL_MODE: journal, SESSIOND_SYNCHRONOUS: sync });
    const expected = targets(realpathSync(s.dbPath));
    const [a, b, c, d] = await Promise.all(['a', 'b', 'c', 'c'].map((subject) => s.client.createSession({ serverId: 'web-1', subject })));
    t.deepEqual(disk.synced, [], 'creates are answered at commit, with no sync of their own');

    await answeredAfterSync(t, s, disk, 'DeleteSession', expected, () => s.client.deleteSession(a!.session!.id));
    await answeredAfterSync(t, s, disk, 'RotateSessionToken', expected, () => s.client.rotateSessionToken(b!.session!.id));
    await answeredAfterSync(t, s, disk, 'RevokeSessions', expected, () => s.client.revokeSessions({ subject: 'c' }));

    const synced = disk.synced.length;
    await s.client.createSession({ serverId: 'web-1', subject: 'e' });
    t.is(disk.synced.length, synced, 'a create after them syncs nothing either');
    t.is((await s.client.validateSession(d!.token)).valid, false, 'the revocation took');
    t.is((await s.client.validateSession(c!.token)).valid, false);
    t.is((await s.client.getSession(b!.session!.id)).session!.id, b!.session!.id, 'the rotated session is still live');
  });
}

test('a revocation whose sync fails is not acknowledged: the client gets an error, every later write is refused without a sync, the health probe says why', async (t) => {
  const { s, disk } = await server(t, { SESSIOND_SYNCHRONOUS: 'normal' });
  const a = await s.client.createSession({ serverId: 'web-1', subject: 'a' });
  const b = await s.client.createSession({ serverId: 'web-1', subject: 'b' });
  disk.failWith = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
  const refused = await t.throwsAsync<ServiceError>(s.client.deleteSession(a.session!.id));
  t.is(refused?.code, status.INTERNAL, 'an error, never OK');
  t.is(disk.synced.length, 1);
  for (const write of [
    () => s.client.createSession({ serverId: 'web-1', subject: 'c' }),
    () => s.client.rotateSessionToken(b.session!.id),
    () => s.client.revokeSessions({ subject: 'b' }),
  ]) {
    const err = await t.throwsAsync<ServiceError>(write());
    t.is(err?.code, status.INTERNAL);
  }
  t.is(disk.synced.length, 1, 'nothing was synced, or written, after the failure');
  t.is((await s.client.validateSession(b.token)).valid, true, 'the refused revocation of b was never applied');
  const health = await s.app.storage.probe();
  t.false(health.ok);
  t.regex(health.ok ? '' : health.reason, /the WAL could not be synced to disk \(EIO\).*restarted/);
});

test('where SQLite already syncs every commit, or with --durable-revocations=false, a revocation adds no sync of its own', async (t) => {
  const settings: Record<string, string>[] = [
    { SESSIOND_SYNCHRONOUS: 'full', SESSIOND_OFF_LOOP_FSYNC: 'false' },
    { SESSIOND_SYNCHRONOUS: 'extra' },
    { SESSIOND_JOURNAL_MODE: 'delete', SESSIOND_SYNCHRONOUS: 'extra' },
    { SESSIOND_JOURNAL_MODE: 'truncate', SESSIOND_SYNCHRONOUS: 'full' },
    { SESSIOND_JOURNAL_MODE: 'persist', SESSIOND_SYNCHRONOUS: 'normal' },
    { SESSIOND_SYNCHRONOUS: 'normal', SESSIOND_DURABLE_REVOCATIONS: 'false' },
    { SESSIOND_SYNCHRONOUS: 'off', SESSIOND_DURABLE_REVOCATIONS: 'false' },
  ];
  for (const env of settings) {
    const { s, disk } = await server(t, env);
    const a = await s.client.createSession({ serverId: 'web-1', subject: 'a' });
    const b = await s.client.createSession({ serverId: 'web-1', subject: 'b' });
    await s.client.deleteSession(a.session!.id);
    await s.client.rotateSessionToken(b.session!.id);
    await s.client.revokeSessions({ subject: 'b' });
    t.deepEqual(disk.synced, [], JSON.stringify(env));
  }
});

test('synchronous=full in WAL mode with the off-loop fsync: every write waits for the one sync of the -wal file, creates included', async (t) => {
  const { s, disk } = await server(t, { SESSIOND_SYNCHRONOUS: 'full' });
  const wal = `${realpathSync(s.dbPath)}-wal`;
  await answeredAfterSync(t, s, disk, 'CreateSession', [wal], () => s.client.createSession({ serverId: 'web-1', subject: 'a' }));
});

test('in one batch, a durable unit waits for the sync while the others, and a durable unit that failed, are answered at commit', async (t) => {
  const dir = tempDir('sessiond-durable-');
  const path = join(dir, 'db.sqlite');
  const db = new Database(path);
  db.pragma('journal_mode = wal');
  db.pragma('synchronous = normal');
  db.exec('CREATE TABLE t (v INTEGER)');
  const disk = new Disk();
  const sync = new CommitSync([{ what: 'the WAL', path: `${path}-wal`, open: 'held' }], false, disk.fsync);
  const writes = new GroupCommitter(db, { busyTimeoutMs: 1000, durable: sync });
  t.teardown(async () => {
    disk.release();
    await writes.close();
    sync.close();
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const plain = settled(writes.run(() => insert.run(1)));
  const durable = settled(writes.run(() => insert.run(2), { durable: true }));
  const failed = settled(writes.run(() => {
    throw new Error('a unit that throws');
  }, { durable: true }));
  await waitFor(() => disk.waiting === 1, 'the sync of the batch');
  t.true(plain.done && plain.error === undefined, 'the plain write was answered at commit');
  t.true(failed.done && failed.error instanceof Error, 'the failed durable unit was answered at commit');
  t.false(durable.done);
  disk.release();
  await waitFor(() => durable.done, 'the durable write to be answered');
  t.is(durable.error, undefined);
  const alone = settled(writes.run(() => insert.run(3)));
  await waitFor(() => alone.done, 'a batch without a durable unit');
  t.is(disk.synced.length, 1, 'which asked for no sync');
});

test('what is synced after a durable commit, by journal mode and synchronous setting, and the setting checkpoints run at', (t) => {
  const o = (journalMode: StorageOptions['journalMode'], synchronous: StorageOptions['synchronous'], more: Partial<StorageOptions> = {}): StorageOptions =>
    ({ ...DEFAULT_STORAGE_OPTIONS, path: '/d/s.db', journalMode, synchronous, ...more });
  const plan = (opts: StorageOptions) => {
    const p = commitSyncPlan(opts);
    return p && { every: p.everyCommit, paths: p.targets.map((x) => `${x.path}${x.open === 'each' ? ' (each)' : ''}`) };
  };
  const table: [StorageOptions, ReturnType<typeof plan>][] = [
    [o('wal', 'off'), { every: false, paths: ['/d/s.db-wal'] }],
    [o('wal', 'normal'), { every: false, paths: ['/d/s.db-wal'] }],
    [o('wal', 'full'), { every: true, paths: ['/d/s.db-wal'] }],
    [o('wal', 'full', { offLoopFsync: false }), undefined],
    [o('wal', 'extra'), undefined],
    [o('delete', 'off'), { every: false, paths: ['/d/s.db', '/d'] }],
    [o('delete', 'normal'), { every: false, paths: ['/d'] }],
    [o('delete', 'full'), { every: false, paths: ['/d'] }],
    [o('delete', 'extra'), undefined],
    [o('truncate', 'off'), { every: false, paths: ['/d/s.db', '/d/s.db-journal (each)'] }],
    [o('truncate', 'normal'), { every: false, paths: ['/d/s.db-journal (each)'] }],
    [o('truncate', 'full'), undefined],
    [o('persist', 'off'), { every: false, paths: ['/d/s.db', '/d/s.db-journal (each)'] }],
    [o('persist', 'normal'), undefined],
    [o('wal', 'normal', { durableRevocations: false }), undefined],
    [o('wal', 'full', { durableRevocations: false }), { every: true, paths: ['/d/s.db-wal'] }],
    [o('delete', 'off', { durableRevocations: false }), undefined],
    [o('wal', 'normal', { path: ':memory:' }), undefined],
  ];
  for (const [opts, want] of table) t.deepEqual(plan(opts), want, `${opts.journalMode}/${opts.synchronous} ${JSON.stringify({ d: opts.durableRevocations, f: opts.offLoopFsync })}`);
  // At OFF in WAL mode a checkpoint must sync the database before the WAL can rewind over a durable write's frames.
  t.is(checkpointSynchronous(o('wal', 'off')), 'normal');
  t.is(connectionPragmas(o('wal', 'off')).synchronous, 'off', 'with the worker, which checkpoints, this connection stays at OFF');
  t.is(connectionPragmas(o('wal', 'off', { checkpointWorker: false })).synchronous, 'normal', 'without it, this connection checkpoints');
  t.is(checkpointSynchronous(o('wal', 'off', { durableRevocations: false })), 'off');
  t.is(checkpointSynchronous(o('delete', 'off')), 'off');
  t.is(checkpointSynchronous(o('wal', 'normal')), 'normal');
});
