import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, copyFileSync, existsSync, fsyncSync, linkSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { createPrivateFile } from './file-modes';

/*
 * Start-up checks on the database file, and its creation. The rule they
 * enforce: sessiond opens a sessiond database or creates one where no file is,
 * and never writes anything over a file it does not recognise. SQLite alone
 * does not promise that: it treats an empty file as a new database, opens a
 * file whose header is damaged in ways it only notices later, and happily adds
 * our tables to another application's database.
 * The file format: https://sqlite.org/fileformat2.html#the_database_header
 */

const HEADER_BYTES = 100;
const MAGIC = Buffer.from('SQLite format 3\0', 'latin1');
/** The WAL file header; a -wal file no longer than this holds no frames. */
const WAL_HEADER_BYTES = 32;
/**
 * Up to this size the start-up runs PRAGMA quick_check over every page, in a
 * time that grows with the file; above it only the header is checked, so that
 * a large database does not make every restart slow.
 */
export const QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024;

export interface FileCheck {
  /** false: no file at the path yet (createDatabaseFile makes one). */
  readonly exists: boolean;
  readonly bytes: number;
}

/**
 * Reads the database header without SQLite and refuses what SQLite would
 * misread or overwrite: an empty file, a file that is not SQLite, a damaged
 * header, a file shorter than its header says (a truncated copy), or a WAL
 * left behind by a database that was removed.
 * Call it before this process opens a connection to the file: it reads the
 * header through a descriptor of its own, and closing that drops the
 * process's POSIX locks on the file (see wal-index.ts).
 * @throws Error saying what is wrong (the caller adds the path).
 */
export function inspectDatabaseFile(path: string): FileCheck {
  // access(2) honours the immutable flag and read-only mounts even for root.
  try {
    accessSync(dirname(path), constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new Error(`its folder ${dirname(path)} is not writable (${(err as NodeJS.ErrnoException).code}): SQLite creates the -wal and -shm files beside the database`, { cause: err });
  }
  const walBytes = sizeOf(`${path}-wal`);
  let bytes: number;
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw new Error('it is a directory, not a database file');
    if (!st.isFile()) throw new Error('it is not a regular file');
    bytes = st.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (walBytes > 0) {
      throw new Error(`the database file is missing but ${basename(path)}-wal (${walBytes} bytes) is there: the database was removed without its WAL; restore it, or remove the -wal and -shm files as well to start empty`);
    }
    return { exists: false, bytes: 0 };
  }
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
  } catch (err) {
    throw new Error(`the file is not readable and writable (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
  if (bytes === 0) {
    throw new Error('the file is empty (0 bytes): a truncated database or a placeholder; refusing to create a new database over it (remove it to start empty)');
  }
  const header = Buffer.alloc(HEADER_BYTES);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, header, 0, HEADER_BYTES, 0);
  } finally {
    closeSync(fd);
  }
  if (!header.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new Error('it is not a SQLite database (the file does not start with "SQLite format 3"); left as it is');
  }
  if (bytes < HEADER_BYTES) throw new Error(`it is truncated: ${bytes} bytes, shorter than a SQLite header`);
  const damaged = (what: string) => new Error(`its SQLite header is damaged (${what}); left as it is`);
  const pageSize = header.readUInt16BE(16) === 1 ? 65536 : header.readUInt16BE(16);
  if (pageSize < 512 || (pageSize & (pageSize - 1)) !== 0) throw damaged(`page size ${pageSize}`);
  const [writeVersion, readVersion, reserved] = [header[18]!, header[19]!, header[20]!];
  if (![1, 2].includes(writeVersion) || ![1, 2].includes(readVersion)) throw damaged(`file format versions ${writeVersion}/${readVersion}`);
  if (pageSize - reserved < 480) throw damaged(`${reserved} reserved bytes per ${pageSize}-byte page`);
  if (header[21] !== 64 || header[22] !== 32 || header[23] !== 32) throw damaged('payload fractions');
  const schemaFormat = header.readUInt32BE(44);
  const encoding = header.readUInt32BE(56);
  if (schemaFormat > 4) throw damaged(`schema format ${schemaFormat}`);
  if (encoding > 3) throw damaged(`text encoding ${encoding}`);
  // The in-header page count is trusted by SQLite only while the change
  // counter (24) equals version-valid-for (92). With frames in the WAL, pages
  // past the end of the file may legitimately live there until a checkpoint.
  const pages = header.readUInt32BE(28);
  if (pages > 0 && header.readUInt32BE(24) === header.readUInt32BE(92) && walBytes <= WAL_HEADER_BYTES && bytes < pages * pageSize) {
    throw new Error(`it is truncated: its header says ${pages} pages of ${pageSize} bytes (${pages * pageSize} bytes) but the file has ${bytes} bytes`);
  }
  return { exists: true, bytes };
}

/**
 * The checks that need SQLite, on a read-only connection: it never
 * checkpoints or deletes the WAL on close, so a refused file keeps every byte,
 * its -wal included. Opening a WAL-mode file creates an empty -wal and a -shm
 * beside it; on refusal the ones this call made are removed again.
 * A rollback-journal file with a hot journal needs a writer to roll it back
 * first: it is left to the main connection (checkOwnSchema runs there too).
 * @throws Error from checkVersion, checkOwnSchema or quickCheck.
 */
export function checkDatabaseContents(path: string, bytes: number, checkVersion: (db: Database.Database) => number): void {
  const wal = `${path}-wal`;
  const shm = `${path}-shm`;
  const hadWal = existsSync(wal);
  const hadShm = existsSync(shm);
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    checkOwnSchema(db, checkVersion(db));
    quickCheck(db, bytes);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'SQLITE_READONLY_ROLLBACK' || code === 'SQLITE_READONLY_RECOVERY') return;
    db?.close();
    db = undefined;
    // No -shm means no live connection had the file open: the one there now is ours.
    if (!hadWal && sizeOf(wal) === 0) rmSync(wal, { force: true });
    if (!hadShm) rmSync(shm, { force: true });
    throw err;
  } finally {
    db?.close();
  }
}

/**
 * Refuses a SQLite database that is not a sessiond one, before anything
 * (even journal_mode) is written to it: schema version 0 with tables in it, or
 * a versioned schema without the sessions table.
 * @throws Error saying what the file holds.
 */
export function checkOwnSchema(db: Database.Database, userVersion: number): void {
  const objects = db.prepare("SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name").all() as { type: string; name: string }[];
  const tables = objects.filter((o) => o.type === 'table').map((o) => o.name);
  const shown = tables.slice(0, 5).join(', ') + (tables.length > 5 ? ', ...' : '');
  if (userVersion === 0 && objects.length > 0) {
    throw new Error(`it is a SQLite database but not a sessiond one (schema version 0, tables: ${shown || 'none'}); refusing to touch it`);
  }
  if (userVersion > 0 && !tables.includes('sessions')) {
    throw new Error(`it is a SQLite database at schema version ${userVersion} without a sessions table (tables: ${shown || 'none'}): not a sessiond database; refusing to touch it`);
  }
}

/**
 * PRAGMA quick_check over every page of a database up to QUICK_CHECK_MAX_BYTES:
 * finds damage that SQLite would otherwise only report when a call reads the
 * damaged page (a garbled page, a broken freelist).
 * @returns false when the file was too large to check.
 * @throws Error with SQLite's first findings.
 */
export function quickCheck(db: Database.Database, bytes: number): boolean {
  if (bytes > QUICK_CHECK_MAX_BYTES) return false;
  const rows = db.pragma('quick_check(5)') as { quick_check: string }[];
  const findings = rows.map((r) => r.quick_check);
  if (findings.length !== 1 || findings[0] !== 'ok') {
    throw new Error(`it is damaged: PRAGMA quick_check reports ${findings.map((f) => JSON.stringify(f)).join('; ')}; left as it is`);
  }
  return true;
}

/**
 * Creates a database where no file is, atomically: `init` runs on a temporary
 * file (0600) in the same folder, which is then hard-linked into place. link(2) never
 * replaces an existing file, so a process that loses a creation race (another
 * sessiond starting on the same path) opens the winner's file instead, and a
 * crash during creation leaves no half-made file at the path (an empty file
 * there would be refused at the next start).
 * @throws Error when the folder is not writable or the file cannot be made.
 */
export function createDatabaseFile(path: string, init: (db: Database.Database) => void): void {
  const tmp = `${path}.creating-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    let db: Database.Database;
    try {
      // Made 0600 first: SQLite would create it 0644 less the umask, and gives
      // its -journal and -wal files the database file's mode.
      createPrivateFile(tmp);
      db = new Database(tmp);
    } catch (err) {
      throw new Error(`cannot create a database file in ${dirname(path)}: ${(err as Error).message}`, { cause: err });
    }
    try {
      init(db);
    } finally {
      // The last connection to close checkpoints the WAL into the file and removes it.
      db.close();
    }
    try {
      linkSync(tmp, path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return; // Another process created it first: use that one.
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
      // No hard links on this filesystem: an exclusive copy still never
      // replaces a file, and copyfile gives the copy the temporary file's mode.
      try {
        copyFileSync(tmp, path, constants.COPYFILE_EXCL);
      } catch (copyErr) {
        if ((copyErr as NodeJS.ErrnoException).code !== 'EEXIST') throw copyErr;
        return;
      }
    }
    syncFolder(dirname(path));
  } finally {
    for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`, `${tmp}-journal`]) rmSync(f, { force: true });
  }
}

/** Makes the new directory entry durable (best effort: not every platform can fsync a folder). */
function syncFolder(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Durability of the name only; the file's contents were synced by SQLite.
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}
