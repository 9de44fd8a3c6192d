import Database from 'better-sqlite3';
import { waitFor } from './wait';

/** The time the health probe last wrote (meta.heartbeat), read on a connection of this process's own. */
export function heartbeat(dbPath: string): string | undefined {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return (db.prepare("SELECT value FROM meta WHERE key = 'heartbeat'").get() as { value: string } | undefined)?.value;
  } finally {
    db.close();
  }
}

/**
 * Resolves once the server on `dbPath` has written `n` more heartbeats: its
 * health probe writes one each time it runs, so this is a signal that the
 * probe ran, for a server in another process.
 */
export async function heartbeatsWritten(dbPath: string, n: number, ms = 10_000): Promise<void> {
  let last = heartbeat(dbPath);
  let seen = 0;
  await waitFor(() => {
    const now = heartbeat(dbPath);
    if (now !== last) {
      seen++;
      last = now;
    }
    return seen >= n;
  }, `${n} heartbeats in ${dbPath}`, ms);
}
