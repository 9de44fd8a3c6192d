/*
 * The unary calls again on PostgreSQL: a PostgreSQL 15 cluster the bench
 * starts itself (test/helpers/postgres.ts: a temp folder, a free port of
 * 127.0.0.1, run as the `postgres` user when we are root), removed at the end.
 * Two configurations, each on a fresh database of that cluster filled as the
 * SQLite one is, each against the bare grpc-js server's empty RPC:
 *   one replica   one server process on the database
 *   two replicas  two server processes on the same database, the load client
 *                 sending each call to the next replica in turn; server CPU is
 *                 the two processes' together
 * The server CPU column is sessiond's alone: PostgreSQL's backends run in
 * processes of their own and are not counted.
 */
import { join } from 'node:path';
import { hashToken } from '../src/domain/tokens';
import { DEFAULT_POSTGRES_OPTIONS } from '../src/storage/options';
import { PostgresStorage } from '../src/storage/postgres/postgres-storage';
import { startPostgres, type PostgresCluster } from '../test/helpers/postgres';
import { recordOf, tokenOf, type SessionKind } from './fill';
import type { BenchOptions } from './options';
import { Channels } from './rpc';
import { startServer, type ServerProcess } from './server-process';
import { measureUnary, type Baseline, type UnaryRow } from './unary';
import { Pools } from './workloads';

/** Inserts in flight while filling: enough to keep the fill's pool busy, so PostgreSQL groups the commits. */
const FILL_IN_FLIGHT = 64;

export const POSTGRES_CONFIGS = [
  { name: 'postgres, 1 replica', replicas: 1 },
  { name: 'postgres, 2 replicas', replicas: 2 },
] as const;

/**
 * CreateSession on two replicas without the events outbox, beside the rows
 * with it: what the outbox costs a write on PostgreSQL, where every
 * event-writing transaction takes the one counter row's lock until it commits.
 */
export const POSTGRES_EVENT_COST = { name: 'postgres, 2 replicas, no session events', replicas: 2, env: { SESSIOND_SESSION_EVENTS: 'false' } } as const;

/**
 * Stores `counts` sessions in the database at `url` through the PostgreSQL
 * backend's own migrations and insert (one statement, one commit each), with
 * the ids, tokens and records bench/fill.ts gives SQLite.
 * @returns how long it took, in ms.
 */
export async function fillPostgres(url: string, counts: Partial<Record<SessionKind, number>>, now = Date.now()): Promise<number> {
  const started = performance.now();
  const storage = await PostgresStorage.open({ ...DEFAULT_POSTGRES_OPTIONS, url, poolSize: 16 });
  try {
    for (const kind of ['live', 'spare', 'expired'] as const) {
      const n = counts[kind] ?? 0;
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < n; i = next++) await storage.repository.insert(recordOf(kind, i, now), hashToken(tokenOf(kind, i)));
      };
      await Promise.all(Array.from({ length: Math.min(FILL_IN_FLIGHT, n) }, worker));
    }
  } finally {
    await storage.close();
  }
  return performance.now() - started;
}

/**
 * Starts the cluster, or throws saying why and how to run without it: with
 * --postgres on, a PostgreSQL that cannot start fails the run.
 */
async function startCluster(): Promise<PostgresCluster> {
  try {
    // fsync on, synchronous_commit on (the harness's default): commits cost what they cost in production.
    return await startPostgres({ name: 'bench', settings: { shared_buffers: '128MB', max_connections: 100 } });
  } catch (err) {
    throw new Error(`the PostgreSQL part could not start PostgreSQL (run without it with --postgres off, BENCH_POSTGRES=off): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** Runs `fn` on `replicas` server processes over the database at `url`, behind one set of channels; the servers are stopped afterwards. */
async function onReplicas<T>(dir: string, url: string, replicas: number, o: BenchOptions, log: (line: string) => void,
  fn: (servers: ServerProcess[], channels: Channels) => Promise<T>, extraEnv: Record<string, string> = {}): Promise<T> {
  const env = { SESSIOND_STORAGE: 'postgres', SESSIOND_DATABASE_URL: url, ...extraEnv };
  const servers: ServerProcess[] = [];
  let channels: Channels | undefined;
  try {
    // One after the other: the first migrates nothing (the fill did), and neither races the other's start-up.
    for (let i = 0; i < replicas; i++) servers.push(await startServer(join(dir, `unused-${i}.db`), env, o.cpuProfDir));
    channels = new Channels(servers.map((s) => s.address), o.channels, servers[0]!.apiKey);
    await channels.ready();
    return await fn(servers, channels);
  } finally {
    channels?.close();
    for (const s of servers) {
      const code = await s.stop();
      if (code !== 0) log(`  warning: server ${s.pid} exited with ${code}`);
    }
  }
}

/**
 * The unary part on PostgreSQL, one configuration after the other.
 * @param dir the bench's temp folder (the servers are given an unused SQLite path in it)
 * @throws when PostgreSQL cannot start, or a server cannot start on it
 */
export async function measurePostgres(dir: string, baseline: Baseline, o: BenchOptions, log: (line: string) => void): Promise<{ rows: UnaryRow[]; meta: Record<string, unknown> }> {
  log('starting PostgreSQL 15 for the PostgreSQL rows...');
  const cluster = await startCluster();
  const rows: UnaryRow[] = [];
  const meta: Record<string, unknown> = { fillMs: {} as Record<string, number>, deleteMisses: {} as Record<string, number> };
  try {
    const version = await cluster.admin(async (sql) => (await sql<{ v: string }[]>`select current_setting('server_version') as v`)[0]!.v);
    meta['serverVersion'] = version;
    log(`  PostgreSQL ${version} on 127.0.0.1:${cluster.port}`);
    const spare = Math.max(100, Math.floor(o.sessions / 4));
    let n = 0;
    for (const config of POSTGRES_CONFIGS) {
      // A fresh database each, filled alike: the first configuration's creates, touches and deletes would skew the second's.
      const db = `bench${++n}`;
      await cluster.admin((sql) => sql.unsafe(`CREATE DATABASE ${db} OWNER sessiond`));
      log(`filling ${o.sessions} live (+${spare} spare) sessions into PostgreSQL database ${db}...`);
      const fillMs = await fillPostgres(cluster.url(db), { live: o.sessions, spare });
      (meta['fillMs'] as Record<string, number>)[config.name] = fillMs;
      log(`  filled in ${(fillMs / 1000).toFixed(1)} s`);
      const pools = new Pools(o.sessions, spare);
      await onReplicas(dir, cluster.url(db), config.replicas, o, log, async (servers, channels) => {
        log(`unary calls, PostgreSQL, ${config.replicas === 1 ? 'one replica' : `${config.replicas} replicas`} (server pid ${servers.map((s) => s.pid).join(', ')})`);
        rows.push(...await measureUnary(servers, channels, baseline, pools, o.ops, 'on', o, log, { name: config.name, storage: 'postgres' }));
      });
      (meta['deleteMisses'] as Record<string, number>)[config.name] = pools.deleteMisses;
    }
    if (o.ops.includes('CreateSession')) {
      const c = POSTGRES_EVENT_COST;
      const db = `bench${++n}`;
      await cluster.admin((sql) => sql.unsafe(`CREATE DATABASE ${db} OWNER sessiond`));
      await fillPostgres(cluster.url(db), { live: o.sessions, spare });
      const pools = new Pools(o.sessions, spare);
      await onReplicas(dir, cluster.url(db), c.replicas, o, log, async (servers, channels) => {
        log(`CreateSession, PostgreSQL, ${c.replicas} replicas, no session events (server pid ${servers.map((s) => s.pid).join(', ')})`);
        rows.push(...await measureUnary(servers, channels, baseline, pools, ['CreateSession'], 'on', o, log,
          { name: c.name, storage: 'postgres', concurrency: [Math.max(...o.concurrency)] }));
      }, c.env);
    }
  } finally {
    await cluster.remove();
  }
  return { rows, meta };
}
