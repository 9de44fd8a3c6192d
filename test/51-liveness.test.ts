import test from 'ava';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { SessiondClient, ServingStatus } from '../src/client/client';
import { HEALTH_SERVICES, LIVENESS_SERVICE } from '../src/transport/health';
import { rejectsWithCode } from './helpers/grpc';
import { spawnServer } from './helpers/process';
import { startTestServer, tempDir } from './helpers/server';

/*
 * The health name the Kubernetes liveness probe asks for. Readiness ("") goes
 * NOT_SERVING when storage is unusable or the server is stopping; liveness must
 * not, since a restart cures neither a busy database nor a large WAL: it stays
 * SERVING, and answers promptly, as long as the process can answer at all.
 */

const PROBE_TIMEOUT_MS = 5000; // timeoutSeconds of the liveness probe in deploy/kubernetes/statefulset.yaml
const BUSY_TIMEOUT_MS = 3000;

test('liveness is a separate name from the storage-dependent ones', (t) => {
  t.is(LIVENESS_SERVICE, 'liveness');
  t.false((HEALTH_SERVICES as readonly string[]).includes(LIVENESS_SERVICE));
});

test('liveness stays SERVING and prompt while another process holds the write lock and the WAL grows', async (t) => {
  const dir = tempDir('sessiond-liveness-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const dbPath = join(dir, 'sessions.db');
  // A separate process, so that any event-loop stall in the server shows up as a slow Check.
  const server = await spawnServer({
    SESSIOND_DB_PATH: dbPath,
    SESSIOND_HEALTH_PROBE_INTERVAL: '100ms',
    SESSIOND_BUSY_TIMEOUT: `${BUSY_TIMEOUT_MS}ms`,
    SESSIOND_WAL_AUTOCHECKPOINT: '0',
  });
  t.teardown(() => {
    if (server.proc.exitCode === null) server.proc.kill('SIGKILL');
  });
  const client = new SessiondClient(server.address, { defaultDeadlineMs: 10_000 });
  const other = new Database(dbPath);
  try {
    // A large WAL: no checkpoint runs (autocheckpoint off), every commit appends.
    for (let i = 0; i < 300; i++) await client.createSession({ serverId: 'web-1', subject: `user-${i}`, attributes: { pad: 'x'.repeat(2000) } });
    const wal = Number((await client.health(LIVENESS_SERVICE)).metadata.get('x-sessiond-wal-frames')[0]);
    t.true(wal >= 300, `the WAL has ${wal} frames`);

    // Busy: another connection holds the write lock for longer than the busy timeout.
    other.exec('BEGIN IMMEDIATE');
    const write = client.createSession({ serverId: 'web-1' }).then(
      () => 'committed',
      (err: { code?: number }) => status[err.code ?? -1],
    );
    const started = Date.now();
    let slowest = 0;
    let checks = 0;
    while (Date.now() - started < BUSY_TIMEOUT_MS + 500) {
      const t0 = Date.now();
      const r = await client.health(LIVENESS_SERVICE, { deadlineMs: PROBE_TIMEOUT_MS });
      slowest = Math.max(slowest, Date.now() - t0);
      checks++;
      t.is(r.status, ServingStatus.SERVING);
      t.is(r.metadata.get('x-sessiond-not-serving-reason').length, 0);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    t.true(checks >= 10, `${checks} checks`);
    // Had a probe or the waiting write blocked the event loop for the busy timeout, some Check would have waited that long.
    t.true(slowest < BUSY_TIMEOUT_MS / 2, `the slowest liveness Check took ${slowest} ms`);
    t.is(await write, 'UNAVAILABLE', 'the write itself gave up after the busy timeout');
    other.exec('COMMIT');
    t.is((await client.health('')).status, ServingStatus.SERVING, 'contention is not breakage for readiness either');
  } finally {
    other.close();
    client.close();
    server.proc.kill('SIGTERM');
    await server.exited;
  }
});

test('liveness stays SERVING while storage is unusable and while stopping, when readiness is NOT_SERVING', async (t) => {
  const s = await startTestServer({ env: { SESSIOND_HEALTH_PROBE_INTERVAL: '100ms' } });
  try {
    t.is((await s.client.health(LIVENESS_SERVICE)).status, ServingStatus.SERVING);

    s.app.health.setPhase('stopping');
    t.is((await s.client.health('')).status, ServingStatus.NOT_SERVING);
    const stopping = await s.client.health(LIVENESS_SERVICE);
    t.is(stopping.status, ServingStatus.SERVING);
    t.is(stopping.metadata.get('x-sessiond-not-serving-reason').length, 0, 'no reason beside a SERVING status');
    s.app.health.setPhase('serving');

    await s.app.storage.close();
    const until = Date.now() + 5000;
    while ((await s.client.health('')).status !== ServingStatus.NOT_SERVING) {
      if (Date.now() > until) throw new Error('readiness did not turn NOT_SERVING');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const ready = await s.client.health('');
    t.is(String(ready.metadata.get('x-sessiond-not-serving-reason')[0]), 'database is closed');
    t.is((await s.client.health(LIVENESS_SERVICE)).status, ServingStatus.SERVING);
    // An unknown name is still NOT_FOUND: liveness is one extra name, not a wildcard.
    await rejectsWithCode(t, s.client.health('livenes'), status.NOT_FOUND);
  } finally {
    await s.close();
  }
});
