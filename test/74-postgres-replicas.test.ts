import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import postgres from 'postgres';
import { randomBytes } from 'node:crypto';
import { SessiondClient } from '../src/client/client';
import { DEFAULT_POSTGRES_OPTIONS } from '../src/storage/options';
import { PostgresStorage } from '../src/storage/postgres/postgres-storage';
import { SCHEMA_VERSION } from '../src/storage/postgres/migrations';
import { startPostgres, removeAllPostgres, type PostgresCluster, type Sql } from './helpers/postgres';
import { spawnServer, type ServerProcess } from './helpers/process';
import { waitFor, waitForAsync } from './helpers/wait';
import { clientsOnEvery } from './helpers/workers';

/*
 * Several sessiond replicas on one PostgreSQL database, as real processes:
 * a revocation through one is seen by the others on their very next call
 * (no cache between a replica and the database); of concurrent updates with
 * one etag exactly one wins; a replica SIGKILLed under load lost nothing it
 * acknowledged; replicas that open one fresh database at once migrate it
 * once; and purges run by several replicas at once delete each dead row
 * exactly once and never a live one. No skip: without PostgreSQL this fails.
 */

test.after.always(removeAllPostgres);

let pg: PostgresCluster | undefined;
const cluster = async (): Promise<PostgresCluster> => (pg ??= await startPostgres({ name: 'replicas', fsync: false }));

/** A fresh database owned by sessiond, for one test. */
async function freshDatabase(): Promise<{ name: string; url: string; cluster: PostgresCluster }> {
  const c = await cluster();
  const name = `t_${randomBytes(6).toString('hex')}`;
  // Database names take no parameters; this one is made here, of hex.
  await c.admin((sql) => sql.unsafe(`create database ${name} owner sessiond`));
  return { name, url: c.url(name), cluster: c };
}

function direct(t: ExecutionContext, url: string): Sql {
  const sql = postgres(url, { max: 2, connect_timeout: 5, onnotice: () => {} });
  t.teardown(() => sql.end({ timeout: 1 }));
  return sql;
}

interface Trio { servers: ServerProcess[]; clients: SessiondClient[]; url: string }

/** Three replicas on one fresh database, started at the same moment (their migrations race), protected mode (loopback, no principals). */
async function trio(t: ExecutionContext, extra: Record<string, string> = {}): Promise<Trio> {
  const { url } = await freshDatabase();
  const env = {
    SESSIOND_STORAGE: 'postgres', SESSIOND_DATABASE_URL: url, SESSIOND_DATABASE_POOL_SIZE: '3',
    SESSIOND_DATABASE_CONNECT_TIMEOUT: '2s', SESSIOND_HEALTH_PROBE_INTERVAL: '500ms',
    // No background purge: the purge test counts what the admin calls delete.
    SESSIOND_SWEEP_INTERVAL: '1h', ...extra,
  };
  const started = await Promise.allSettled([0, 1, 2].map(() => spawnServer(env)));
  const servers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  t.teardown(() => {
    for (const s of servers) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  });
  const failure = started.find((s) => s.status === 'rejected');
  if (failure) throw (failure as PromiseRejectedResult).reason;
  const clients = servers.map((s) => new SessiondClient(s.address, { defaultDeadlineMs: 10_000, channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }));
  t.teardown(() => clients.forEach((c) => c.close()));
  return { servers, clients, url };
}

const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'OK', (e: ServiceError) => status[e.code] ?? String(e.code));

test.serial('a session revoked through one replica is invalid through the other two on their very next call', async (t) => {
  t.timeout(60_000);
  const { clients: [a, b, c] } = await trio(t);
  for (let i = 0; i < 30; i++) {
    const [writer, r1, r2] = [[a, b, c], [b, c, a], [c, a, b]][i % 3]!;
    const created = await writer!.createSession({ serverId: 'revoke', subject: `s-${i}`, attributes: { i: String(i) } });
    const id = created.session!.id;
    t.true((await r1!.validateSession(created.token)).valid && (await r2!.validateSession(created.token)).valid, `session ${i} is valid everywhere first`);
    if (i % 2 === 0) await writer!.deleteSession(id);
    else t.is((await writer!.revokeSessions({ subject: `s-${i}` })).revokedCount, 1);
    // No sleep: the very next call through each other replica.
    const [v1, v2] = await Promise.all([r1!.validateSession(created.token), r2!.validateSession(created.token)]);
    t.false(v1.valid, `session ${i}: invalid through the second replica at once`);
    t.false(v2.valid, `session ${i}: invalid through the third replica at once`);
    t.deepEqual(await Promise.all([code(r1!.getSession(id)), code(r2!.getSession(id))]), ['NOT_FOUND', 'NOT_FOUND']);
  }
});

test.serial('the same UpdateSession with the same etag sent to three replicas at once: exactly one wins, the others get FAILED_PRECONDITION', async (t) => {
  t.timeout(60_000);
  const { clients } = await trio(t);
  const created = await clients[0]!.createSession({ serverId: 'etag', subject: 'x', attributes: { v: '0' } });
  const id = created.session!.id;
  let etag = created.session!.etag;
  const wins = [0, 0, 0];
  for (let round = 0; round < 30; round++) {
    const answers = await Promise.all(clients.map((c, r) =>
      c.updateSession({ id, attributes: { v: `${round}-${r}` }, etag }).then((u) => u, (e: ServiceError) => e)));
    const ok = answers.flatMap((x, r) => (x instanceof Error ? [] : [{ r, x }]));
    const lost = answers.filter((x): x is ServiceError => x instanceof Error);
    t.is(ok.length, 1, `round ${round}: exactly one winner (${lost.map((e) => `${status[e.code]}: ${e.details}`).join('; ')})`);
    t.deepEqual(lost.map((e) => status[e.code]), ['FAILED_PRECONDITION', 'FAILED_PRECONDITION'], `round ${round}: the others lose`);
    const winner = ok[0]!;
    wins[winner.r]!++;
    const stored = (await clients[(round + 1) % 3]!.getSession(id)).session!;
    t.deepEqual(stored.attributes, { v: `${round}-${winner.r}` }, `round ${round}: the winner's attributes are stored`);
    t.is(stored.etag, winner.x.session!.etag);
    etag = stored.etag;
  }
  t.log(`wins by replica: ${wins.join(', ')}`);
});

test.serial('SIGKILL of one replica under write load: every create it (or anyone) acknowledged reads back through the survivors', async (t) => {
  t.timeout(60_000);
  const { servers, clients, url } = await trio(t);
  const acked: { id: string; token: string; subject: string; by: number }[] = [];
  const survivorFailures: string[] = [];
  let victimFailures = 0;
  let killed = false;
  let stop = false;
  const loop = async (r: number, w: number) => {
    for (let i = 0; !stop; i++) {
      const subject = `${r}-${w}-${i}`;
      try {
        const res = await clients[r]!.createSession({ serverId: 'kill', subject, attributes: { r: String(r) }, requestId: subject });
        acked.push({ id: res.session!.id, token: res.token, subject, by: r });
      } catch (err) {
        if (r === 2 && killed) {
          victimFailures++;
          return;
        }
        survivorFailures.push(`${r}: ${status[(err as ServiceError).code]} ${(err as ServiceError).details}`);
      }
    }
  };
  const loops = [0, 1, 2].flatMap((r) => [0, 1, 2].map((w) => loop(r, w)));
  const by = (r: number) => acked.filter((x) => x.by === r).length;
  await waitFor(() => by(0) >= 20 && by(1) >= 20 && by(2) >= 20, 'creates through all three replicas', 30_000);
  killed = true;
  servers[2]!.proc.kill('SIGKILL');
  t.is(await servers[2]!.exited, 'SIGKILL');
  const atKill = by(2);
  const [s0, s1] = [by(0), by(1)];
  await waitFor(() => by(0) >= s0 + 20 && by(1) >= s1 + 20, 'creates through the survivors after the kill', 30_000);
  stop = true;
  await Promise.all(loops);
  t.deepEqual(survivorFailures, [], 'the survivors answered every call');
  t.log(`acknowledged: ${acked.length} (${by(2)} by the killed replica, ${by(2) - atKill} of those after the SIGKILL was sent); calls to it that failed after the kill: ${victimFailures}`);

  const missing: string[] = [];
  for (const x of acked) {
    for (const r of [0, 1]) {
      const s = await clients[r]!.getSession(x.id).then((g) => g.session!, () => undefined);
      if (!s || s.subject !== x.subject || s.attributes.r !== String(x.by)) missing.push(`${x.subject} via ${r}`);
    }
  }
  t.deepEqual(missing, [], 'every acknowledged create reads back, with its data, through both survivors');
  for (const x of acked.filter((a) => a.by === 2)) t.true((await clients[0]!.validateSession(x.token)).valid, `token of ${x.subject} validates`);
  const sql = direct(t, url);
  const [row] = await sql<{ n: number; d: number }[]>`select count(*)::int as n, count(distinct request_id)::int as d from sessions where server_id = 'kill'`;
  t.true(row!.n >= acked.length && row!.n === row!.d, `${row!.n} rows, one per request id (the killed replica may have committed a few it never answered)`);
});

test.serial('ten PostgresStorage.open at once on one fresh database all succeed, and the migrations ran once (one sessiond_migrations row per version)', async (t) => {
  t.timeout(60_000);
  const { url } = await freshDatabase();
  const options = { ...DEFAULT_POSTGRES_OPTIONS, url, poolSize: 2 };
  const opened = await Promise.allSettled(Array.from({ length: 10 }, () => PostgresStorage.open(options)));
  const storages = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
  t.teardown(() => Promise.all(storages.map((s) => s.close())).then(() => undefined));
  t.deepEqual(opened.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason)), [], 'every open succeeded');
  t.is(storages.length, 10);
  const sql = direct(t, url);
  const rows = await sql<{ version: number }[]>`select version from sessiond_migrations order by version`;
  t.deepEqual(rows.map((r) => r.version), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1), 'one row per version, each once');
  for (const s of storages) t.is((await s.status()).schemaVersion, SCHEMA_VERSION);
  // And every one of them works on the one schema.
  const counts = await Promise.all(storages.map((s) => s.repository.countSessions(Date.now())));
  t.deepEqual(counts, Array.from({ length: 10 }, () => ({ live: 0, dead: 0 })));
});

test.serial('PurgeExpiredSessions on three replicas at once deletes every dead row exactly once between them, and no live one', async (t) => {
  t.timeout(60_000);
  const { clients, url } = await trio(t);
  const [a] = clients;
  const live = await Promise.all(Array.from({ length: 100 }, (_, i) => a!.createSession({ serverId: 'live', subject: `l-${i}` })));
  await Promise.all(Array.from({ length: 400 }, (_, i) => clients[i % 3]!.createSession({ serverId: 'dead', subject: `d-${i}` })));
  // Revoked is dead: dead_at is the revoke time.
  let revokedTotal = 0;
  for (;;) {
    const n = (await a!.revokeSessions({ serverId: 'dead' })).revokedCount;
    if (n === 0) break;
    revokedTotal += n;
  }
  t.is(revokedTotal, 400);
  const sql = direct(t, url);
  const deadBefore = (await sql<{ n: number }[]>`select count(*)::int as n from sessions where dead_at <= ${Date.now()}`)[0]!.n;
  t.is(deadBefore, 400, 'the dead rows, as the purge sees them');

  // Small batches, so that the three purges interleave over many transactions.
  const answers = await Promise.all(clients.map((c) => c.purgeExpiredSessions({ batchSize: 7 })));
  const purged = answers.map((x) => x.purgedCount);
  t.log(`purged by replica: ${purged.join(', ')} in ${answers.map((x) => x.batches).join(', ')} batches`);
  t.is(purged.reduce((x, y) => x + y, 0), deadBefore, 'the counts sum to the dead rows: each deleted exactly once');
  const left = await sql<{ server_id: string; n: number }[]>`select server_id, count(*)::int as n from sessions group by server_id order by server_id`;
  t.deepEqual(left.map((r) => ({ ...r })), [{ server_id: 'live', n: 100 }], 'every live row is still there, and no dead one');
  for (const x of live) t.true((await clients[1]!.validateSession(x.token)).valid);
  t.deepEqual((await Promise.all(clients.map((c) => c.purgeExpiredSessions({})))).map((x) => x.purgedCount), [0, 0, 0], 'nothing is left to purge');
});

test.serial('--workers 2 on PostgreSQL: both workers serve one database, the primary sweeps, SIGTERM drains both and exits 0', async (t) => {
  t.timeout(90_000);
  const { url } = await freshDatabase();
  const server = await spawnServer({
    SESSIOND_STORAGE: 'postgres', SESSIOND_DATABASE_URL: url, SESSIOND_DATABASE_POOL_SIZE: '3', SESSIOND_WORKERS: '2', SESSIOND_SWEEP_INTERVAL: '200ms',
  });
  t.teardown(() => {
    if (server.proc.exitCode === null && server.proc.signalCode === null) server.proc.kill('SIGKILL');
  });
  const bySlot = await clientsOnEvery(t, server.address, 2, 1);
  const [one, two] = [bySlot.get('1')![0]!, bySlot.get('2')![0]!];
  const made = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? one : two).createSession({ serverId: 'pw', subject: `s-${i}` })));
  for (const [i, m] of made.entries()) t.true((await (i % 2 ? two : one).validateSession(m.token)).valid);
  t.is((await one.revokeSessions({ serverId: 'pw' })).revokedCount, 20);
  const sql = direct(t, url);
  // No worker sweeps; the primary's sweep removes the revoked rows.
  const left = async () => (await sql<{ n: number }[]>`select count(*)::int as n from sessions where server_id = 'pw'`)[0]!.n;
  await waitForAsync(async () => (await left()) === 0, 'the sweep to purge the revoked sessions', 20_000, 100);
  t.is(await left(), 0);
  server.proc.kill('SIGTERM');
  t.is(await server.exited, 0, server.stderr().slice(-2000));
  t.is([...server.stderr().matchAll(/"msg":"shutdown: database closed"/g)].length, 3, 'each worker and then the primary closed its pool');
});
