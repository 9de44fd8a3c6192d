import test, { type ExecutionContext } from 'ava';
import { credentials, loadPackageDefinition, status, type ClientDuplexStream, type ServiceClientConstructor, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HealthCheckResponse_ServingStatus as S, HealthClient, type HealthCheckResponse } from '../generated/grpc/health/v1/health';
import { SessiondClient } from '../src/client/client';
import { spawnServer, type ServerProcess } from './helpers/process';
import { scrape, value, metricsPortOf } from './helpers/prometheus';
import { waitFor, waitForAsync } from './helpers/wait';

/*
 * The shutdown sequence of a real server process (src/main.ts), driven by
 * signals: health NOT_SERVING -> drain in-flight calls -> final TRUNCATE
 * checkpoint -> close, exit 0; a second signal exits at once with 1.
 */

const SHUTDOWN_STEPS = ['shutdown: health NOT_SERVING', 'shutdown: draining in-flight calls', 'shutdown: checkpoint', 'shutdown: database closed'];

function tempDb(t: ExecutionContext): { dir: string; dbPath: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-shutdown-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, dbPath: join(dir, 'sessions.db') };
}

/** Kills the process at teardown if a failed assertion left it running. */
function track(t: ExecutionContext, p: ServerProcess): ServerProcess {
  t.teardown(() => {
    if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
  });
  return p;
}

function logMessages(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => String((JSON.parse(l) as { msg?: unknown }).msg));
}

/** Asserts that the four shutdown steps were logged, once each, in order. */
function assertShutdownOrder(t: ExecutionContext, stderr: string): void {
  const msgs = logMessages(stderr);
  const at = SHUTDOWN_STEPS.map((step) => msgs.indexOf(step));
  for (const [i, step] of SHUTDOWN_STEPS.entries()) {
    t.not(at[i], -1, `"${step}" logged; log was:\n${msgs.join('\n')}`);
    t.is(msgs.filter((m) => m === step).length, 1, `"${step}" logged once`);
  }
  t.deepEqual([...at].sort((a, b) => a - b), at, `shutdown steps in order: ${JSON.stringify(at)}`);
}

function walBytes(dbPath: string): number {
  return existsSync(`${dbPath}-wal`) ? statSync(`${dbPath}-wal`).size : 0;
}

/** `p`, or a rejection naming `what` after `ms`; the timer is cleared either way, so that it does not keep the test process alive. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms)));
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}


interface Outcome {
  group: 'in-flight' | 'racing' | 'late';
  code: status;
  token?: string;
  id?: string;
  details?: string;
}

test('SIGTERM under load: in-flight calls are answered, late calls get UNAVAILABLE, exit 0, WAL gone, every acknowledged session survives a restart', async (t) => {
  const { dbPath } = tempDb(t);
  const env = { SESSIOND_DB_PATH: dbPath, SESSIOND_DRAIN_TIMEOUT: '30s', SESSIOND_BUSY_TIMEOUT: '30s', SESSIOND_METRICS_LISTEN: '127.0.0.1:0' };
  const server = track(t, await spawnServer(env));
  const metrics = metricsPortOf(server.stderr());
  const started = async () => (await value(await scrape(metrics), 'grpc_server_started_total', { grpc_method: 'CreateSession' })) ?? 0;
  // Several connections, as a fleet of backends would have.
  const clients = Array.from({ length: 4 }, () =>
    new SessiondClient(server.address, { defaultDeadlineMs: 30_000, channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }),
  );
  t.teardown(() => clients.forEach((c) => c.close()));
  await Promise.all(clients.map((c) => c.createSession({ serverId: 'warm-up' })));

  const outcomes: Outcome[] = [];
  const start = (group: Outcome['group'], i: number): Promise<void> =>
    clients[i % clients.length]!.createSession({ serverId: 'load', subject: `${group}-${i}` }).then(
      (r) => void outcomes.push({ group, code: status.OK, token: r.token, id: r.session!.id }),
      (e: ServiceError) => void outcomes.push({ group, code: e.code, details: e.details }),
    );

  // Calls that stay in flight for as long as we like: another connection holds
  // the write lock, so the server's commits wait (on a timer, not blocking).
  const locker = new Database(dbPath);
  locker.exec('BEGIN IMMEDIATE');
  let lockHeld = true;
  t.teardown(() => {
    if (lockHeld) locker.exec('ROLLBACK');
    locker.close();
  });
  const calls: Promise<void>[] = [];
  for (let i = 0; i < 200; i++) calls.push(start('in-flight', i));
  // The server has taken all 200 (and the warm-ups), and none can commit while the lock is held.
  await waitForAsync(async () => (await started()) >= 4 + 200, 'the server to start the 200 calls');
  t.is(outcomes.length, 0, 'the first 200 calls are still in flight when SIGTERM is sent');

  server.proc.kill('SIGTERM');
  // Calls racing the signal: accepted before the listener closed, or refused.
  for (let i = 200; i < 250; i++) calls.push(start('racing', i));
  await waitFor(() => server.stderr().includes('shutdown: draining in-flight calls'), 'the drain to start');
  // Calls after the listener closed: refused cleanly on the draining connections.
  for (let i = 250; i < 300; i++) calls.push(start('late', i));
  // Their refusals come while the drain waits on the lock.
  await waitFor(() => outcomes.filter((o) => o.group === 'late').length === 50, 'the late calls to be answered');
  t.is(server.proc.exitCode, null, 'the process waits for the in-flight calls');
  t.false(outcomes.some((o) => o.group === 'in-flight'), 'in-flight calls were neither answered nor cancelled during the drain');

  locker.exec('ROLLBACK');
  lockHeld = false;
  await within(Promise.all(calls), 20_000, 'answering every call');
  const code = await within(server.exited, 20_000, 'the exit');

  // Every call was answered, with OK or a clean UNAVAILABLE.
  t.is(outcomes.length, 300);
  const count = (group: Outcome['group'], c: status) => outcomes.filter((o) => o.group === group && o.code === c).length;
  const other = outcomes.filter((o) => o.code !== status.OK && o.code !== status.UNAVAILABLE);
  t.deepEqual(other, [], 'no call ended with anything but OK or UNAVAILABLE');
  t.is(count('in-flight', status.OK), 200, 'every call in flight at SIGTERM was completed by the drain');
  t.is(count('late', status.UNAVAILABLE), 50, 'every call after the listener closed was refused with UNAVAILABLE');
  t.log(`racing calls: ${count('racing', status.OK)} OK, ${count('racing', status.UNAVAILABLE)} UNAVAILABLE`);
  t.is(count('racing', status.OK) + count('racing', status.UNAVAILABLE), 50);

  t.is(code, 0, `exit code; stderr:\n${server.stderr()}`);
  t.is(walBytes(dbPath), 0, 'the -wal file is gone or empty after a clean exit');
  assertShutdownOrder(t, server.stderr());
  t.regex(server.stderr(), /"msg":"shutdown: checkpoint","checkpoint":\{"mode":"TRUNCATE"/, 'the final checkpoint is TRUNCATE');

  // Restart on the same file: every acknowledged session is there and validates.
  const again = track(t, await spawnServer(env));
  const client = new SessiondClient(again.address, { defaultDeadlineMs: 30_000 });
  t.teardown(() => client.close());
  const acked = outcomes.filter((o) => o.code === status.OK);
  const results = await Promise.all(acked.map((o) => client.validateSession(o.token!)));
  t.is(results.filter((r) => r.valid && acked.some((o) => o.id === r.session?.id)).length, acked.length, 'every acknowledged token validates');
  const stored: string[] = [];
  for await (const s of client.listAllSessions({ serverId: 'load' })) stored.push(s.id);
  t.deepEqual(stored.sort(), acked.map((o) => o.id!).sort(), 'exactly the acknowledged sessions are stored: nothing refused was written');
  again.proc.kill('SIGTERM');
  t.is(await within(again.exited, 20_000, 'the second exit'), 0);
});

test('a Watch stream open at SIGTERM receives NOT_SERVING, then ends cleanly, before the process exits 0', async (t) => {
  const { dbPath } = tempDb(t);
  const server = track(t, await spawnServer({ SESSIOND_DB_PATH: dbPath }));
  const health = new HealthClient(server.address, credentials.createInsecure());
  t.teardown(() => health.close());
  const watches = ['', 'sessions.v1.SessionService'].map((service) => {
    const seen: S[] = [];
    const stream = health.watch({ service });
    stream.on('data', (r: HealthCheckResponse) => seen.push(r.status));
    stream.on('error', () => undefined);
    const ended = new Promise<StatusObject>((resolve) => stream.on('status', resolve));
    return { service, seen, ended };
  });
  await waitFor(() => watches.every((w) => w.seen.length === 1), 'the first Watch messages');

  server.proc.kill('SIGTERM');
  const finals = await within(Promise.all(watches.map((w) => w.ended)), 10_000, 'the Watch streams to end');
  for (const [i, w] of watches.entries()) {
    t.deepEqual(w.seen, [S.SERVING, S.NOT_SERVING], `Watch(${JSON.stringify(w.service)}): SERVING, then NOT_SERVING before the end`);
    t.is(finals[i]!.code, status.OK, `Watch(${JSON.stringify(w.service)}) ended by the server, not cut off: ${finals[i]!.details}`);
  }
  t.is(await within(server.exited, 10_000, 'the exit'), 0);
  assertShutdownOrder(t, server.stderr());
});

/**
 * A server-reflection stream left open: the server does not end these at
 * shutdown (only Watch streams are), so it is an honest call that keeps the
 * drain waiting, the way a grpcurl session or any long stream would.
 */
function openReflectionStream(address: string): { stream: ClientDuplexStream<object, object>; ended: Promise<StatusObject>; close(): void } {
  const proto = join(__dirname, '..', 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');
  const pkg = loadPackageDefinition(loadSync(proto, { keepCase: true })) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: ServiceClientConstructor } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(address, credentials.createInsecure());
  const stream = (client as unknown as { ServerReflectionInfo(): ClientDuplexStream<object, object> }).ServerReflectionInfo();
  stream.on('error', () => undefined);
  const ended = new Promise<StatusObject>((resolve) => stream.on('status', resolve));
  return { stream, ended, close: () => client.close() };
}

async function reflectionAnswers(r: ReturnType<typeof openReflectionStream>): Promise<void> {
  const answered = new Promise((resolve) => r.stream.once('data', resolve));
  r.stream.write({ list_services: '*' });
  await within(answered, 10_000, 'a reflection answer');
}

test('a second signal during a long drain exits at once with code 1; acknowledged writes survive it', async (t) => {
  const { dbPath } = tempDb(t);
  const env = { SESSIOND_DB_PATH: dbPath, SESSIOND_DRAIN_TIMEOUT: '30s' };
  const server = track(t, await spawnServer(env));
  const client = new SessiondClient(server.address, { defaultDeadlineMs: 10_000 });
  t.teardown(() => client.close());
  const created = await client.createSession({ serverId: 'web-1', subject: 'before-the-signal' });

  const reflection = openReflectionStream(server.address);
  t.teardown(() => reflection.close());
  await reflectionAnswers(reflection);

  server.proc.kill('SIGTERM');
  await waitFor(() => server.stderr().includes('shutdown: draining in-flight calls'), 'the drain to start');
  // New calls are refused while draining.
  const late = await t.throwsAsync<ServiceError>(client.createSession({ serverId: 'web-1' }, { deadlineMs: 5000 }));
  t.is(late?.code, status.UNAVAILABLE);
  // Without the stream the drain would be over, and the exit code below 0, not 1.
  t.is(server.proc.exitCode, null, 'the open stream holds the drain (30 s deadline)');
  t.false(server.stderr().includes('shutdown: sweep and health probe stopped'), 'the drain has not ended');

  const sent = Date.now();
  server.proc.kill('SIGTERM');
  const code = await within(server.exited, 5_000, 'the forced exit');
  t.is(code, 1, 'a forced exit is not a clean one');
  t.true(Date.now() - sent < 5_000);
  t.regex(server.stderr(), /"msg":"second signal: exiting now","signal":"SIGTERM"/);
  t.false(logMessages(server.stderr()).includes('shutdown: database closed'), 'the sequence was cut short');
  const final = await within(reflection.ended, 5_000, 'the reflection stream to end');
  t.not(final.code, status.OK, 'the held stream was cut off, not completed');

  // No checkpoint ran, yet what was acknowledged is in the WAL and survives.
  const again = track(t, await spawnServer(env));
  const c2 = new SessiondClient(again.address, { defaultDeadlineMs: 10_000 });
  t.teardown(() => c2.close());
  const v = await c2.validateSession(created.token);
  t.true(v.valid);
  t.is(v.session?.id, created.session?.id);
  again.proc.kill('SIGTERM');
  t.is(await within(again.exited, 20_000, 'the exit after restart'), 0);
  t.is(walBytes(dbPath), 0);
});

test('the drain deadline cancels a call that does not finish, and the shutdown still checkpoints and exits 0', async (t) => {
  const { dbPath } = tempDb(t);
  const server = track(t, await spawnServer({ SESSIOND_DB_PATH: dbPath, SESSIOND_DRAIN_TIMEOUT: '1s' }));
  const client = new SessiondClient(server.address, { defaultDeadlineMs: 10_000 });
  t.teardown(() => client.close());
  await client.createSession({ serverId: 'web-1' });
  const reflection = openReflectionStream(server.address);
  t.teardown(() => reflection.close());
  await reflectionAnswers(reflection);

  const sent = Date.now();
  server.proc.kill('SIGTERM');
  const code = await within(server.exited, 10_000, 'the exit');
  const took = Date.now() - sent;
  t.is(code, 0);
  t.true(took >= 900, `the drain waited for its deadline (${took} ms)`);
  const msgs = logMessages(server.stderr());
  t.true(msgs.includes('shutdown: drain deadline passed; cancelled the calls still running'));
  t.true(msgs.indexOf('shutdown: drain deadline passed; cancelled the calls still running') < msgs.indexOf('shutdown: checkpoint'));
  assertShutdownOrder(t, server.stderr());
  t.not((await within(reflection.ended, 5_000, 'the reflection stream to end')).code, status.OK);
  t.is(walBytes(dbPath), 0);
});
