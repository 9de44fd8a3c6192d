import { chmodSync, closeSync, fchmodSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/*
 * The database holds every session's token hash and attributes: its files
 * are the owner's alone, 0600 in a 0700 folder, whatever the process umask.
 * The umask can only take bits away from the mode given to mkdir(2) and
 * open(2), so what is created here is created no wider than that and then set
 * to exactly that. SQLite creates the -wal, -shm and -journal files with the
 * database file's own mode, whatever the umask (findCreateFileMode and
 * robust_open in sqlite3.c), so a 0600 database gets 0600 companions.
 */

export const FOLDER_MODE = 0o700;
export const FILE_MODE = 0o600;
/** The group and other permission bits. */
const SHARED_BITS = 0o077;

/**
 * mkdir -p, every folder it makes 0700; a folder that already exists is left
 * as it is (the operator's choice).
 * @throws Error saying the folder is the problem (ENOTDIR: a parent is a file; EACCES, EROFS).
 */
export function makePrivateFolder(dir: string): void {
  try {
    const first = mkdirSync(dir, { recursive: true, mode: FOLDER_MODE });
    if (first === undefined) return;
    const top = resolve(first);
    for (let d = resolve(dir); ; d = dirname(d)) {
      chmodSync(d, FOLDER_MODE);
      if (d === top || dirname(d) === d) break;
    }
  } catch (err) {
    throw new Error(`cannot create its folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Creates an empty 0600 file where none is (O_EXCL), for SQLite to open as a
 * new database: SQLite itself would create it 0644 less the umask.
 * @throws the error of open(2): EEXIST, EACCES, ENOSPC.
 */
export function createPrivateFile(path: string): void {
  const fd = openSync(path, 'wx', FILE_MODE);
  try {
    fchmodSync(fd, FILE_MODE);
  } finally {
    closeSync(fd);
  }
}

/**
 * An existing database file, and its -wal, -shm and -journal files, with
 * group or other permission bits set to 0600; before any connection opens it,
 * so that the companions SQLite creates from now on take the tightened mode.
 * @throws Error naming the file when its mode cannot be changed (EPERM: another user owns it).
 */
export function tightenModes(dbPath: string): void {
  for (const file of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-journal`]) {
    let mode: number;
    try {
      mode = statSync(file).mode;
    } catch {
      continue; // not there: SQLite creates it from the database file's mode
    }
    if ((mode & SHARED_BITS) === 0) continue;
    try {
      chmodSync(file, FILE_MODE);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Error(
        `${file} is readable or writable by others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}) and cannot be set to 0600 (${code}): ` +
        'chmod 600 it, or run sessiond as its owner',
        { cause: err },
      );
    }
  }
}
