import test, { type ExecutionContext } from 'ava';
import { Metadata, status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { SessiondClient } from '../src/client/client';
import { loadConfig } from '../src/server/config';
import { createLogger, silentLogger } from '../src/server/log';
import { Metrics } from '../src/server/metrics/metrics';
import { StorageObserver, WAL_WARN_REPEAT_MS } from '../src/server/storage-observer';
import { rejectsWithCode } from './helpers/grpc';
import { spawnServer } from './helpers/process';
import { writePrincipals, type PrincipalSpec } from './helpers/principals';
import { startTestServer, tempDir, type TestServer } from './helpers/server';
import { waitFor } from './helpers/wait';

/*
 * Structured logs (pino): JSON lines with level, time and msg; the start-up
 * configuration with secrets redacted; checkpoints, sweeps and shutdown steps;
 * warnings on slow calls and WAL growth; and never a token or an admin secret.
 */

const ADMIN_TOKEN = 'admin-secret-Zq8HvX2mW4pL9rT6';

type Line = Record<string, unknown>;

async function server(t: ExecutionContext, env: Record<string, string> = {}, principals?: PrincipalSpec[]): Promise<TestServer> {
  const s = await startTestServer({ env, principals });
  t.teardown(() => s.close());
  return s;
}


const withMsg = (logs: Line[], msg: string | RegExp) => logs.filter((l) => (typeof msg === 'string' ? l['msg'] === msg : msg.test(String(l['msg']))));

test('no session token and no admin token appears in any log line, at debug level, whatever the calls', async (t) => {
  const s = await server(t, { SESSIOND_ADMIN_TOKEN: ADMIN_TOKEN, SESSIOND_SLOW_CALL_THRESHOLD: '1ms' }, [
    { name: 'web', permissions: ['sessions.read', 'sessions.write'], serverIds: ['web-*'] },
  ]);
  t.is(s.config.logLevel, 'debug');
  const stranger = new SessiondClient(s.address, { apiKey: 'sk_sessiond_not-a-key-anyone-was-given-Qm4x', defaultDeadlineMs: 10_000 });
  t.teardown(() => stranger.close());
  const admin = new SessiondClient(s.address, { adminToken: ADMIN_TOKEN, defaultDeadlineMs: 10_000 });
  const intruder = new SessiondClient(s.address, { adminToken: 'wrong-admin-token-Kp3Xr7Lm', defaultDeadlineMs: 10_000 });
  t.teardown(() => {
    admin.close();
    intruder.close();
  });
  const secrets: string[] = [ADMIN_TOKEN, 'wrong-admin-token-Kp3Xr7Lm', s.keys['web']!, 'sk_sessiond_not-a-key-anyone-was-given-Qm4x'];

  const a = await s.client.createSession({ serverId: 'web-1', subject: 'alice', attributes: { role: 'admin' }, requestId: 'req-1', ttl: { seconds: 120, nanos: 0 } });
  const again = await s.client.createSession({ serverId: 'web-1', subject: 'alice', attributes: { role: 'admin' }, requestId: 'req-1', ttl: { seconds: 120, nanos: 0 } });
  const b = await s.client.createSession({ serverId: 'web-2', subject: 'bob' });
  secrets.push(a.token, again.token, b.token);
  t.true((await s.client.validateSession(a.token, true)).valid);
  const rotated = await s.client.rotateSessionToken(a.session!.id);
  secrets.push(rotated.token);
  t.false((await s.client.validateSession(a.token)).valid, 'the old token no longer validates');
  t.true((await s.client.validateSession(rotated.token, true)).valid);
  const validator = s.client.openValidator();
  t.true((await validator.validate(b.token, true)).valid);
  t.false((await validator.validate('not-a-real-token-but-still-secret-looking')).valid);
  validator.close();
  secrets.push('not-a-real-token-but-still-secret-looking');
  await s.client.getSession(a.session!.id);
  await s.client.updateSession({ id: a.session!.id, attributes: { role: 'viewer' }, merge: true });
  await s.client.listSessions({ subject: 'alice' });
  await s.client.touchSession(b.session!.id);

  await admin.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  await admin.getStorageStatus();
  s.clock.advance(10 * 60_000);
  await admin.purgeExpiredSessions({});
  await s.app.sweeper.runOnce();
  await rejectsWithCode(t, intruder.getStorageStatus(), status.UNAUTHENTICATED);
  await rejectsWithCode(t, s.client.getStorageStatus(), status.PERMISSION_DENIED);
  await rejectsWithCode(t, stranger.createSession({ serverId: 'web-1' }), status.UNAUTHENTICATED);
  await rejectsWithCode(t, s.client.createSession({ serverId: 'api-1' }), status.PERMISSION_DENIED);
  const header = new Metadata();
  header.set('authorization', `Basic ${ADMIN_TOKEN}`);
  await rejectsWithCode(t, s.client.checkpoint({}, { metadata: header }), status.UNAUTHENTICATED);
  await s.client.revokeSessions({ subject: 'bob' });
  await s.client.deleteSession(a.session!.id, true);
  await s.client.health('');
  await s.close();

  t.true(s.logs.length > 10, `a busy log (${s.logs.length} lines)`);
  t.true(s.logs.some((l) => l['level'] === 'debug'), 'debug lines are written at debug level');
  t.true(withMsg(s.logs, 'slow call').length > 0, 'slow-call warnings (threshold 1ms) name calls without their payloads');
  const refused = withMsg(s.logs, 'call refused');
  t.true(refused.some((l) => l['code'] === 'unauthenticated') && refused.some((l) => /principal web may not act for server_id "api-1"/.test(String(l['reason']))), 'refusals are logged with their reason');
  const text = JSON.stringify(s.logs);
  for (const secret of secrets) t.false(text.includes(secret), `a secret appears in the log: ${secret.slice(0, 6)}...`);
  // Nor any hash or prefix of one that would help an attacker: no field called token at all.
  t.false(/"token"\s*:/.test(text));
});

test('an internal error keeps its stack in the log and reaches the client only as a generic message', async (t) => {
  const s = await server(t);
  const created = await s.client.createSession({ serverId: 'web-1' });
  await s.app.storage.close();
  const err = await rejectsWithCode(t, s.client.getSession(created.session!.id), status.INTERNAL);
  t.is(err.details, 'internal error; the server log has the details');
  const line = withMsg(s.logs, 'handler failed').find((l) => l['method'] === 'GetSession');
  t.truthy(line, 'the failure is logged');
  t.is(line!['level'], 'error');
  const logged = line!['err'] as { type: string; message: string; stack: string };
  t.is(typeof logged.type, 'string');
  t.regex(logged.message, /database/i);
  t.regex(logged.stack, /\n\s+at /, 'with its stack');
  t.false(err.details.includes(logged.message), 'the cause stays on the server');
});

test('slow calls are logged as warnings with method, code and duration', async (t) => {
  const s = await server(t, { SESSIOND_BUSY_TIMEOUT: '300ms', SESSIOND_SLOW_CALL_THRESHOLD: '100ms' });
  await s.client.createSession({ serverId: 'web-1' });
  // Another connection holds the write lock: the create waits out the busy timeout.
  const other = new Database(s.dbPath);
  t.teardown(() => other.close());
  other.prepare('BEGIN IMMEDIATE').run();
  await rejectsWithCode(t, s.client.createSession({ serverId: 'web-1' }), status.UNAVAILABLE);
  other.prepare('ROLLBACK').run();
  // (Only this one is certain to be slow; on a loaded machine another call may be too.)
  const slow = withMsg(s.logs, 'slow call').filter((l) => l['code'] === 'UNAVAILABLE');
  t.is(slow.length, 1, JSON.stringify(slow));
  t.is(slow[0]!['level'], 'warn');
  t.is(slow[0]!['method'], '/sessions.v1.SessionService/CreateSession');
  t.is(slow[0]!['code'], 'UNAVAILABLE');
  t.true((slow[0]!['durationMs'] as number) >= 100);
  t.is(slow[0]!['thresholdMs'], 100);
  t.is(loadConfig(['--slow-call-threshold=0'], {}).config.slowCallThresholdMs, 0, '0 turns the warning off');
  t.is(loadConfig([], {}).config.slowCallThresholdMs, 500);
});

test('WAL growth past four times the autocheckpoint threshold is a warning, once per interval, and its end is logged', async (t) => {
  const s = await server(t, { SESSIOND_WAL_AUTOCHECKPOINT: '10', SESSIOND_HEALTH_PROBE_INTERVAL: '100ms' });
  await s.client.createSession({ serverId: 'web-1' });
  // A long-lived reader pins the WAL: checkpoints cannot get past it and it grows.
  const reader = new Database(s.dbPath, { readonly: true });
  t.teardown(() => reader.close());
  reader.prepare('BEGIN').run();
  reader.prepare('SELECT count(*) FROM sessions').get();
  for (let i = 0; i < 60; i++) await s.client.createSession({ serverId: 'web-1', attributes: { n: String(i) } });
  await waitFor(() => withMsg(s.logs, /^WAL is growing/).length > 0, 'the WAL warning');
  const warning = withMsg(s.logs, /^WAL is growing/)[0]!;
  t.is(warning['level'], 'warn');
  t.is(warning['limitFrames'], 40);
  t.true((warning['walFrames'] as number) > 40);
  await s.probes(6);
  t.is(withMsg(s.logs, /^WAL is growing/).length, 1, 'not repeated at every probe');
  // Behind the reader the worker's checkpoints copy nothing; it backs off
  // (doubling from 100 ms) instead of retrying at every 50 ms poll, so a
  // 1.5 s stall costs a handful of attempts, not thirty.
  const autos = () => s.logs.filter((l) => l['msg'] === 'checkpoint' && (l['checkpoint'] as { trigger?: string }).trigger === 'auto').length;
  const before = autos();
  // A rate: the window is what is measured, so it is waited out.
  await new Promise((r) => setTimeout(r, 1500));
  t.true(autos() - before <= 6, `${autos() - before} automatic checkpoints in 1.5 s behind a pinned reader`);
  reader.prepare('COMMIT').run();
  await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  await waitFor(() => withMsg(s.logs, 'WAL back under its warning limit').length === 1, 'the all-clear');
});

test('the WAL warning repeats at most every five minutes while the WAL stays large', (t) => {
  const lines: Line[] = [];
  let now = 0;
  const log = createLogger('debug', (l) => void lines.push(JSON.parse(l) as Line));
  const observer = new StorageObserver(new Metrics(), log, 1000, () => now);
  const big = { journalMode: 'wal', walFrames: 4001, walBytes: 4001 * 4120 };
  const warnings = () => withMsg(lines, /^WAL is growing/).length;
  observer.checkWal({ ...big, walFrames: 4000 });
  t.is(warnings(), 0, 'at the limit is not over it');
  observer.checkWal(big);
  t.is(warnings(), 1);
  now += WAL_WARN_REPEAT_MS - 1;
  observer.checkWal(big);
  t.is(warnings(), 1);
  now += 1;
  observer.checkWal(big);
  t.is(warnings(), 2);
  observer.checkWal({ ...big, walFrames: 10 });
  observer.checkWal({ ...big, walFrames: 10 });
  t.is(withMsg(lines, 'WAL back under its warning limit').length, 1, 'the all-clear once');
  observer.checkWal(big);
  t.is(warnings(), 3, 'a new episode warns at once');
  const off = new StorageObserver(new Metrics(), log, 0, () => now);
  off.checkWal({ ...big, walFrames: 1_000_000 });
  t.is(warnings(), 3, 'no warning when automatic checkpoints are off');
});

test('the logger writes JSON lines, redacts secrets by field name as a second line of defence, and serializes errors', (t) => {
  const lines: string[] = [];
  const log = createLogger('debug', (l) => void lines.push(l));
  const cause = Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' });
  log.info('hello', { token: 'tok-1', authorization: 'Bearer tok-2', config: { server: { adminToken: 'tok-3' } }, nested: { token: 'tok-4' }, id: 'public-id' });
  log.error('failed', { err: new Error('outer', { cause }), failure: new TypeError('typed') });
  log.debug('detail');
  t.is(lines.length, 3);
  t.true(lines.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n')), 'one line each');
  const [hello, failed, detail] = lines.map((l) => JSON.parse(l) as Line);
  t.is(hello!['level'], 'info');
  t.regex(String(hello!['time']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.is(typeof hello!['pid'], 'number');
  t.is(hello!['msg'], 'hello');
  t.true(lines[0]!.indexOf('"msg":"hello"') < lines[0]!.indexOf('"id"'), 'the message comes before the fields');
  t.is(hello!['id'], 'public-id');
  for (const secret of ['tok-1', 'tok-2', 'tok-3', 'tok-4']) t.false(lines[0]!.includes(secret), secret);
  t.is(hello!['token'], '[redacted]');
  t.deepEqual(hello!['config'], { server: { adminToken: '[redacted]' } });
  const err = failed!['err'] as { type: string; message: string; stack: string; cause: { message: string; code: string } };
  t.is(err.type, 'Error');
  t.is(err.message, 'outer');
  t.regex(err.stack, /Error: outer\n\s+at /);
  t.is(err.cause.message, 'disk I/O error');
  t.is(err.cause.code, 'SQLITE_IOERR');
  t.is((failed!['failure'] as { type: string }).type, 'TypeError', 'errors under any key are serialized');
  t.is(detail!['level'], 'debug');

  const warnOnly: string[] = [];
  const quiet = createLogger('warn', (l) => void warnOnly.push(l));
  quiet.debug('no');
  quiet.info('no');
  quiet.warn('yes');
  quiet.error('yes');
  t.deepEqual(warnOnly.map((l) => (JSON.parse(l) as Line)['msg']), ['yes', 'yes']);
  t.notThrows(() => silentLogger.error('nothing', { err: new Error('x') }));
});

test('a real server process logs its configuration at start-up with the admin token redacted, then each shutdown step', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = writePrincipals(dir, [{ name: 'web', permissions: ['sessions.write'], serverIds: ['web-1'] }]);
  const p = await spawnServer({ SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_ADMIN_TOKEN: ADMIN_TOKEN, SESSIOND_PRINCIPALS_FILE: file.path, SESSIOND_LOG_LEVEL: 'debug' });
  t.teardown(() => {
    if (p.proc.exitCode === null) p.proc.kill('SIGKILL');
  });
  const client = new SessiondClient(p.address, { apiKey: file.keys['web'], adminToken: ADMIN_TOKEN, defaultDeadlineMs: 10_000 });
  const created = await client.createSession({ serverId: 'web-1' });
  await client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_FULL });
  client.close();
  p.proc.kill('SIGTERM');
  t.is(await p.exited, 0);
  const lines = p.stderr().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line);
  for (const l of lines) {
    t.true(['debug', 'info', 'warn', 'error'].includes(String(l['level'])), JSON.stringify(l));
    t.is(typeof l['time'], 'string');
    t.is(typeof l['msg'], 'string');
  }
  const starting = withMsg(lines, 'starting')[0];
  t.truthy(starting);
  const config = starting!['config'] as { server: { adminToken: string; listen: string }; storage: { path: string } };
  t.is(config.server.adminToken, '[redacted]');
  t.is(config.storage.path, join(dir, 'sessions.db'));
  for (const step of ['shutdown: health NOT_SERVING', 'shutdown: draining in-flight calls', 'shutdown: sweep and health probe stopped', 'shutdown: checkpoint', 'shutdown: database closed']) {
    t.is(withMsg(lines, step).length, 1, step);
  }
  t.is(withMsg(lines, 'checkpoint').length, 1, 'the admin checkpoint; the final one is logged as its shutdown step');
  t.false(p.stderr().includes(ADMIN_TOKEN));
  t.false(p.stderr().includes(file.keys['web']!));
  t.false(p.stderr().includes(created.token));
});
