import Database from 'better-sqlite3';
import { status } from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ServingStatus, SessiondClient } from '../../src/client/client';
import { spawnServer, type ServerProcess } from './process';
import { startTestServer, tempDir, type TestServer } from './server';

/** A server for bad-input tests: no background writes (probe, sweep), so that any write shows. */
export async function quietServer(env: Record<string, string> = {}): Promise<TestServer> {
  return startTestServer({
    env: { SESSIOND_HEALTH_PROBE_INTERVAL: '1h', SESSIOND_SWEEP_INTERVAL: '1h', SESSIOND_LOG_LEVEL: 'warn', ...env },
  });
}

/**
 * A read-only connection of its own on the server's database file: what is
 * really stored, seen from outside the server process's connection.
 */
export class StoreWatcher {
  private readonly db: Database.Database;
  private readonly fingerprintStmt: Database.Statement<[], Record<string, number>>;

  constructor(dbPath: string) {
    this.db = new Database(dbPath, { readonly: true, fileMustExist: true });
    this.fingerprintStmt = this.db.prepare(`SELECT count(*) AS n, coalesce(max(seq), 0) AS maxSeq,
      coalesce(sum(version), 0) AS versions, coalesce(sum(revoke_time IS NOT NULL), 0) AS revoked,
      coalesce(sum(idle_expire_time), 0) AS idle, coalesce(sum(length(attributes)), 0) AS attrs FROM sessions`);
  }

  /** Changes with any change to the sessions table. */
  fingerprint(): string {
    return JSON.stringify(this.fingerprintStmt.get());
  }

  /**
   * SQLite's data_version: changes whenever another connection commits
   * (https://sqlite.org/pragma.html#pragma_data_version), to any table.
   */
  dataVersion(): number {
    return this.db.pragma('data_version', { simple: true }) as number;
  }

  count(where = '1', ...params: unknown[]): number {
    return (this.db.prepare(`SELECT count(*) AS n FROM sessions WHERE ${where}`).get(...params) as { n: number }).n;
  }

  /** One row of any read-only query. */
  row<T>(sql: string, ...params: unknown[]): T {
    return this.db.prepare(sql).get(...params) as T;
  }

  close(): void {
    this.db.close();
  }
}

/** Asserts the server still answers: health SERVING and a read of a known session. */
export async function stillServing(t: ExecutionContext, s: TestServer, knownId: string, label: string): Promise<void> {
  const h = await s.client.health('', { deadlineMs: 2000 });
  t.is(h.status, ServingStatus.SERVING, `${label}: health after`);
  const got = await s.client.getSession(knownId, { deadlineMs: 2000 });
  t.is(got.session?.id, knownId, `${label}: a valid call after`);
}

export const NEVER = new Set<number>([status.INTERNAL, status.UNKNOWN, -1]);

export interface ChildServer {
  srv: ServerProcess;
  client: SessiondClient;
  dir: string;
  dbPath: string;
  alive(): boolean;
}

/**
 * A server in a process of its own (src/main.ts) on a fresh database; at
 * teardown it gets SIGTERM (SIGKILL if it hangs) and the folder is removed.
 */
export async function childServer(t: ExecutionContext, env: Record<string, string> = {}, opts: { entry?: string[] } = {}): Promise<ChildServer> {
  const dir = tempDir('sessiond-bad-');
  const dbPath = join(dir, 'sessions.db');
  const srv = await spawnServer({ SESSIOND_DB_PATH: dbPath, ...env }, [], 20_000, opts);
  const client = new SessiondClient(srv.address, { defaultDeadlineMs: 10_000 });
  const alive = () => srv.proc.exitCode === null && srv.proc.signalCode === null;
  t.teardown(async () => {
    client.close();
    if (alive()) {
      srv.proc.kill('SIGTERM');
      const timer = setTimeout(() => srv.proc.kill('SIGKILL'), 15_000);
      await srv.exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return { srv, client, dir, dbPath, alive };
}
