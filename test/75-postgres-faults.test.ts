import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import postgres from 'postgres';
import { HealthCheckResponse_ServingStatus as Serving } from '../generated/grpc/health/v1/health';
import { LIVENESS_SERVICE } from '../src/transport/health';
import { removeAllPostgres, startPostgres, type PostgresCluster } from './helpers/postgres';
import { processesIn } from './helpers/postgres-processes';
import { startTestServer, type TestServer } from './helpers/server';
import { waitForAsync } from './helpers/wait';
import { SCHEMA_VERSION } from '../src/storage/postgres/migrations';

/*
 * PostgreSQL faults against a real cluster: the database down, read-only,
 * slow and cutting a connection under a write. Every call answers within its
 * deadline with a precise status, nothing acknowledged is lost, and the
 * server recovers without a restart. No skip: without PostgreSQL these fail.
 */

test.after.always(removeAllPostgres);

const FAST = {
  SESSIOND_DATABASE_CONNECT_TIMEOUT: '1s',
  SESSIOND_DATABASE_STATEMENT_TIMEOUT: '1s',
  SESSIOND_HEALTH_PROBE_INTERVAL: '200ms',
  SESSIOND_DATABASE_POOL_SIZE: '4',
};

async function serverOn(t: ExecutionContext, cluster: PostgresCluster, database = 'sessiond'): Promise<TestServer> {
  const s = await startTestServer({ env: { SESSIOND_STORAGE: 'postgres', SESSIOND_DATABASE_URL: cluster.url(database), ...FAST } });
  t.teardown(() => s.close());
  return s;
}

async function newDatabase(cluster: PostgresCluster, name: string): Promise<string> {
  await cluster.admin((sql) => sql.unsafe(`CREATE DATABASE ${name} OWNER sessiond`));
  return name;
}

/** `fn` on a connection of the test's own to `database`, as the sessiond role. */
async function onDatabase<T>(cluster: PostgresCluster, database: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(cluster.url(database), { max: 2, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function failure(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('the call succeeded');
}

const healthOf = async (s: TestServer, service = '') => (await s.client.health(service)).status;

let cluster: PostgresCluster;
test.before(async () => {
  cluster = await startPostgres({ name: 'faults', fsync: false });
});

test.serial('database down: calls answer UNAVAILABLE within their deadline, health goes NOT_SERVING (liveness stays SERVING), and all comes back without a restart', async (t) => {
  const s = await serverOn(t, cluster, await newDatabase(cluster, 'down'));
  const kept = await s.client.createSession({ serverId: 'web', subject: 'alice', attributes: { k: 'v' } });
  t.is(await healthOf(s), Serving.SERVING);
  await cluster.stop();
  const started = Date.now();
  const calls = await Promise.all([
    failure(s.client.validateSession(kept.token, false, { deadlineMs: 8000 })),
    failure(s.client.createSession({ serverId: 'web', subject: 'bob' }, { deadlineMs: 8000 })),
    failure(s.client.getSession(kept.session!.id, { deadlineMs: 8000 })),
    failure(s.client.listSessions({}, { deadlineMs: 8000 })),
  ]);
  for (const err of calls) {
    t.is(err.code, status.UNAVAILABLE, err.details);
    t.regex(err.details, /PostgreSQL/);
    t.false(err.details.includes(cluster.password), 'the password is never in a message');
  }
  t.true(Date.now() - started < 8000, 'answered before the deadline, by the connect timeout');
  await waitForAsync(async () => (await healthOf(s)) === Serving.NOT_SERVING, 'health NOT_SERVING while the database is down', 10_000);
  t.is(await healthOf(s, LIVENESS_SERVICE), Serving.SERVING);
  const reason = (await s.client.health('')).metadata.get('x-sessiond-not-serving-reason')[0];
  t.regex(String(reason), /unreachable/);
  t.is((await s.client.health('')).metadata.get('x-sessiond-storage-backend')[0], 'postgres');

  await cluster.start();
  await waitForAsync(async () => (await healthOf(s)) === Serving.SERVING, 'health SERVING again once the database is back', 15_000);
  const after = await s.client.validateSession(kept.token);
  t.true(after.valid, 'the session acknowledged before the outage is there');
  t.deepEqual(after.session?.attributes, { k: 'v' });
  t.truthy((await s.client.createSession({ serverId: 'web', subject: 'carol' })).token, 'writes work again');
});

test.serial('a database that turns read-only: writes answer UNAVAILABLE, health NOT_SERVING naming it, reads go on; SERVING again once writable', async (t) => {
  const s = await serverOn(t, cluster, await newDatabase(cluster, 'readonly'));
  const kept = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const setReadOnly = (on: boolean) => cluster.admin(async (sql) => {
    await sql.unsafe(`ALTER DATABASE readonly SET default_transaction_read_only = ${on ? 'on' : 'off'}`);
  });
  await setReadOnly(true);
  t.teardown(() => setReadOnly(false).catch(() => {}));
  // The setting applies to new connections: the pool's are replaced after the first refusal.
  await waitForAsync(async () => (await healthOf(s)) === Serving.NOT_SERVING, 'health NOT_SERVING on a read-only database', 10_000);
  t.regex(String((await s.client.health('')).metadata.get('x-sessiond-not-serving-reason')[0]), /read-only/);
  await waitForAsync(async () => {
    const err = await failure(s.client.createSession({ serverId: 'web', subject: 'bob' })).catch(() => undefined);
    return err?.code === status.UNAVAILABLE && /read-only/.test(err.details);
  }, 'a create refused as read-only', 10_000);
  t.true((await s.client.validateSession(kept.token)).valid, 'reads are still served');
  await setReadOnly(false);
  await waitForAsync(async () => (await healthOf(s)) === Serving.SERVING, 'SERVING again', 10_000);
  await waitForAsync(async () => {
    try {
      return Boolean((await s.client.createSession({ serverId: 'web', subject: 'dave' })).token);
    } catch {
      return false;
    }
  }, 'writes accepted again', 10_000);
  t.pass();
});

test.serial('a statement past database-statement-timeout is cancelled and answered UNAVAILABLE, naming the timeout; nothing changes', async (t) => {
  const db = await newDatabase(cluster, 'slow');
  const s = await serverOn(t, cluster, db);
  const c = await s.client.createSession({ serverId: 'web', subject: 'alice', attributes: { v: '1' } });
  // Another connection holds the row's lock past the timeout.
  const held = await onDatabase(cluster, db, async (sql) => {
    const reserved = await sql.reserve();
    await reserved.unsafe('BEGIN');
    await reserved.unsafe(`SELECT 1 FROM sessions WHERE id = '${c.session!.id}' FOR UPDATE`);
    const started = Date.now();
    const err = await failure(s.client.updateSession({ id: c.session!.id, attributes: { v: '2' }, merge: true }, { deadlineMs: 10_000 }));
    const took = Date.now() - started;
    await reserved.unsafe('ROLLBACK');
    reserved.release();
    return { err, took };
  });
  t.is(held.err.code, status.UNAVAILABLE);
  t.regex(held.err.details, /database-statement-timeout/);
  t.true(held.took < 5000, `cancelled by the 1s statement timeout, not the deadline (${held.took} ms)`);
  t.deepEqual((await s.client.getSession(c.session!.id)).session?.attributes, { v: '1' }, 'nothing was written');
  t.deepEqual((await s.client.updateSession({ id: c.session!.id, attributes: { v: '3' }, merge: true })).session?.attributes, { v: '3' });
});

test.serial('a connection cut under a write: the caller is told the outcome is unknown, and a retry with the request_id creates exactly one session', async (t) => {
  const db = await newDatabase(cluster, 'cut');
  const s = await serverOn(t, cluster, db);
  await s.client.createSession({ serverId: 'web', subject: 'warm-up' });
  const result = await cluster.admin(async (admin) => onDatabase(cluster, db, async (sql) => {
    {
      // An uncommitted row with the same key: the server's insert waits on the unique index.
      const reserved = await sql.reserve();
      await reserved.unsafe('BEGIN');
      await reserved.unsafe(`INSERT INTO sessions (id, token_hash, server_id, subject, attributes, ip, user_agent, create_time, update_time,
        expire_time, idle_expire_time, last_active_time, idle_timeout_ms, token_rotate_time, version, dead_at, request_id)
        VALUES ('blocker-id-0000000000', '\\x00', 'web', 'x', '{}', '', '', 0, 0, 1, 1, 0, 1, 0, 1, 1, 'req-cut')`);
      const create = failure(s.client.createSession({ serverId: 'web', subject: 'alice', requestId: 'req-cut' }, { deadlineMs: 10_000 }));
      const waiting = async () => (await admin.unsafe<{ pid: number }[]>(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'sessiond-%' AND wait_event_type = 'Lock'", [db],
      ))[0]?.pid;
      await waitForAsync(async () => (await waiting()) !== undefined, 'the create to wait on the unique index', 5000);
      await admin.unsafe('SELECT pg_terminate_backend($1)', [await waiting()]);
      const err = await create;
      await reserved.unsafe('ROLLBACK');
      reserved.release();
      return err;
    }
  }));
  t.is(result.code, status.UNAVAILABLE);
  t.regex(result.details, /may or may not have been applied/);
  t.regex(result.details, /request_id is safe/);
  const retried = await s.client.createSession({ serverId: 'web', subject: 'alice', requestId: 'req-cut' });
  t.truthy(retried.token);
  const again = await s.client.createSession({ serverId: 'web', subject: 'alice', requestId: 'req-cut' });
  t.is(again.session?.id, retried.session?.id, 'the same caller retrying again gets the same session');
  const count = await onDatabase(cluster, db, async (sql) => (await sql.unsafe<{ n: number }[]>("SELECT count(*)::int AS n FROM sessions WHERE request_id = 'req-cut'"))[0]!.n);
  t.is(count, 1, 'exactly one session for the request_id');
});

test.serial('a retry through another replica after the first create committed is ALREADY_EXISTS naming the session: never a second one', async (t) => {
  const db = await newDatabase(cluster, 'replay');
  const a = await serverOn(t, cluster, db);
  const b = await serverOn(t, cluster, db);
  const first = await a.client.createSession({ serverId: 'web', subject: 'alice', requestId: 'req-twice' });
  const err = await failure(b.client.createSession({ serverId: 'web', subject: 'alice', requestId: 'req-twice' }));
  t.is(err.code, status.ALREADY_EXISTS);
  t.true(err.details.includes(first.session!.id), err.details);
  t.false(err.details.includes(first.token), 'the first token is never sent again from another replica');
  t.is((await b.client.listSessions({ serverId: 'web' })).sessions.length, 1);
});

test.serial('start-up with a wrong password fails naming the problem and never the password', async (t) => {
  const wrong = cluster.url().replace(cluster.password, 'not-the-password');
  const err = await t.throwsAsync(startTestServer({ env: { SESSIOND_STORAGE: 'postgres', SESSIOND_DATABASE_URL: wrong, ...FAST } }));
  t.regex(err!.message, /cannot open PostgreSQL database 127\.0\.0\.1:\d+\/sessiond: PostgreSQL refused the login/);
  t.false(err!.message.includes('not-the-password'));
});

test.serial('GetStorageStatus names the backend and gives PostgreSQL figures; Checkpoint is FAILED_PRECONDITION saying why', async (t) => {
  const s = await serverOn(t, cluster, await newDatabase(cluster, 'status'));
  await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const st = await s.client.getStorageStatus();
  t.is(st.backend, 'postgres');
  t.is(st.liveSessions, 1);
  t.is(st.schemaVersion, SCHEMA_VERSION);
  t.is(st.path, '');
  t.regex(st.postgres!.serverVersion, /^15\./);
  t.true(st.postgres!.primary);
  t.is(st.postgres!.poolSize, 4);
  t.true(st.postgres!.poolOpen >= 1 && st.postgres!.poolOpen <= 4, `pool open ${st.postgres!.poolOpen}`);
  t.true(st.postgres!.tableBytes > 0 && st.postgres!.indexBytes > 0);
  t.is(st.postgres!.target, `127.0.0.1:${cluster.port}/status`);
  const err = await failure(s.client.checkpoint({}));
  t.is(err.code, status.FAILED_PRECONDITION);
  t.regex(err.details, /SQLite's WAL checkpoints; this server stores sessions in postgres/);
  for (const call of [s.client.backup(), s.client.integrityCheck({ full: true })]) {
    const e = await failure(call);
    t.is(e.code, status.FAILED_PRECONDITION);
    t.regex(e.details, /works on SQLite's database file; this server stores sessions in postgres, whose backups and checks are the database operator's/);
  }
});

test.serial('a database that stops answering (every process SIGSTOPped): calls still answer UNAVAILABLE well before their deadline, and the server recovers after SIGCONT', async (t) => {
  const s = await serverOn(t, cluster, await newDatabase(cluster, 'hung'));
  const kept = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const frozen = processesIn(cluster.dataDir);
  const signal = (sig: NodeJS.Signals) => {
    for (const pid of frozen) {
      try {
        process.kill(pid, sig);
      } catch {
        // Gone already.
      }
    }
  };
  signal('SIGSTOP');
  t.teardown(() => signal('SIGCONT'));
  const started = Date.now();
  const [read, write] = await Promise.all([
    failure(s.client.validateSession(kept.token, false, { deadlineMs: 15_000 })),
    failure(s.client.deleteSession(kept.session!.id, false, { deadlineMs: 15_000 })),
  ]);
  const took = Date.now() - started;
  t.is(read.code, status.UNAVAILABLE, read.details);
  t.is(write.code, status.UNAVAILABLE, write.details);
  // No answer for connect + statement timeout and a margin: the server's own statement_timeout cannot run while it is stopped.
  t.true(took < 8000, `answered by sessiond's own bound (${took} ms), not the 15 s deadline`);
  t.regex(write.details, /may or may not have been applied|nothing was written/);
  await waitForAsync(async () => (await healthOf(s)) === Serving.NOT_SERVING, 'NOT_SERVING while the database does not answer', 10_000);
  signal('SIGCONT');
  await waitForAsync(async () => (await healthOf(s)) === Serving.SERVING, 'SERVING again after SIGCONT', 15_000);
  await waitForAsync(async () => {
    try {
      await s.client.getSession(kept.session!.id);
      return true;
    } catch (err) {
      // The revoke above may have committed after all (its outcome was unknown): then the session is gone, as it should be.
      return (err as ServiceError).code === status.NOT_FOUND;
    }
  }, 'reads answered again', 15_000);
  t.truthy((await s.client.createSession({ serverId: 'web', subject: 'bob' })).token);
});

test.serial('with synchronous_commit off on the server: a warning at start-up, and revocations and rotations still run in transactions that turn it on', async (t) => {
  const db = await newDatabase(cluster, 'async');
  await cluster.admin((sql) => sql.unsafe(`ALTER DATABASE ${db} SET synchronous_commit = off`));
  const s = await serverOn(t, cluster, db);
  t.true(s.logs.some((l) => l['level'] === 'warn' && /synchronous_commit is not on/.test(String(l['msg'])) && l['synchronousCommit'] === 'off'));
  const a = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const b = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const rotated = await s.client.rotateSessionToken(a.session!.id);
  t.false((await s.client.validateSession(a.token)).valid);
  t.true((await s.client.validateSession(rotated.token)).valid);
  await s.client.deleteSession(a.session!.id);
  t.is((await s.client.revokeSessions({ subject: 'alice' })).revokedCount, 1);
  t.false((await s.client.validateSession(b.token)).valid);
});

test.serial('a row no sessiond wrote is INTERNAL for its reader, with the row named in the log, and every other session is still served', async (t) => {
  const db = await newDatabase(cluster, 'corrupt');
  const s = await serverOn(t, cluster, db);
  const bad = await s.client.createSession({ serverId: 'web', subject: 'alice' });
  const good = await s.client.createSession({ serverId: 'web', subject: 'bob' });
  await onDatabase(cluster, db, (sql) => sql.unsafe(`UPDATE sessions SET attributes = 'not json' WHERE id = '${bad.session!.id}'`));
  const err = await failure(s.client.getSession(bad.session!.id));
  t.is(err.code, status.INTERNAL);
  t.true(s.logs.some((l) => JSON.stringify(l).includes(`stored session ${bad.session!.id}`) && JSON.stringify(l).includes('attributes are not JSON')));
  await onDatabase(cluster, db, (sql) => sql.unsafe(`UPDATE sessions SET attributes = '[1]', expire_time = 9e15 WHERE id = '${bad.session!.id}'`));
  t.is((await failure(s.client.validateSession(bad.token))).code, status.INTERNAL);
  t.true((await s.client.validateSession(good.token)).valid);
});
