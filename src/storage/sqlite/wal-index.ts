import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { endianness } from 'node:os';

/*
 * The WAL index (-shm file) header, https://sqlite.org/walformat.html#the_wal_index_file_format
 * mxFrame (offset 16) is the number of valid frames in the WAL, the figure that
 * wal_checkpoint reports as its "log" number; nBackfill (offset 96) is how many
 * of them are already copied into the database. Reading them costs one small
 * read and, unlike PRAGMA wal_checkpoint, writes nothing and takes no lock, so
 * health checks can report them on every call. The file is in native byte order.
 */
const HEADER_BYTES = 136;
const WAL_INDEX_VERSION = 3007000;

export interface WalIndexCounts {
  frames: number;
  backfilled: number;
}

export function readWalIndex(dbPath: string): WalIndexCounts {
  let fd: number;
  try {
    fd = openSync(`${dbPath}-shm`, 'r');
  } catch {
    return { frames: 0, backfilled: 0 };
  }
  try {
    const buf = Buffer.alloc(HEADER_BYTES);
    if (readSync(fd, buf, 0, HEADER_BYTES, 0) < HEADER_BYTES) return { frames: 0, backfilled: 0 };
    const le = endianness() === 'LE';
    const u32 = (offset: number) => (le ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset));
    if (u32(0) !== WAL_INDEX_VERSION || buf[12] === 0) return { frames: 0, backfilled: 0 };
    return { frames: u32(16), backfilled: u32(96) };
  } finally {
    closeSync(fd);
  }
}

/** Size of a file in bytes, 0 when it does not exist. */
export function fileBytes(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}
