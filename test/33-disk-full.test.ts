import { revocationReservePages } from '../src/storage/sqlite/pragmas';
import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SessiondClient, ServingStatus } from '../src/client/client';
import { loadConfig, ConfigError } from '../src/server/config';
import { StorageFullError } from '../src/domain/errors';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { integrityCheck } from './helpers/crash-workload';
import { heartbeatsWritten } from './helpers/heartbeat';
import { hashOf, record } from './helpers/repository-contract';
import { runServerToExit, spawnServer, type ServerProcess } from './helpers/process';

/*
 * A full disk, made real by --max-db-size (PRAGMA
 * max_page_count: SQLite answers SQLITE_FULL exactly as for ENOSPC). A real
 * server process on a real file: writes past the limit get RESOURCE_EXHAUSTED
 * and write nothing, reads and health go on, and writes resume once purged
 * sessions give pages back, without a restart.
 */

const LIMIT = 256 * 1024;

interface Full {
  server: ServerProcess;
  client: SessiondClient;
  dbPath: string;
  keepers: { id: string; token: string; etag: string }[];
  fillers: string[];
}

function dir(t: ExecutionContext): string {
  const d = mkdtempSync(join(tmpdir(), 'sessiond-full-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const codeOf = (p: Promise<unknown>): Promise<status> => p.then(() => status.OK, (e: ServiceError) => e.code);

async function liveCount(client: SessiondClient, subject: string): Promise<number> {
  let n = 0;
  for await (const s of client.listAllSessions({ serverId: 'full', subject })) n += s.subject === subject ? 1 : 0;
  return n;
}

/** A server with a 256 KiB limit, five small "keeper" sessions, then fillers until not even an empty session fits. */
async function fillUp(t: ExecutionContext, dbPath: string): Promise<Full> {
  const server = await spawnServer({ SESSIOND_DB_PATH: dbPath, SESSIOND_MAX_DB_SIZE: '256KiB', SESSIOND_SWEEP_INTERVAL: '1h', SESSIOND_HEALTH_PROBE_INTERVAL: '100ms' });
  const client = new SessiondClient(server.address, { defaultDeadlineMs: 20_000 });
  t.teardown(() => {
    client.close();
    if (server.proc.exitCode === null && server.proc.signalCode === null) server.proc.kill('SIGKILL');
  });
  const keepers = [];
  for (let i = 0; i < 5; i++) {
    const r = await client.createSession({ serverId: 'full', subject: 'keeper', attributes: { i: String(i) } });
    keepers.push({ id: r.session!.id, token: r.token, etag: r.session!.etag });
  }
  const fillers: string[] = [];
  const errors: string[] = [];
  // Big rows first, then ever smaller ones, so that the last pages are used up too.
  for (const size of [3000, 1000, 300, 50, 0]) {
    for (;;) {
      try {
        const r = await client.createSession({ serverId: 'full', subject: 'filler', attributes: size > 0 ? { pad: 'f'.repeat(size) } : {} });
        fillers.push(r.session!.id);
      } catch (err) {
        const e = err as ServiceError;
        errors.push(`${status[e.code]}: ${e.details}`);
        break;
      }
      if (fillers.length > 10_000) throw new Error('the limit never hit');
    }
  }
  t.deepEqual([...new Set(errors)], ['RESOURCE_EXHAUSTED: storage is full: the write was not applied'], 'every refused create got RESOURCE_EXHAUSTED, never INTERNAL');
  return { server, client, dbPath, keepers, fillers };
}

test.serial('at --max-db-size: RESOURCE_EXHAUSTED and nothing written; reads, health and the process go on; purging gives room back and writes resume without a restart', async (t) => {
  const f = await fillUp(t, join(dir(t), 'sessions.db'));
  const { client } = f;
  t.log(`${f.fillers.length} fillers filled 256 KiB`);
  const full = await client.getStorageStatus();
  t.is(full.maxDatabaseBytes, LIMIT, 'GetStorageStatus reports the limit as SQLite applies it');
  // Creates stop short of the limit by the revocation reserve: a full database must still revoke, and each revocation writes its event.
  const reserve = revocationReservePages(LIMIT / full.pageSize) * full.pageSize;
  t.is(full.pageCount * full.pageSize, LIMIT - reserve, 'the database is at its limit for creates');
  t.is(full.freelistCount, 0);
  const liveBefore = full.liveSessions;

  // A refused create leaves nothing behind: no row, no count.
  for (const attributes of [{}, { pad: 'y'.repeat(2000) }] as Record<string, string>[]) {
    const err = await t.throwsAsync(client.createSession({ serverId: 'full', subject: 'refused', attributes })) as ServiceError;
    t.is(err.code, status.RESOURCE_EXHAUSTED, err.details);
  }
  t.is(await liveCount(client, 'refused'), 0, 'the refused creates are not stored');
  t.is((await client.getStorageStatus()).liveSessions, liveBefore, 'the session count did not move');

  // An update that needs a new page is refused and leaves the session as it was.
  const k = f.keepers[0]!;
  const grow = await t.throwsAsync(client.updateSession({ id: k.id, attributes: { big: 'z'.repeat(4000) }, etag: k.etag })) as ServiceError;
  t.is(grow.code, status.RESOURCE_EXHAUSTED, grow.details);
  const kept = (await client.getSession(k.id)).session!;
  t.deepEqual(kept.attributes, { i: '0' }, 'the refused update changed nothing');
  t.is(kept.etag, k.etag);

  // Reads and health go on.
  for (const keeper of f.keepers) t.true((await client.validateSession(keeper.token)).valid);
  t.is(await liveCount(client, 'keeper'), 5);
  await heartbeatsWritten(f.dbPath, 3); // a few health probes (each a tiny write) ran at the limit
  t.is((await client.health()).status, ServingStatus.SERVING, 'a full database still serves reads: health stays SERVING');
  t.is(integrityCheck(f.dbPath), 'ok');

  // Room comes back: revoke the fillers (an in-place update that fits) and purge them (pages to the freelist).
  // Revocations work at the limit, each with its event: DeleteSession and RevokeSessions write into the reserve.
  await client.deleteSession(f.fillers[0]!);
  t.is((await client.revokeSessions({ serverId: 'full', subject: 'filler' })).revokedCount, f.fillers.length - 1);
  t.is((await client.purgeExpiredSessions({})).purgedCount, f.fillers.length);
  const freed = await client.getStorageStatus();
  t.true(freed.freelistCount > 20, `purged pages went to the freelist (${freed.freelistCount})`);
  t.true(freed.pageCount * freed.pageSize <= LIMIT, 'the revocations used the reserve at most, and the file did not grow past the limit');
  const events = await client.listSessions({});
  t.true(events.sequence > 0);

  // A burst of concurrent creates at the limit: some fit, the rest are refused, and
  // every acknowledged one is stored (a full disk may roll back the whole
  // group-commit transaction; the units in it must then all fail).
  const burst = await Promise.all(Array.from({ length: 150 }, (_, i) =>
    client.createSession({ serverId: 'full', subject: 'burst', attributes: { pad: 'b'.repeat(1500), i: String(i) } }).then(
      (r) => ({ ok: true as const, id: r.session!.id, token: r.token }),
      (e: ServiceError) => ({ ok: false as const, code: e.code }),
    )));
  const acked = burst.filter((b) => b.ok);
  const refused = burst.filter((b) => !b.ok);
  t.log(`burst: ${acked.length} acknowledged, ${refused.length} refused`);
  t.true(acked.length > 0, 'writes resumed once pages were free, without a restart');
  t.true(refused.length > 0, 'and the burst ran into the limit again');
  t.deepEqual([...new Set(refused.map((r) => status[r.code]))], ['RESOURCE_EXHAUSTED']);
  t.is(await liveCount(client, 'burst'), acked.length, 'exactly the acknowledged creates are stored');
  for (const a of acked) t.true((await client.validateSession(a.token)).valid, 'every acknowledged create validates');

  t.is(integrityCheck(f.dbPath), 'ok');
  t.is(f.server.proc.exitCode, null, 'the process stayed up throughout');
  f.server.proc.kill('SIGTERM');
  t.is(await f.server.exited, 0, 'and shuts down cleanly at the limit (the final checkpoint needs no new page)');
  t.is(integrityCheck(f.dbPath), 'ok');
});

test.serial('restarts on a full database: the same limit starts and refuses writes; a smaller one is refused with a clear message; a larger one lets writes resume', async (t) => {
  const dbPath = join(dir(t), 'sessions.db');
  const f = await fillUp(t, dbPath);
  f.server.proc.kill('SIGTERM');
  t.is(await f.server.exited, 0);

  const same = await spawnServer({ SESSIOND_DB_PATH: dbPath, SESSIOND_MAX_DB_SIZE: '256KiB' });
  const c1 = new SessiondClient(same.address, { defaultDeadlineMs: 20_000 });
  t.is(await codeOf(c1.createSession({ serverId: 'full', subject: 'after-restart' })), status.RESOURCE_EXHAUSTED);
  t.true((await c1.validateSession(f.keepers[1]!.token)).valid);
  c1.close();
  same.proc.kill('SIGTERM');
  t.is(await same.exited, 0);

  const smaller = await runServerToExit({ SESSIOND_DB_PATH: dbPath, SESSIOND_MAX_DB_SIZE: '128KiB' });
  t.not(smaller.code, 0);
  // Filled by creates: the limit's 64 pages but the revocation reserve.
  const pages = 64 - revocationReservePages(64);
  t.regex(smaller.stderr, new RegExp(`cannot open database ${dbPath}: .*max_page_count=32 \\(max-db-size 131072 bytes in 4096-byte pages\\) did not take effect \\(SQLite reports ${pages}\\): the database already has ${pages} pages \\(${pages * 4096} bytes\\); raise max-db-size`));
  t.notRegex(smaller.stderr, /WAL needs a local filesystem/, 'no hint about WAL for a problem that is not about WAL');
  t.false(smaller.stderr.includes('"msg":"serving"'));

  const larger = await spawnServer({ SESSIOND_DB_PATH: dbPath, SESSIOND_MAX_DB_SIZE: '1MiB' });
  const c2 = new SessiondClient(larger.address, { defaultDeadlineMs: 20_000 });
  t.teardown(() => c2.close());
  t.is(await codeOf(c2.createSession({ serverId: 'full', subject: 'after-raise' })), status.OK);
  t.is((await c2.getStorageStatus()).maxDatabaseBytes, 1024 * 1024);
  larger.proc.kill('SIGTERM');
  t.is(await larger.exited, 0);
  t.is(integrityCheck(dbPath), 'ok');
});

test('group commit at the limit: when SQLITE_FULL rolls back the whole batch, every unit in it fails, and exactly the resolved units are stored', async (t) => {
  const d = dir(t);
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path: join(d, 'sessions.db'), maxDbSize: LIMIT });
  t.teardown(async () => {
    await storage.close();
  });
  // Queued in one turn of the event loop: one transaction, one savepoint per unit.
  const ran = new Set<number>();
  const units = Array.from({ length: 200 }, (_, i) => {
    const s = record({ attributes: { pad: 'g'.repeat(1500), i: String(i) } });
    return { s, outcome: storage.writes.run(() => {
      storage.sessions.insert(s, hashOf(s.id));
      ran.add(i);
      return i;
    }).then(() => 'stored' as const, (err: unknown) => err) };
  });
  const outcomes = await Promise.all(units.map((u) => u.outcome));
  const refused = outcomes.filter((o) => o !== 'stored');
  t.true(refused.length > 0 && refused.length < units.length, `${units.length - refused.length} stored, ${refused.length} refused`);
  for (const err of refused) t.true(err instanceof StorageFullError, String(err));
  for (const [i, u] of units.entries()) {
    t.is(storage.sessions.findById(u.s.id) !== undefined, outcomes[i] === 'stored', `unit ${i}: stored exactly when resolved`);
  }
  // SQLite rolled back the whole transaction on SQLITE_FULL (it may): units that had run fine were refused with it.
  t.true([...ran].some((i) => outcomes[i] !== 'stored'), 'the whole-transaction rollback happened and its units were refused');
  t.is(storage.sessions.countSessions(0).live, units.length - refused.length);
});

test('--max-db-size: 0 means no limit (reported as 0); sizes take units; under 64KiB is a configuration problem', (t) => {
  t.is(loadConfig([], {}).config.storage.maxDbSize, 0);
  t.is(loadConfig(['--max-db-size', '2GiB'], {}).config.storage.maxDbSize, 2 * 1024 ** 3);
  t.is(loadConfig([], { SESSIOND_MAX_DB_SIZE: '64KiB' }).config.storage.maxDbSize, 64 * 1024);
  const err = t.throws(() => loadConfig(['--max-db-size=1000'], {}), { instanceOf: ConfigError }) as ConfigError;
  t.true(err.problems.some((p) => /max-db-size 1000 is below 64KiB/.test(p)), err.message);
  const neg = t.throws(() => loadConfig(['--max-db-size=-1'], {}), { instanceOf: ConfigError }) as ConfigError;
  t.true(neg.problems.some((p) => /max-db-size/.test(p)), neg.message);
});
