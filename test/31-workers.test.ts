import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { createServer, type Server } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { ServingStatus, SessiondClient } from '../src/client/client';
import { usableCores } from '../src/server/cores';
import { integrityCheck } from './helpers/crash-workload';
import { EVERYTHING, writePrincipals } from './helpers/principals';
import { runServerToExit, spawnServer, type ServerProcess } from './helpers/process';
import { metricsPortOf, scrape, value } from './helpers/prometheus';
import { waitFor, waitForAsync } from './helpers/wait';
import { clientsOnEvery, connect, workerOf } from './helpers/workers';

/*
 * --workers N: a primary and N node:cluster workers on one port and one
 * SQLite file. Each test starts the real group (node --import tsx src/main.ts)
 * and talks to it through the generated client; a client's connection lands
 * on one worker, which health names (x-sessiond-worker).
 */

const ENV = { SESSIOND_WORKERS: '2', SESSIOND_BUSY_TIMEOUT: '20s', SESSIOND_WAL_AUTOCHECKPOINT: '50' };

interface Group {
  dbPath: string;
  server: ServerProcess;
  /** One client per connection, by the worker slot its connection landed on. */
  bySlot: Map<string, SessiondClient[]>;
}

function dbIn(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-workers-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'sessions.db');
}

async function group(t: ExecutionContext, env: Record<string, string> = {}, apiKey?: string): Promise<Group> {
  const dbPath = dbIn(t);
  const server = await spawnServer({ ...ENV, SESSIOND_DB_PATH: dbPath, ...env });
  t.teardown(() => {
    for (const pid of [server.proc.pid!, ...childPids(server)]) tryKill(pid, 'SIGKILL');
  });
  return { dbPath, server, bySlot: await clientsOnEvery(t, server.address, Number(env['SESSIOND_WORKERS'] ?? ENV.SESSIOND_WORKERS), 2, apiKey) };
}

/** The worker pids the primary announced (its "worker serving" lines), in the order they started. */
function childPids(s: ServerProcess): number[] {
  return [...s.stderr().matchAll(/"pid":(\d+),[^\n]*"msg":"worker serving"/g)].map((m) => Number(m[1]));
}

function tryKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const code = (p: Promise<unknown>): Promise<status> => p.then(() => status.OK, (e: ServiceError) => e.code);

test('--workers refuses what is not a count from 1 to 256 or auto, and a :memory: database, with status 2', async (t) => {
  for (const [workers, extra, problem] of [
    ['0', {}, /workers "0" is not a count from 1 to 256, or auto/],
    ['two', {}, /workers "two" is not a count/],
    ['257', {}, /workers "257" is not a count/],
    ['2', { SESSIOND_DB_PATH: ':memory:' }, /workers above 1 need a database file/],
  ] as const) {
    const r = await runServerToExit({ SESSIOND_WORKERS: workers, SESSIOND_DB_PATH: join(dbIn(t)), ...extra });
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, problem);
  }
});

test('a worker that cannot start fails the start-up with status 1, and no worker is left', async (t) => {
  const taken: Server = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  const r = await runServerToExit({ ...ENV, SESSIOND_DB_PATH: dbIn(t), SESSIOND_LISTEN: `127.0.0.1:${port}` });
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /exited during start-up/);
  const pids = [...r.stderr.matchAll(/"pid":(\d+)/g)].map((m) => Number(m[1]));
  await waitFor(() => pids.every((p) => !alive(p)), 'every process of the group to be gone');
});

test('every worker serves the one file: writes through one are read through the other, and /metrics sums them', async (t) => {
  const g = await group(t, { SESSIOND_METRICS_LISTEN: '127.0.0.1:0' });
  const [one, two] = [g.bySlot.get('1')![0]!, g.bySlot.get('2')![0]!];
  t.is((await workerOf(one)).status, ServingStatus.SERVING);
  const made = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? one : two).createSession({ serverId: 'w', subject: `u-${i}` })));
  for (const [i, m] of made.entries()) {
    const other = i % 2 === 0 ? two : one;
    t.true((await other.validateSession(m.token)).valid, `session ${i} is valid through the other worker`);
  }
  t.is((await two.revokeSessions({ serverId: 'w', subject: 'u-0' })).revokedCount, 1);
  t.false((await one.validateSession(made[0]!.token)).valid, 'a revocation through one worker holds in the other at once');

  const samples = await scrape(metricsPortOf(g.server.stderr()));
  const handled = (method: string) => value(samples, 'grpc_server_handled_total', { grpc_method: method, grpc_code: 'OK' });
  t.is(handled('CreateSession'), 40, 'each create counted once, whichever worker served it');
  t.is(handled('ValidateSession'), 41);
  t.is(value(samples, 'sessiond_sessions', { state: 'live' }), 39, 'the storage gauges come from the primary alone, not once per worker');
  t.is(value(samples, 'sessiond_workers_serving'), 2);
  t.is(value(samples, 'sessiond_workers'), 2);
  t.is(value(samples, 'sessiond_serving'), 1);
  t.is(value(samples, 'sessiond_principals'), 0);
});

test('SIGKILL of the whole group loses no acknowledged write from any worker', async (t) => {
  const g = await group(t);
  const clients = [...g.bySlot.values()].flat();
  const acked: string[] = [];
  let stop = false;
  const writers = clients.map(async (c, k) => {
    for (let i = 0; !stop; i++) {
      try {
        const r = await c.createSession({ serverId: 'crash', subject: `c${k}-${i}` });
        acked.push(r.session!.id);
      } catch {
        return;
      }
    }
  });
  await waitFor(() => acked.length >= 300, '300 acknowledged creates', 60_000);
  const pids = [g.server.proc.pid!, ...childPids(g.server)];
  t.is(pids.length, 3);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  stop = true;
  await Promise.all(writers);
  await waitFor(() => pids.every((p) => !alive(p)), 'the group to be gone');
  t.is(integrityCheck(g.dbPath), 'ok');

  const again = await spawnServer({ SESSIOND_DB_PATH: g.dbPath });
  t.teardown(() => tryKill(again.proc.pid!, 'SIGKILL'));
  const reader = connect(again.address);
  t.teardown(() => reader.close());
  const lost: string[] = [];
  for (const id of acked) if ((await code(reader.getSession(id))) !== status.OK) lost.push(id);
  t.deepEqual(lost, [], `every one of ${acked.length} acknowledged creates is there`);
  again.proc.kill('SIGTERM');
  t.is(await again.exited, 0);
});

test('SIGTERM drains every worker, then the primary truncates the WAL and exits 0', async (t) => {
  const g = await group(t);
  const clients = [...g.bySlot.values()].flat();
  const made = await Promise.all(Array.from({ length: 200 }, (_, i) => clients[i % clients.length]!.createSession({ serverId: 'term', subject: `t-${i}` })));
  t.true(existsSync(`${g.dbPath}-wal`) && statSync(`${g.dbPath}-wal`).size > 0, 'the writes are in the WAL before the shutdown');
  // Calls in flight when the signal arrives are answered: OK, or UNAVAILABLE once a worker stops taking calls.
  const inFlight = Promise.all(made.map((m, i) => code(clients[i % clients.length]!.validateSession(m.token))));
  g.server.proc.kill('SIGTERM');
  t.is(await g.server.exited, 0, g.server.stderr().slice(-3000));
  t.true((await inFlight).every((c) => c === status.OK || c === status.UNAVAILABLE || c === status.CANCELLED));
  const log = g.server.stderr();
  const closed = [...log.matchAll(/"pid":(\d+),[^\n]*"msg":"shutdown: database closed"/g)].map((m) => ({ pid: Number(m[1]), at: m.index! }));
  const primary = g.server.proc.pid!;
  const truncate = log.search(/"msg":"shutdown: checkpoint","checkpoint":\{"mode":"TRUNCATE"/);
  t.true(truncate > 0, 'the primary ran the final TRUNCATE checkpoint');
  t.is(closed.filter((c) => c.pid !== primary && c.at < truncate).length, 2, 'both workers closed their connections before it');
  t.false(existsSync(`${g.dbPath}-wal`) && statSync(`${g.dbPath}-wal`).size > 0, 'the WAL is truncated');
  t.is(integrityCheck(g.dbPath), 'ok');
});

test('a worker that dies is replaced; until it serves, health on the others says NOT_SERVING and why', async (t) => {
  const g = await group(t, { SESSIOND_METRICS_LISTEN: '127.0.0.1:0' });
  const survivor = g.bySlot.get('1')![0]!;
  const victim = await workerOf(g.bySlot.get('2')![0]!);
  const seen: { status: ServingStatus; reason: string | undefined }[] = [];
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const w = await workerOf(survivor).catch(() => undefined);
      if (w && w.slot === '1') seen.push({ status: w.status, reason: w.reason });
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  process.kill(victim.pid, 'SIGKILL');
  await waitFor(() => seen.some((s) => s.status === ServingStatus.NOT_SERVING), 'NOT_SERVING on the surviving worker', 10_000);
  await waitFor(() => seen.at(-1)?.status === ServingStatus.SERVING, 'SERVING again once the new worker serves', 30_000);
  watching = false;
  await watcher;
  t.deepEqual(seen.find((s) => s.status === ServingStatus.NOT_SERVING)?.reason, '1 of 2 workers serving');
  t.true((await survivor.createSession({ serverId: 'r', subject: 'after' })).token.length > 0, 'the survivor served throughout');

  const pids = childPids(g.server);
  t.is(pids.length, 3, 'a third worker started');
  t.false(pids.slice(2).includes(victim.pid));
  const fresh = await clientsOnEvery(t, g.server.address, 2, 1);
  const replaced = await workerOf(fresh.get('2')![0]!);
  t.is(replaced.status, ServingStatus.SERVING);
  t.not(replaced.pid, victim.pid, 'slot 2 is served by a new process');
  t.regex(g.server.stderr(), /"msg":"worker exited; health is NOT_SERVING until it is replaced","slot":2/);
  await waitForAsync(async () => value(await scrape(metricsPortOf(g.server.stderr())), 'sessiond_workers_serving') === 2, 'two workers serving in /metrics');
  const samples = await scrape(metricsPortOf(g.server.stderr()));
  t.is(value(samples, 'sessiond_worker_exits_total'), 1);
});

test('a worker does not outlive its primary, and the file opens after', async (t) => {
  const g = await group(t);
  const c = g.bySlot.get('1')![0]!;
  const made = await c.createSession({ serverId: 'orphan', subject: 's' });
  const workers = childPids(g.server);
  process.kill(g.server.proc.pid!, 'SIGKILL');
  await waitFor(() => workers.every((p) => !alive(p)), 'the workers to exit after the primary was killed', 20_000);
  t.is(integrityCheck(g.dbPath), 'ok');
  const again = await spawnServer({ ...ENV, SESSIOND_DB_PATH: g.dbPath });
  t.teardown(() => tryKill(again.proc.pid!, 'SIGKILL'));
  const reader = connect(again.address);
  t.teardown(() => reader.close());
  t.true((await reader.validateSession(made.token)).valid, 'a group started again on the file serves what was committed');
  again.proc.kill('SIGTERM');
  t.is(await again.exited, 0);
});

test('SIGTERM while the workers are still starting stops the group cleanly', async (t) => {
  const { spawn } = await import('node:child_process');
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: join(__dirname, '..'), env: { ...process.env, ...ENV, SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_DB_PATH: dbIn(t) },
  });
  t.teardown(() => tryKill(proc.pid!, 'SIGKILL'));
  let log = '';
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (c, s) => resolve(c ?? s ?? -1)));
  proc.stdout.resume();
  proc.stderr.on('data', (d: Buffer) => (log += d.toString()));
  // A worker's first line: it runs, and the group does not serve yet.
  await waitFor(() => /"msg":"protected mode/.test(log), 'a worker to be running', 60_000);
  proc.kill('SIGTERM');
  t.is(await exited, 0, log.slice(-3000));
  const pids = [...new Set([...log.matchAll(/"pid":(\d+)/g)].map((m) => Number(m[1])))];
  await waitFor(() => pids.every((p) => !alive(p)), 'every process of the group to be gone');
  t.notRegex(log, /"msg":"serving"/, 'the group never served');
});

test('--workers auto counts the CPUs a cgroup quota allows, on the process\'s cgroup or a parent, v2 or v1', (t) => {
  const fake = (files: Record<string, string>): string => {
    const root = mkdtempSync(join(tmpdir(), 'sessiond-cgroup-'));
    t.teardown(() => rmSync(root, { recursive: true, force: true }));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    return root;
  };
  t.is(usableCores(fake({}), 8), 8, 'no cgroup files: the CPUs');
  t.is(usableCores(fake({ 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/cpu.max': 'max 100000\n' }), 8), 8, 'no quota');
  t.is(usableCores(fake({ 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/cpu.max': '150000 100000\n' }), 8), 2, '1.5 CPUs round up to 2');
  t.is(usableCores(fake({ 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/cpu.max': '1600000 100000\n' }), 8), 8, 'a quota above the CPUs');
  t.is(usableCores(fake({
    'proc/self/cgroup': '0::/kubepods/pod1/c1\n', 'sys/fs/cgroup/kubepods/pod1/cpu.max': '50000 100000', 'sys/fs/cgroup/kubepods/pod1/c1/cpu.max': 'max 100000',
  }), 8), 1, 'a parent\'s quota bounds its children');
  t.is(usableCores(fake({
    'proc/self/cgroup': '4:cpu,cpuacct:/docker/abc\n', 'sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us': '300000', 'sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us': '100000',
  }), 8), 3, 'cgroup v1');
  t.is(usableCores(fake({ 'sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1', 'sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' }), 4), 4, 'v1 without a quota');
});

test('SIGHUP to the primary reloads the principals in every worker', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-workers-keys-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = writePrincipals(dir, [EVERYTHING]);
  const g = await group(t, { SESSIOND_PRINCIPALS_FILE: file.path }, file.keys[EVERYTHING.name]);
  t.regex(g.server.stderr(), /"msg":"serving"[^\n]*"principals":1/, 'the primary names the principals its workers loaded');
  for (const cs of g.bySlot.values()) t.true((await cs[0]!.createSession({ serverId: 'k', subject: 's' })).token.length > 0, 'each worker takes the key');
  g.server.proc.kill('SIGHUP');
  const reloads = () => new Set([...g.server.stderr().matchAll(/"pid":(\d+),[^\n]*"msg":"principals reloaded","reason":"SIGHUP"/g)].map((m) => m[1]));
  await waitFor(() => reloads().size === 2, 'a SIGHUP reload in both workers');
  t.deepEqual([...reloads()].map(Number).sort(), childPids(g.server).sort());
});

test('a worker hands admin checkpoints and purges to the primary, whose checkpoint thread runs them once', async (t) => {
  const g = await group(t, { SESSIOND_METRICS_LISTEN: '127.0.0.1:0', SESSIOND_SWEEP_INTERVAL: '1h' });
  const two = g.bySlot.get('2')![0]!;
  const made = await Promise.all(Array.from({ length: 30 }, (_, i) => two.createSession({ serverId: 'adm', subject: `a-${i % 3}` })));
  t.is((await two.revokeSessions({ serverId: 'adm', subject: 'a-0' })).revokedCount, 10);
  const purged = await two.purgeExpiredSessions({});
  t.is(purged.purgedCount, 10, 'the revoked sessions are purged');
  const cp = await two.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  t.false(cp.busy);
  t.is(cp.walBytes, 0, 'the WAL is truncated');
  t.is(statSync(`${g.dbPath}-wal`).size, 0);
  t.is((await two.getStorageStatus()).lastCheckpoint?.mode, CheckpointMode.CHECKPOINT_MODE_TRUNCATE, 'the worker reports the checkpoint it asked for');
  const primary = g.server.proc.pid!;
  const admin = [...g.server.stderr().matchAll(/"pid":(\d+),[^\n]*"msg":"checkpoint","checkpoint":\{"mode":"TRUNCATE"[^\n]*"trigger":"admin"/g)].map((m) => Number(m[1]));
  t.deepEqual(admin, [primary], 'the primary ran it, and no worker did');
  const samples = await scrape(metricsPortOf(g.server.stderr()));
  t.is(value(samples, 'sessiond_checkpoints_total', { mode: 'TRUNCATE', trigger: 'admin' }), 1, 'counted once');
  for (const m of made.slice(1)) if (m.session!.subject !== 'a-0') t.true((await g.bySlot.get('1')![0]!.validateSession(m.token)).valid);
});
