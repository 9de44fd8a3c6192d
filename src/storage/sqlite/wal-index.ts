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

/*
 * The -shm file is opened once and kept open while this process has a
 * connection to the database. POSIX record locks belong to the process, and
 * closing any descriptor of a file drops every lock the process holds on it,
 * SQLite's own WAL locks included
 * (https://sqlite.org/howtocorrupt.html#_posix_advisory_locks_canceled_by_a_separate_thread_doing_close_).
 * An open-read-close on every health check would let another process (a
 * second sessiond, the sqlite3 CLI) take the write lock while this one holds
 * it, and commits would be lost; test/31-two-processes.test.ts checks that
 * they are not.
 */
const held = new Map<string, { fd: number | undefined; refs: number }>();

/**
 * The WAL index header of one database, read through a descriptor that stays
 * open until close(). Instances for one path share one descriptor, closed when
 * the last is closed.
 */
export class WalIndex {
  private closed = false;

  private constructor(private readonly dbPath: string, private readonly borrowed: number | undefined) {}

  /** For the thread that owns connections to the database; close() it only after they are closed. */
  static open(dbPath: string): WalIndex {
    const entry = held.get(dbPath) ?? { fd: undefined, refs: 0 };
    entry.refs++;
    held.set(dbPath, entry);
    return new WalIndex(dbPath, undefined);
  }

  /** A descriptor opened by another thread of this process (threads share descriptors); never closed here. */
  static borrow(dbPath: string, fd: number): WalIndex {
    return new WalIndex(dbPath, fd);
  }

  /** The descriptor (opened now if the -shm exists), to lend to a worker thread. */
  get descriptor(): number | undefined {
    if (this.borrowed !== undefined) return this.borrowed;
    const entry = held.get(this.dbPath);
    if (!entry || this.closed) return undefined;
    if (entry.fd === undefined) {
      try {
        entry.fd = openSync(`${this.dbPath}-shm`, 'r');
      } catch {
        // No -shm yet (not in WAL mode, or no connection has read the file): try again next time.
      }
    }
    return entry.fd;
  }

  /** mxFrame and nBackfill; zeros when there is no usable -shm. */
  read(): WalIndexCounts {
    const fd = this.descriptor;
    if (fd === undefined) return { frames: 0, backfilled: 0 };
    const buf = Buffer.alloc(HEADER_BYTES);
    if (readSync(fd, buf, 0, HEADER_BYTES, 0) < HEADER_BYTES) return { frames: 0, backfilled: 0 };
    const le = endianness() === 'LE';
    const u32 = (offset: number) => (le ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset));
    if (u32(0) !== WAL_INDEX_VERSION || buf[12] === 0) return { frames: 0, backfilled: 0 };
    return { frames: u32(16), backfilled: u32(96) };
  }

  /** Call only once this process has no connection to the database left (see above). Safe to call twice. */
  close(): void {
    if (this.closed || this.borrowed !== undefined) return;
    this.closed = true;
    const entry = held.get(this.dbPath);
    if (!entry || --entry.refs > 0) return;
    held.delete(this.dbPath);
    if (entry.fd !== undefined) closeSync(entry.fd);
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
