/*
 * Pre-fills a fresh database before the server starts, through the real
 * schema (SqliteStorage.open runs the migrations) and the real write path
 * (the repository's insert inside group-committed units), with records shaped
 * as SessionManager.create makes them, so that the server reads them normally.
 *
 * Ids and tokens are derived from the index, so the load generator can name
 * any of a million sessions without keeping them all in memory.
 */
import { createHash } from 'node:crypto';
import type { SessionRecord } from '../src/domain/session';
import { hashToken } from '../src/domain/tokens';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';

/** live: read, touched and updated by the bench; spare: live, deleted once created ones run out; expired: for purges. */
export type SessionKind = 'live' | 'spare' | 'expired';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/**
 * Rows per transaction while filling. Random keys (ids, token hashes) dirty
 * pages all over their indexes, and each commit writes every dirty page to the
 * WAL once: few large transactions write far less than many small ones.
 */
const CHUNK = 250_000;
export const SERVER_IDS = 8;

function derive(kind: SessionKind, what: string, i: number, bytes: number): string {
  return createHash('sha256').update(`sessiond-bench:${kind}:${what}:${i}`).digest().subarray(0, bytes).toString('base64url');
}

/** The secret token of session `i` of a kind: 43 base64url characters, like newToken(). */
export function tokenOf(kind: SessionKind, i: number): string {
  return derive(kind, 'token', i, 32);
}

/** The public id of session `i` of a kind: 22 base64url characters, like newSessionId(). */
export function idOf(kind: SessionKind, i: number): string {
  return derive(kind, 'id', i, 16);
}

export function serverIdOf(i: number): string {
  return `web-${i % SERVER_IDS}`;
}

/**
 * Live sessions were last active 10 minutes ago with a one-hour idle window:
 * a touch writes (more than the 10 % threshold has passed), and they stay live
 * for the 50 minutes a long bench run may take. Expired ones passed their
 * absolute expiry an hour ago.
 */
export function recordOf(kind: SessionKind, i: number, now: number): SessionRecord {
  const created = kind === 'expired' ? now - 25 * HOUR : now - 10 * MINUTE;
  const expire = created + 24 * HOUR;
  return {
    id: idOf(kind, i),
    serverId: serverIdOf(i),
    subject: `user-${i % 25_000}`,
    attributes: { role: 'member', plan: i % 3 === 0 ? 'pro' : 'free' },
    ip: `203.0.113.${i % 250}`,
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64) sessiond-bench/1',
    createTime: created,
    updateTime: created,
    expireTime: expire,
    idleExpireTime: Math.min(created + HOUR, expire),
    lastActiveTime: created,
    idleTimeoutMs: HOUR,
    tokenRotateTime: created,
    revokeTime: null,
    version: 1,
  };
}

/**
 * Creates `path` and stores that many sessions of each kind.
 * @returns how long it took, in ms.
 */
export async function fillDatabase(path: string, counts: Partial<Record<SessionKind, number>>, now = Date.now()): Promise<number> {
  const started = performance.now();
  // A large cache for the fill only (1 GiB at most, allocated as used): the
  // random keys of the id and token indexes would otherwise make inserts read
  // pages back from disk, and spill dirty pages to the WAL mid-transaction.
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path, cacheSize: -1024 * 1024 });
  try {
    for (const kind of ['live', 'spare', 'expired'] as const) {
      const n = counts[kind] ?? 0;
      for (let from = 0; from < n; from += CHUNK) {
        const to = Math.min(n, from + CHUNK);
        await storage.writes.run(() => {
          for (let i = from; i < to; i++) storage.sessions.insert(recordOf(kind, i, now), hashToken(tokenOf(kind, i)));
        });
      }
    }
  } finally {
    await storage.close();
  }
  return performance.now() - started;
}
