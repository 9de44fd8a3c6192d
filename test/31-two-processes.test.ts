import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SessiondClient } from '../src/client/client';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { integrityCheck } from './helpers/crash-workload';
import { spawnServer, type ServerProcess } from './helpers/process';
import { waitFor } from './helpers/wait';

/*
 * Two server processes on one database file. Decision: both
 * serve. Every write is BEGIN IMMEDIATE (one writer at a time across
 * processes, waits on a timer up to the busy timeout), etags and request ids
 * are checked inside that write transaction against the latest commit, a
 * unique index backs the request id, and each process runs its own
 * checkpoint worker. These tests hold the two processes to that.
 */

const ENV = {
  SESSIOND_BUSY_TIMEOUT: '20s',
  // Small, so that both checkpoint workers run (and meet) during the test.
  SESSIOND_WAL_AUTOCHECKPOINT: '50',
  SESSIOND_SWEEP_INTERVAL: '1s',
};

interface Pair {
  dbPath: string;
  a: SessiondClient;
  b: SessiondClient;
  servers: ServerProcess[];
}

/** Two servers started at the same moment on one fresh file (a creation and migration race). */
async function pair(t: ExecutionContext): Promise<Pair> {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-two-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const dbPath = join(dir, 'sessions.db');
  const servers = await Promise.all([spawnServer({ ...ENV, SESSIOND_DB_PATH: dbPath }), spawnServer({ ...ENV, SESSIOND_DB_PATH: dbPath })]);
  const [a, b] = servers.map((s) => new SessiondClient(s.address, { defaultDeadlineMs: 30_000, channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }));
  t.teardown(() => {
    a!.close();
    b!.close();
    for (const s of servers) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  });
  return { dbPath, a: a!, b: b!, servers };
}

/** SIGTERM both; both exit 0 and the file passes integrity_check. */
async function stopBoth(t: ExecutionContext, p: Pair): Promise<void> {
  for (const s of p.servers) s.proc.kill('SIGTERM');
  const codes = await Promise.all(p.servers.map((s) => s.exited));
  t.deepEqual(codes, [0, 0], `both exit cleanly:\n${p.servers.map((s) => s.stderr().slice(-1500)).join('\n---\n')}`);
  t.is(integrityCheck(p.dbPath), 'ok');
}

const code = (p: Promise<unknown>): Promise<status> => p.then(() => status.OK, (e: ServiceError) => e.code);

/** Whether another process can take the write lock right now (busy timeout 0). */
function otherProcessCanWrite(dbPath: string): string {
  const script = `const D = require('better-sqlite3'); const db = new D(${JSON.stringify(dbPath)}, { timeout: 0 });
    try { db.exec('BEGIN IMMEDIATE'); db.exec('ROLLBACK'); console.log('got the write lock'); } catch (e) { console.log(e.code); }`;
  return spawnSync(process.execPath, ['-e', script], { cwd: join(__dirname, '..'), encoding: 'utf8' }).stdout.trim();
}

test.serial('reading the WAL index (storage status, health metadata) keeps this process\'s SQLite locks', async (t) => {
  // Closing any descriptor of the -shm drops every POSIX lock the process holds
  // on it: reading the index with open-read-close let a second process write
  // while this one held the write lock, and commits were lost.
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-two-'));
  const dbPath = join(dir, 'sessions.db');
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path: dbPath });
  t.teardown(async () => {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const seen = await storage.writes.run(() => {
    // Inside the write transaction: this process holds the WAL write lock.
    const before = otherProcessCanWrite(dbPath);
    storage.walSnapshot();
    storage.status();
    storage.walSnapshot();
    return [before, otherProcessCanWrite(dbPath)];
  });
  t.deepEqual(seen, ['SQLITE_BUSY', 'SQLITE_BUSY'], 'the lock held before reading the index is still held after');
  t.is(otherProcessCanWrite(dbPath), 'got the write lock', 'and it is released with the transaction');
});

test.serial('both start at once on a fresh file; concurrent writes through both lose nothing, and each sees the other\'s writes at once', async (t) => {
  const p = await pair(t);
  const { a, b } = p;
  const via = (i: number) => (i % 2 === 0 ? a : b);
  const other = (i: number) => (i % 2 === 0 ? b : a);

  // Health checks read the WAL index (-shm) on every call: they run all along,
  // because reading it once dropped the process's SQLite locks (see wal-index.ts).
  let probing = true;
  const probes = [a, b].map(async (c) => {
    while (probing) await c.health();
  });
  t.teardown(() => {
    probing = false;
  });

  // Creates through both at once, then each session updated through the other process, a quarter deleted.
  const created = await Promise.all(Array.from({ length: 200 }, (_, i) =>
    via(i).createSession({ serverId: 'two', subject: `u-${i}`, attributes: { by: i % 2 === 0 ? 'a' : 'b', n: String(i) } })));
  const updated = await Promise.all(created.map((c, i) =>
    other(i).updateSession({ id: c.session!.id, attributes: { by: i % 2 === 0 ? 'b' : 'a', n: String(i), step: 'updated' }, etag: c.session!.etag })));
  const deleted = new Set<string>();
  await Promise.all(created.map(async (c, i) => {
    if (i % 4 !== 3) return;
    await via(i + 1).deleteSession(c.session!.id);
    deleted.add(c.session!.id);
  }));
  t.is(deleted.size, 50);
  probing = false;
  await Promise.all(probes);

  // Both processes list exactly the same live sessions, with the updates applied.
  const expected = new Map(created.filter((c) => !deleted.has(c.session!.id)).map((c) => [c.session!.id, c]));
  for (const [name, client] of [['a', a], ['b', b]] as const) {
    const listed = new Map<string, { attributes: Record<string, string>; etag: string }>();
    for await (const s of client.listAllSessions({ serverId: 'two' })) listed.set(s.id, s);
    t.deepEqual([...listed.keys()].sort(), [...expected.keys()].sort(), `process ${name} lists every acknowledged create that was not deleted`);
    for (const [i, u] of updated.entries()) {
      const s = listed.get(u.session!.id);
      if (s) {
        t.is(s.attributes.step, 'updated', `process ${name} sees the update of session ${i}`);
        t.is(s.etag, u.session!.etag);
      }
    }
  }
  for (const id of deleted) {
    t.is(await code(a.getSession(id)), status.NOT_FOUND);
    t.is(await code(b.getSession(id)), status.NOT_FOUND);
  }

  // Read-your-writes across processes: no cache stands between a process and the file.
  for (let i = 0; i < 30; i++) {
    const [w, r] = i % 2 === 0 ? [a, b] : [b, a];
    const c = await w.createSession({ serverId: 'ryw', subject: `r-${i}` });
    const v = await r.validateSession(c.token);
    t.true(v.valid && v.session?.id === c.session!.id, 'the other process validates a token the moment the create is acknowledged');
    const u = await r.updateSession({ id: c.session!.id, attributes: { seen: 'yes' } });
    t.is((await w.getSession(c.session!.id)).session!.etag, u.session!.etag, 'and the writer sees the other process\'s update at once');
    await w.deleteSession(c.session!.id);
    t.false((await r.validateSession(c.token)).valid, 'and the other process sees the delete at once');
  }
  await stopBoth(t, p);
});

test.serial('etag conflicts across processes are detected: of two updates with one etag, exactly one wins', async (t) => {
  const p = await pair(t);
  const { a, b } = p;
  const c = await a.createSession({ serverId: 'etag', subject: 'x', attributes: { v: '0' } });
  const id = c.session!.id;
  const e0 = c.session!.etag;
  const u1 = await b.updateSession({ id, attributes: { v: 'b' }, etag: e0 });
  const stale = await t.throwsAsync(a.updateSession({ id, attributes: { v: 'a' }, etag: e0 })) as ServiceError;
  t.is(stale.code, status.FAILED_PRECONDITION, stale.details);
  t.deepEqual((await a.getSession(id)).session!.attributes, { v: 'b' }, 'the stale update changed nothing');
  t.is((await a.getSession(id)).session!.etag, u1.session!.etag);

  // Races: both processes update with the same etag at the same moment.
  let etag = u1.session!.etag;
  const wins = { a: 0, b: 0 };
  for (let round = 0; round < 40; round++) {
    const [ra, rb] = await Promise.all([
      a.updateSession({ id, attributes: { v: `a-${round}` }, etag }).then((r) => r, (e: ServiceError) => e),
      b.updateSession({ id, attributes: { v: `b-${round}` }, etag }).then((r) => r, (e: ServiceError) => e),
    ]);
    const ok = [ra, rb].filter((r) => !(r instanceof Error));
    const failed = [ra, rb].filter((r) => r instanceof Error) as ServiceError[];
    t.is(ok.length, 1, `round ${round}: exactly one update wins (${failed.map((f) => status[f.code]).join(', ')})`);
    t.deepEqual(failed.map((f) => f.code), [status.FAILED_PRECONDITION], `round ${round}: the loser gets FAILED_PRECONDITION`);
    const winner = ok[0] as Exclude<typeof ra, Error>;
    if (winner === ra) wins.a++;
    else wins.b++;
    const stored = (await b.getSession(id)).session!;
    t.deepEqual(stored.attributes, winner.session!.attributes, `round ${round}: the winner's attributes are stored`);
    etag = stored.etag;
  }
  t.log(`wins: ${JSON.stringify(wins)}`);
  await stopBoth(t, p);
});

test.serial('a request_id used on both processes at once creates one session: the other call gets ALREADY_EXISTS', async (t) => {
  const p = await pair(t);
  const { a, b } = p;
  const N = 60;
  const outcomes = await Promise.all(Array.from({ length: N }, async (_, i) => {
    const req = { serverId: 'idem', subject: `rid-${i}`, requestId: `req-${i}` };
    const [ra, rb] = await Promise.all([code(a.createSession(req)), code(b.createSession(req))]);
    return [ra, rb].sort();
  }));
  for (const [i, o] of outcomes.entries()) t.deepEqual(o, [status.OK, status.ALREADY_EXISTS].sort(), `request ${i}: one OK, one ALREADY_EXISTS`);
  const subjects: string[] = [];
  for await (const s of a.listAllSessions({ serverId: 'idem' })) subjects.push(s.subject);
  t.is(subjects.length, N, 'one session per request id, none duplicated');
  t.is(new Set(subjects).size, N);

  // A retry on the same process repeats the answer; on the other process it is refused.
  const first = await a.createSession({ serverId: 'idem', subject: 'retry', requestId: 'retry-1' });
  const again = await a.createSession({ serverId: 'idem', subject: 'retry', requestId: 'retry-1' });
  t.is(again.session!.id, first.session!.id);
  t.is(again.token, first.token);
  const elsewhere = await t.throwsAsync(b.createSession({ serverId: 'idem', subject: 'retry', requestId: 'retry-1' })) as ServiceError;
  t.is(elsewhere.code, status.ALREADY_EXISTS);
  t.regex(elsewhere.details, new RegExp(`already created session ${first.session!.id}`));
  await stopBoth(t, p);
});

test.serial('one of the two is SIGKILLed under load: the other keeps serving without an error, and nothing acknowledged is lost', async (t) => {
  const p = await pair(t);
  const { a, b } = p;
  const acked: { id: string; token: string; by: string }[] = [];
  const failures: string[] = [];
  let stop = false;
  let killedA = false;
  const loop = async (client: SessiondClient, name: string) => {
    for (let i = 0; !stop; i++) {
      try {
        const r = await client.createSession({ serverId: 'kill', subject: `${name}-${i}` });
        acked.push({ id: r.session!.id, token: r.token, by: name[0]! });
      } catch (err) {
        // Calls to the killed process fail; calls to the survivor must not.
        if (name.startsWith('b') || !killedA) failures.push(`${name}: ${status[(err as ServiceError).code]} ${(err as ServiceError).details}`);
        if (name.startsWith('a') && killedA) return;
      }
    }
  };
  const loops = [...['a1', 'a2', 'a3'].map((n) => loop(a, n)), ...['b1', 'b2', 'b3'].map((n) => loop(b, n))];
  // Both processes are writing when A is killed, and B goes on writing after it.
  const bySurvivor = () => acked.filter((x) => x.by === 'b').length;
  await waitFor(() => acked.some((x) => x.by === 'a') && bySurvivor() >= 10, 'creates through both processes');
  killedA = true;
  p.servers[0]!.proc.kill('SIGKILL');
  await p.servers[0]!.exited;
  const survivorAtKill = bySurvivor();
  await waitFor(() => bySurvivor() >= survivorAtKill + 20, 'creates through the survivor after the kill');
  stop = true;
  await Promise.all(loops);
  t.deepEqual(failures, [], 'the survivor answered every call');
  t.true(acked.length > 20, `${acked.length} creates acknowledged`);

  const again = await spawnServer({ ...ENV, SESSIOND_DB_PATH: p.dbPath });
  p.servers[0] = again;
  const a2 = new SessiondClient(again.address, { defaultDeadlineMs: 30_000 });
  t.teardown(() => a2.close());
  const listed = new Set<string>();
  for await (const s of a2.listAllSessions({ serverId: 'kill' })) listed.add(s.id);
  t.deepEqual(acked.map((x) => x.id).filter((id) => !listed.has(id)), [], 'every acknowledged create is there after the restart');
  for (const x of acked.slice(-20)) t.true((await b.validateSession(x.token)).valid);
  await stopBoth(t, p);
});
