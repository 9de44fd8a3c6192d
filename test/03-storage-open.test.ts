import test from 'ava';
import Database from 'better-sqlite3';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SCHEMA_VERSION } from '../src/storage/sqlite/migrations';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { hashOf, record } from './helpers/repository-contract';
import { tempDir } from './helpers/server';

/*
 * Opening a database file: the errors SQLite gives (a newer schema, a
 * folder, a file that is not SQLite, pragmas not honoured), each provoked for
 * real, and the migration of a fresh file.
 */

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
