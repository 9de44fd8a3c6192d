import Database from 'better-sqlite3';
import { dirname } from 'node:path';
import { checkDatabaseContents, checkOwnSchema, createDatabaseFile, inspectDatabaseFile } from './database-file';
import { makePrivateFolder, tightenModes } from './file-modes';
import { checkSchemaVersion, migrate } from './migrations';
import { applyPragmas, connectionPragmas, type StorageOptions } from './pragmas';

/**
 * The main connection, on a database file checked, created or migrated first:
 * a private folder, owner-only modes, our schema and nothing else.
 * @throws Error with SQLite's words; the caller names the file.
 */
export function openConnection(options: StorageOptions): Database.Database {
  const onDisk = options.path !== ':memory:';
  if (onDisk) {
    makePrivateFolder(dirname(options.path));
    const file = inspectDatabaseFile(options.path);
    if (file.exists) {
      tightenModes(options.path);
      checkDatabaseContents(options.path, file.bytes, checkSchemaVersion);
    } else {
      createDatabaseFile(options.path, (fresh) => {
        fresh.pragma(`journal_mode = ${options.journalMode}`);
        migrate(fresh);
      });
    }
  }
  // fileMustExist: SQLite never creates the file here, whatever happened since the check.
  // The full busy timeout while opening: another process may be migrating or checkpointing.
  const db = new Database(options.path, { fileMustExist: onDisk, timeout: Math.max(0, options.busyTimeoutMs | 0) });
  const pragmas = connectionPragmas(options);
  try {
    // Again on this connection: the file may have changed hands since (and a hot journal is rolled back now).
    checkOwnSchema(db, checkSchemaVersion(db));
    applyPragmas(db, { ...pragmas, busyTimeoutMs: options.busyTimeoutMs, journalSizeLimit: options.journalSizeLimit });
    migrate(db);
    // Then one slice: longer waits for the write lock happen on a timer (GroupCommitter).
    db.pragma(`busy_timeout = ${pragmas.busyTimeoutMs | 0}`);
    // Checked above; with the worker, it applies it and this connection has none (see connectionPragmas).
    db.pragma(`journal_size_limit = ${Math.trunc(pragmas.journalSizeLimit)}`);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}
