import test from 'ava';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StorageBusyError } from '../src/domain/errors';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { eventLogContract } from './helpers/event-log-contract';
import { hashOf, record, repositoryContract } from './helpers/repository-contract';

/** A SqliteStorage on a fresh file in its own temp folder; closing removes the folder. */
function openSqlite(options: Partial<typeof DEFAULT_STORAGE_OPTIONS> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-contract-'));
  const path = join(dir, 'sessions.db');
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, ...options, path });
  return {
    storage,
    path,
    repo: storage.repository,
    async close() {
      // close() may be synchronous or return a promise (a final checkpoint): await covers both.
      await storage.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

repositoryContract('sqlite', () => openSqlite());
eventLogContract('sqlite', (sessionEvents = true) => openSqlite({ sessionEvents }));

// SQLite-specific parts of the contract's error list, which a generic suite cannot provoke.

test('sqlite: a write blocked by another connection past the busy timeout throws StorageBusyError and writes nothing', async (t) => {
  const opened = openSqlite({ busyTimeoutMs: 50 });
  t.teardown(() => opened.close());
  const other = new Database(opened.path);
  t.teardown(() => other.close());
  const s = record();
  other.exec('BEGIN IMMEDIATE');
  try {
    await t.throwsAsync(opened.repo.insert(s, hashOf(s.id)), { instanceOf: StorageBusyError });
    await t.throwsAsync(opened.repo.revokeMatching({ serverId: 'srv-a', subject: '' }, Date.now(), 1000), { instanceOf: StorageBusyError });
  } finally {
    other.exec('ROLLBACK');
  }
  t.is(opened.repo.findById(s.id), undefined);
  await opened.repo.insert(s, hashOf(s.id));
  t.deepEqual(opened.repo.findById(s.id), s, 'the same write goes through once the lock is released');
});
