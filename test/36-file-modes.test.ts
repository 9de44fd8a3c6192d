import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { chmodSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createDatabaseFile } from '../src/storage/sqlite/database-file';
import { startTestServer, tempDir } from './helpers/server';

/*
 * Files at rest: the folder sessiond makes is 0700 (each missing parent too),
 * every file it makes is 0600 (the database, -wal, -shm, -journal, and the
 * temporary file of the creation), whatever the umask; an existing database
 * that others may read is tightened at open. The umask is the process's, so
 * these tests run one at a time and put it back after each.
 */

const modeOf = (path: string) => statSync(path).mode & 0o777;
const octal = (mode: number) => mode.toString(8).padStart(4, '0');

function withUmask(t: ExecutionContext, mask: number): void {
  const before = process.umask(mask);
  t.teardown(() => void process.umask(before));
}

/** Every entry of the folder with its mode, e.g. { 'sessions.db': '0600' }. */
function modes(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).sort().map((name) => [name, octal(modeOf(join(dir, name)))]));
}

const ALL_0600 = (names: string[]) => Object.fromEntries(names.map((n) => [n, '0600']));

for (const umask of [0o000, 0o277]) {
  test.serial(`umask ${octal(umask)}: the folders made are 0700 and every file 0600, after creates, a checkpoint and a restart`, async (t) => {
    const root = tempDir('sessiond-modes-');
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    withUmask(t, umask);
    const data = join(root, 'var', 'sessiond');
    const env = { SESSIOND_DB_PATH: join(data, 'sessions.db') };
    const s = await startTestServer({ dir: root, env });
    for (let i = 0; i < 20; i++) await s.client.createSession({ serverId: 'web-1', subject: `u${i}` });
    t.is(octal(modeOf(join(root, 'var'))), '0700', 'a missing parent is made 0700 too');
    t.is(octal(modeOf(data)), '0700');
    t.deepEqual(modes(data), ALL_0600(['sessions.db', 'sessions.db-shm', 'sessions.db-wal']), 'no temporary file left, and SQLite gave -wal and -shm the database file\'s mode');
    await s.app.storage.wal!.checkpoint('TRUNCATE', 'admin');
    await s.client.createSession({ serverId: 'web-1', subject: 'after-checkpoint' });
    t.deepEqual(modes(data), ALL_0600(['sessions.db', 'sessions.db-shm', 'sessions.db-wal']));
    await s.close();
    const again = await startTestServer({ dir: root, env });
    await again.client.createSession({ serverId: 'web-1', subject: 'after-restart' });
    t.deepEqual(modes(data), ALL_0600(['sessions.db', 'sessions.db-shm', 'sessions.db-wal']), 'the -wal and -shm made anew at the restart');
    await again.close();
    t.is(octal(modeOf(data)), '0700');
  });
}

test.serial('umask 0000, journal_mode=truncate: the -journal file SQLite keeps beside the database is 0600 too', async (t) => {
  const root = tempDir('sessiond-modes-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  withUmask(t, 0);
  const data = join(root, 'db');
  const s = await startTestServer({ dir: root, env: { SESSIOND_DB_PATH: join(data, 'sessions.db'), SESSIOND_JOURNAL_MODE: 'truncate' } });
  t.teardown(() => s.close());
  await s.client.createSession({ serverId: 'web-1', subject: 'a' });
  t.deepEqual(modes(data), ALL_0600(['sessions.db', 'sessions.db-journal']));
  t.is(octal(modeOf(data)), '0700');
});

test.serial('umask 0000: the temporary file of the creation, and its -wal and -shm, are 0600 while init runs', (t) => {
  const dir = tempDir('sessiond-modes-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  withUmask(t, 0);
  const seen: Record<string, string> = {};
  createDatabaseFile(join(dir, 'sessions.db'), (fresh) => {
    seen['file'] = octal(modeOf(fresh.name));
    fresh.pragma('journal_mode = wal');
    fresh.exec('CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)');
    seen['wal'] = octal(modeOf(`${fresh.name}-wal`));
    seen['shm'] = octal(modeOf(`${fresh.name}-shm`));
  });
  t.deepEqual(seen, { file: '0600', wal: '0600', shm: '0600' });
  t.deepEqual(modes(dir), { 'sessions.db': '0600' });
});

test.serial('an existing database, -wal and -shm that others may read are set to 0600 at open; an existing folder keeps its mode', async (t) => {
  const root = tempDir('sessiond-modes-');
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  withUmask(t, 0);
  const data = join(root, 'shared');
  mkdirSync(data, { mode: 0o755 });
  const dbPath = join(data, 'sessions.db');
  const env = { SESSIOND_DB_PATH: dbPath };
  const first = await startTestServer({ dir: root, env });
  await first.client.createSession({ serverId: 'web-1', subject: 'a' });
  await first.close();
  // Another connection keeps the -wal and -shm files there across the restart.
  const other = new Database(dbPath);
  t.teardown(() => other.close());
  other.prepare('SELECT count(*) FROM sessions').get();
  for (const f of ['sessions.db', 'sessions.db-wal', 'sessions.db-shm']) chmodSync(join(data, f), 0o644);
  chmodSync(join(data, 'sessions.db-shm'), 0o666);
  t.deepEqual(modes(data), { 'sessions.db': '0644', 'sessions.db-shm': '0666', 'sessions.db-wal': '0644' });
  const s = await startTestServer({ dir: root, env });
  t.teardown(() => s.close());
  t.deepEqual(modes(data), ALL_0600(['sessions.db', 'sessions.db-shm', 'sessions.db-wal']));
  t.is(octal(modeOf(data)), '0755', 'a folder sessiond did not make is the operator\'s choice');
  await s.client.createSession({ serverId: 'web-1', subject: 'b' });
  t.deepEqual(modes(data), ALL_0600(['sessions.db', 'sessions.db-shm', 'sessions.db-wal']));
});
