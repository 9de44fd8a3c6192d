import test, { type ExecutionContext } from 'ava';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { Agent, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { HealthClient } from '../generated/grpc/health/v1/health';
import { ConfigError, loadConfig } from '../src/server/config';
import { rejectsWithCode } from './helpers/grpc';
import { httpGet, scrape, value, type Sample } from './helpers/prometheus';
import { frame, RawGrpc } from './helpers/raw-grpc';
import { startTestServer, tempDir, type TestServer } from './helpers/server';

/*
 * The Prometheus endpoint (--metrics-listen), scraped over HTTP after real
 * calls on a real server: RPCs by method and code (unary, streaming, every
 * service), sessions, WAL and database sizes, checkpoints by mode and
 * trigger, sweeps, and the default process metrics.
 */

async function metricsServer(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer & { port: number }> {
  const s = await startTestServer({ env: { SESSIOND_METRICS_LISTEN: '127.0.0.1:0', ...env } });
  t.teardown(() => s.close());
  t.truthy(s.app.metricsPort, 'the metrics endpoint is bound');
  return Object.assign(s, { port: s.app.metricsPort! });
}

const rpc = (service: string, method: string, extra: Record<string, string> = {}) => ({ grpc_service: service, grpc_method: method, ...extra });
const SESSIONS = 'sessions.v1.SessionService';

/** Scrapes until `ready` holds (metrics of calls that end asynchronously). */
async function scrapeUntil(port: number, ready: (s: Sample[]) => boolean, what: string, ms = 10_000): Promise<Sample[]> {
  const until = Date.now() + ms;
  for (;;) {
    const samples = await scrape(port);
    if (ready(samples)) return samples;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('RPC counts, codes and latencies for unary and streaming calls of every service', async (t) => {
  const s = await metricsServer(t);
  const tokens: string[] = [];
  for (let i = 0; i < 5; i++) tokens.push((await s.client.createSession({ serverId: 'web-1', subject: `user-${i}` })).token);
  await rejectsWithCode(t, s.client.createSession({ serverId: '' }), status.INVALID_ARGUMENT);
  await rejectsWithCode(t, s.client.createSession({ serverId: '' }), status.INVALID_ARGUMENT);
  await s.client.health('');
  // A bidirectional stream: three requests, three answers, one status.
  const validator = s.client.openValidator();
  for (const token of tokens.slice(0, 3)) t.true((await validator.validate(token)).valid);
  validator.close();
  // A request that does not decode is answered by an interceptor, before any handler: counted too.
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());
  t.is((await raw.call(`/${SESSIONS}/GetSession`, frame(Buffer.from([0xff, 0xff])))).code, status.INVALID_ARGUMENT);

  const samples = await scrapeUntil(s.port, (x) => value(x, 'grpc_server_handled_total', rpc(SESSIONS, 'ValidateSessionStream')) !== undefined, 'the stream to end');

  const handled = (service: string, method: string, code: string) => value(samples, 'grpc_server_handled_total', rpc(service, method, { grpc_code: code }));
  t.is(handled(SESSIONS, 'CreateSession', 'OK'), 5, 'one OK per successful CreateSession');
  t.is(handled(SESSIONS, 'CreateSession', 'INVALID_ARGUMENT'), 2);
  t.is(value(samples, 'grpc_server_started_total', rpc(SESSIONS, 'CreateSession')), 7);
  t.is(value(samples, 'grpc_server_handling_seconds_count', rpc(SESSIONS, 'CreateSession', { grpc_code: 'OK' })), 5);
  t.is(value(samples, 'grpc_server_handling_seconds_bucket', rpc(SESSIONS, 'CreateSession', { grpc_code: 'OK', le: '+Inf' })), 5);
  t.true(value(samples, 'grpc_server_handling_seconds_sum', rpc(SESSIONS, 'CreateSession', { grpc_code: 'OK' }))! > 0);
  t.is(value(samples, 'grpc_server_handled_total', rpc(SESSIONS, 'CreateSession', { grpc_code: 'OK' }))!, 5);
  t.is(samples.find((x) => x.name === 'grpc_server_handled_total' && x.labels['grpc_method'] === 'CreateSession')?.labels['grpc_type'], 'unary');
  t.is(handled('grpc.health.v1.Health', 'Check', 'OK'), 1, 'health calls are counted too');
  t.is(handled(SESSIONS, 'GetSession', 'INVALID_ARGUMENT'), 1, 'a request rejected by the decoding interceptor is counted with its code');

  const stream = rpc(SESSIONS, 'ValidateSessionStream', { grpc_type: 'bidi_stream' });
  t.is(value(samples, 'grpc_server_handled_total', { ...stream, grpc_code: 'OK' }), 1);
  t.is(value(samples, 'grpc_server_msg_received_total', stream), 3);
  t.is(value(samples, 'grpc_server_msg_sent_total', stream), 3);

  t.is(value(samples, 'sessiond_sessions', { state: 'live' }), 5);
  t.is(value(samples, 'sessiond_sessions', { state: 'expired' }), 0);
  t.is(value(samples, 'sessiond_serving'), 1);
  t.true(value(samples, 'sessiond_wal_frames')! > 0, 'writes are in the WAL');
  t.true(value(samples, 'sessiond_wal_bytes')! > 0);
  t.true(value(samples, 'sessiond_database_bytes')! > 0);
  t.not(value(samples, 'sessiond_wal_checkpointed_frames'), undefined);
  // prom-client's default process metrics, event-loop lag among them.
  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes']) {
    t.not(samples.find((x) => x.name === name), undefined, `${name} is exported`);
  }
});

test('checkpoints are counted by mode and trigger (admin, auto), with durations and busy results', async (t) => {
  const s = await metricsServer(t, { SESSIOND_WAL_AUTOCHECKPOINT: '10', SESSIOND_BUSY_TIMEOUT: '200ms' });
  await s.client.createSession({ serverId: 'web-1' });
  await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  let samples = await scrape(s.port);
  const truncate = { mode: 'TRUNCATE', trigger: 'admin' };
  t.is(value(samples, 'sessiond_checkpoints_total', truncate), 1);
  t.is(value(samples, 'sessiond_checkpoint_duration_seconds_count', truncate), 1);
  t.is(value(samples, 'sessiond_checkpoints_busy_total', truncate), undefined, 'no busy result yet');

  // A reader on the WAL keeps TRUNCATE from completing: busy, counted as such.
  await s.client.createSession({ serverId: 'web-1' });
  const reader = new Database(s.dbPath, { readonly: true });
  t.teardown(() => reader.close());
  reader.prepare('BEGIN').run();
  reader.prepare('SELECT count(*) FROM sessions').get();
  await s.client.createSession({ serverId: 'web-1' });
  t.true((await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE })).busy);
  reader.prepare('COMMIT').run();
  samples = await scrape(s.port);
  t.is(value(samples, 'sessiond_checkpoints_total', truncate), 2, 'the counter went up by one');
  t.is(value(samples, 'sessiond_checkpoints_busy_total', truncate), 1);

  // Past the autocheckpoint threshold (10 frames here) the worker checkpoints by itself.
  for (let i = 0; i < 30; i++) await s.client.createSession({ serverId: 'web-1' });
  samples = await scrapeUntil(s.port, (x) => (value(x, 'sessiond_checkpoints_total', { mode: 'PASSIVE', trigger: 'auto' }) ?? 0) >= 1, 'an automatic checkpoint');
  t.true(value(samples, 'sessiond_checkpoint_duration_seconds_count', { mode: 'PASSIVE', trigger: 'auto' })! >= 1);
  t.true(s.logs.some((l) => l['msg'] === 'checkpoint' && (l['checkpoint'] as { trigger?: string }).trigger === 'auto'), 'auto checkpoints are logged');
  t.true(s.logs.some((l) => l['msg'] === 'checkpoint' && (l['checkpoint'] as { trigger?: string }).trigger === 'admin'), 'admin checkpoints are logged');
  t.true(s.logs.some((l) => l['level'] === 'warn' && /checkpoint could not complete/.test(String(l['msg']))), 'a busy admin checkpoint is a warning');
});

test('sweeps and admin purges are counted with the sessions they deleted', async (t) => {
  // Only the sweeps run here: the timer's would add to the counts on a slow run.
  const s = await metricsServer(t, { SESSIOND_SWEEP_INTERVAL: '1h' });
  for (let i = 0; i < 3; i++) await s.client.createSession({ serverId: 'web-1', ttl: { seconds: 60, nanos: 0 } });
  s.clock.advance(2 * 60_000);
  await s.app.sweeper.runOnce();
  await s.app.sweeper.runOnce();
  for (let i = 0; i < 2; i++) await s.client.createSession({ serverId: 'web-1', ttl: { seconds: 60, nanos: 0 } });
  s.clock.advance(2 * 60_000);
  t.is(Number((await s.client.purgeExpiredSessions({ batchSize: 1 })).purgedCount), 2);
  const samples = await scrape(s.port);
  t.is(value(samples, 'sessiond_sweep_runs_total', { trigger: 'sweep', result: 'ok' }), 2);
  t.is(value(samples, 'sessiond_sweep_purged_sessions_total', { trigger: 'sweep' }), 3);
  t.is(value(samples, 'sessiond_sweep_duration_seconds_count', { trigger: 'sweep' }), 2);
  t.is(value(samples, 'sessiond_sweep_runs_total', { trigger: 'admin', result: 'ok' }), 1);
  t.is(value(samples, 'sessiond_sweep_purged_sessions_total', { trigger: 'admin' }), 2);
});

test('streams the client cancels, and streams past their deadline, are counted with CANCELLED and DEADLINE_EXCEEDED', async (t) => {
  const s = await metricsServer(t);
  const health = new HealthClient(s.address, credentials.createInsecure());
  t.teardown(() => health.close());
  const cancelled = health.watch({ service: '' });
  cancelled.on('error', () => undefined);
  await new Promise((resolve) => cancelled.once('data', resolve));
  cancelled.cancel();
  // The server's own deadline timer (grpc-timeout, no client-side cancel)...
  const raw = new RawGrpc(s.address);
  t.teardown(() => raw.close());
  const timedOut = await raw.call('/grpc.health.v1.Health/Watch', frame(Buffer.alloc(0)), { 'grpc-timeout': '300m' });
  t.is(timedOut.code, status.DEADLINE_EXCEEDED);
  // ...and a client that cancels when its deadline passes.
  const late = health.watch({ service: '' }, new Metadata(), { deadline: Date.now() + 300 });
  await new Promise<void>((resolve) => late.on('error', () => resolve()));
  const watch = rpc('grpc.health.v1.Health', 'Watch', { grpc_type: 'server_stream' });
  const ended = (x: Sample[], code: string) => value(x, 'grpc_server_handled_total', { ...watch, grpc_code: code }) ?? 0;
  const samples = await scrapeUntil(s.port, (x) => ended(x, 'CANCELLED') + ended(x, 'DEADLINE_EXCEEDED') === 3, 'the three Watch streams to end');
  t.true(ended(samples, 'CANCELLED') >= 1, 'the cancelled stream');
  // The client's own cancel at its deadline races the server's timer; within a
  // small slack it counts as the deadline, but a loaded machine may lose the race.
  t.true(ended(samples, 'DEADLINE_EXCEEDED') >= 1, 'the stream the server timed out');
  t.is(value(samples, 'grpc_server_started_total', watch), 3);
  t.true(value(samples, 'grpc_server_msg_sent_total', watch)! >= 3, 'each Watch got its first status');
});

test('each server keeps its own registry: no counts leak between servers in one process', async (t) => {
  const a = await metricsServer(t);
  const b = await metricsServer(t);
  await a.client.createSession({ serverId: 'web-1' });
  await a.client.createSession({ serverId: 'web-1' });
  await b.client.createSession({ serverId: 'web-1' });
  t.is(value(await scrape(a.port), 'grpc_server_handled_total', rpc(SESSIONS, 'CreateSession', { grpc_code: 'OK' })), 2);
  t.is(value(await scrape(b.port), 'grpc_server_handled_total', rpc(SESSIONS, 'CreateSession', { grpc_code: 'OK' })), 1);
  t.not(a.app.metrics.registry, b.app.metrics.registry);
});

test('the endpoint serves /metrics only, and stops during shutdown, after the drain and before the database closes', async (t) => {
  const s = await startTestServer({ env: { SESSIOND_METRICS_LISTEN: '127.0.0.1:0' } });
  const port = s.app.metricsPort!;
  const ok = await httpGet(port);
  t.is(ok.status, 200);
  t.regex(ok.contentType, /^text\/plain; version=0\.0\.4/);
  t.is((await httpGet(port, '/metrics', 'HEAD')).body, '');
  t.is((await httpGet(port, '/')).status, 404);
  t.is((await httpGet(port, '/metrics', 'POST')).status, 405);
  await s.client.createSession({ serverId: 'web-1' });
  // A scraper holding its connection open (keep-alive) does not hold up the shutdown.
  const keepAlive = new Agent({ keepAlive: true });
  t.teardown(() => keepAlive.destroy());
  t.is((await httpGet(port, '/metrics', 'GET', keepAlive)).status, 200);
  const started = Date.now();
  await s.close();
  t.true(Date.now() - started < 5_000, 'shutdown did not wait for the idle scrape connection');
  await t.throwsAsync(httpGet(port), { code: 'ECONNREFUSED' });
  await s.app.shutdown('again');
  const msgs = s.logs.map((l) => String(l['msg']));
  const at = (m: string) => msgs.indexOf(m);
  t.not(at('shutdown: metrics server stopped'), -1);
  t.true(at('shutdown: draining in-flight calls') < at('shutdown: metrics server stopped'));
  t.true(at('shutdown: metrics server stopped') < at('shutdown: checkpoint'));
  t.true(at('shutdown: checkpoint') < at('shutdown: database closed'));
  t.is(msgs.filter((m) => m === 'shutdown: metrics server stopped').length, 1, 'stopped once, though shutdown ran twice');
});

test('metrics are off unless --metrics-listen is set; the registry still counts', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  t.is(s.app.metricsPort, undefined);
  await s.client.createSession({ serverId: 'web-1' });
  t.regex(await s.app.metrics.registry.metrics(), /grpc_server_handled_total\{[^}]*grpc_method="CreateSession"[^}]*grpc_code="OK"\} 1/);
  t.false(s.logs.some((l) => 'metrics' in l && l['msg'] === 'serving'), 'no metrics address in the serving line');
});

test('a bad --metrics-listen is a configuration problem; a port in use fails start-up and leaves nothing open', async (t) => {
  for (const bad of ['nowhere', '127.0.0.1:99999', ':9464']) {
    const err = t.throws(() => loadConfig([`--metrics-listen=${bad}`], {}), { instanceOf: ConfigError }) as ConfigError;
    t.true(err.problems.some((p) => p.startsWith('metrics-listen')), JSON.stringify(err.problems));
  }
  const same = t.throws(() => loadConfig(['--metrics-listen=127.0.0.1:50051'], {}), { instanceOf: ConfigError }) as ConfigError;
  t.true(same.problems.some((p) => /must not be the gRPC listen address/.test(p)));
  t.is(loadConfig(['--metrics-listen=[::1]:9464'], {}).config.metricsListen, '[::1]:9464');
  t.is(loadConfig([], {}).config.metricsListen, undefined);

  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const { port } = taken.address() as AddressInfo;
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await t.throwsAsync(startTestServer({ dir, env: { SESSIOND_METRICS_LISTEN: `127.0.0.1:${port}` } }), { message: /cannot serve metrics on 127\.0\.0\.1:\d+/ });
  // Nothing was left open: the same database serves again at once.
  const again = await startTestServer({ dir });
  t.teardown(() => again.close());
  t.truthy((await again.client.createSession({ serverId: 'web-1' })).token);
});
