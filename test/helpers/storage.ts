import { type ExecutionContext } from 'ava';
import { existsSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_STORAGE_OPTIONS, type StorageOptions } from '../../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../../src/storage/sqlite/sqlite-storage';
import { startTestServer, tempDir, type TestServer } from './server';

export const MiB = 1024 * 1024;

/** No background writes (health heartbeat, sweep) during a test, so WAL counts only move when the test writes. */
export const QUIET = { SESSIOND_HEALTH_PROBE_INTERVAL: '1h', SESSIOND_SWEEP_INTERVAL: '1h' };

export async function server(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ env: { ...QUIET, ...env } });
  t.teardown(() => s.close());
  return s;
}

/** A SqliteStorage on a fresh file; the folder is removed at teardown. */
export function openStorage(t: ExecutionContext, options: Partial<StorageOptions> = {}) {
  const dir = tempDir('sessiond-wal-');
  const path = join(dir, 'sessions.db');
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path, ...options });
  // close() may be synchronous or return a promise (it may checkpoint first): await covers both.
  t.teardown(async () => {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { storage, path, dir };
}

export const size = (path: string) => (existsSync(path) ? statSync(path).size : -1);

export async function createSome(s: TestServer, n: number, extra: { ttlSeconds?: number } = {}): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await s.client.createSession({
      serverId: 'web-1',
      subject: `user-${i}`,
      attributes: { i: String(i) },
      ttl: extra.ttlSeconds ? { seconds: extra.ttlSeconds, nanos: 0 } : undefined,
    });
    tokens.push(r.token);
  }
  return tokens;
}

export function mdValue(md: { get(key: string): unknown[] }, key: string): string | undefined {
  const v = md.get(key);
  return v.length === 0 ? undefined : String(v[0]);
}

/** Polls `check` every 25 ms until it holds or `ms` pass; returns whether it held. */
export async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * Resolves once the checkpoint worker has polled (the WAL for automatic
 * checkpoints and journal_size_limit) after this call was made: it polls right
 * after each purge batch it runs and handles messages in order, so the answer
 * to a second purge comes after the poll that followed the first, and after
 * any checkpoint report that poll sent. With nothing expired, a purge batch
 * deletes nothing and writes no WAL frame.
 */
export async function workerPolled(s: TestServer): Promise<void> {
  await s.client.purgeExpiredSessions({});
  await s.client.purgeExpiredSessions({});
}

/** Handles that can run code later (timers, a worker's port), as node counts them. */
export function backgroundHandles(): string[] {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate' || r === 'MessagePort');
}
