import test, { type ExecutionContext } from 'ava';
import { status } from '@grpc/grpc-js';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/server/config';
import { rejectsWithCode } from './helpers/grpc';
import { runCli, spawnCliServer, type CliResult } from './helpers/cli';
import { startTestServer, tempDir, type TestServer } from './helpers/server';

/*
 * The `sessiond` command (bin/sessiond.js), run as a child process the way an
 * operator or a probe runs it, against real servers: every client command in
 * human and --json output, the exit codes (0 ok, 1 an error status or not
 * SERVING, 2 unreachable, 64 a bad command line), and `sessiond` alone serving.
 */

const ADMIN_TOKEN = 'cli-admin-token-Hq4Zr8Wv2Kx';
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAA';

async function server(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ env });
  t.teardown(() => s.close());
  return s;
}

/** Runs the CLI against `s`. */
function cli(s: TestServer, ...args: string[]): Promise<CliResult> {
  return runCli([...args, '--address', s.address]);
}

function ok(t: ExecutionContext, r: CliResult): void {
  t.is(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

function json<T = Record<string, unknown>>(t: ExecutionContext, r: CliResult): T {
  ok(t, r);
  return JSON.parse(r.stdout) as T;
}

/** The data rows of a table printed by `sessions list` (the header dropped). */
function rows(r: CliResult): string[][] {
  return r.stdout.trimEnd().split('\n').slice(1).map((l) => l.split(/\s{2,}/));
}

test('health: SERVING exits 0 with the storage metadata; --json prints the reply; an unknown service exits 1', async (t) => {
  const s = await server(t);
  const [human, asJson, admin, unknown] = await Promise.all([
    cli(s, 'health'),
    cli(s, 'health', '--json'),
    cli(s, 'health', '--service', 'sessions.v1.AdminService'),
    cli(s, 'health', '--service', 'no.such.Service'),
  ]);
  ok(t, human);
  t.regex(human.stdout, /^SERVING\n/);
  t.regex(human.stdout, /journal mode:\s+wal/);
  t.regex(human.stdout, /wal frames:\s+\d+/);
  t.deepEqual(json(t, asJson), { status: 'SERVING' });
  ok(t, admin);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /^sessiond: NOT_FOUND: /);
  t.is(unknown.stdout, '');
});

test('health exits 1 when the server is NOT_SERVING, and prints the reason', async (t) => {
  // No probe during the test: it would find storage fine and clear the problem set here.
  const s = await server(t, { SESSIOND_HEALTH_PROBE_INTERVAL: '1h' });
  s.app.health.setStorageProblem('disk on fire');
  const [human, asJson] = await Promise.all([cli(s, 'health'), cli(s, 'health', '--json')]);
  s.app.health.setStorageProblem(undefined);
  t.is(human.code, 1, human.stderr);
  t.regex(human.stdout, /^NOT_SERVING\n/);
  t.regex(human.stdout, /not serving reason:\s+disk on fire/);
  t.is(asJson.code, 1);
  t.deepEqual(JSON.parse(asJson.stdout), { status: 'NOT_SERVING' });
  ok(t, await cli(s, 'health'));
});

test('an unreachable server: one line naming the address, exit 2, for every command and from SESSIOND_ADDRESS too', async (t) => {
  const [health, status_, list] = await Promise.all([
    runCli(['health', '--address', '127.0.0.1:1']),
    runCli(['admin', 'status', '--json'], { SESSIOND_ADDRESS: '127.0.0.1:1' }),
    runCli(['sessions', 'list', '--address', '127.0.0.1:1', '--timeout', '2s']),
  ]);
  for (const r of [health, status_, list]) {
    t.is(r.code, 2, r.stderr);
    t.is(r.stdout, '');
    t.regex(r.stderr, /^sessiond: cannot reach the server at 127\.0\.0\.1:1: .*ECONNREFUSED.*\n$/);
  }
});

test('admin status and checkpoint, human and --json', async (t) => {
  const s = await server(t);
  for (let i = 0; i < 3; i++) await s.client.createSession({ serverId: 'web-1' });
  const [human, asJson, truncate, full, bad] = await Promise.all([
    cli(s, 'admin', 'status'),
    cli(s, 'admin', 'status', '--json'),
    cli(s, 'admin', 'checkpoint', '--mode', 'truncate'),
    cli(s, 'admin', 'checkpoint', '--mode', 'full', '--json'),
    cli(s, 'admin', 'checkpoint', '--mode', 'sometimes'),
  ]);
  ok(t, human);
  t.regex(human.stdout, /^journal mode:\s+wal$/m);
  t.regex(human.stdout, /^live sessions:\s+3$/m);
  t.regex(human.stdout, /^database bytes:\s+\d+ \(\d+\.\d KiB\)$/m, 'sizes also in KiB');
  const st = json<{ journalMode: string; liveSessions: string; synchronous: string; walFrames: string; path: string }>(t, asJson);
  t.is(st.journalMode, 'wal');
  t.is(st.liveSessions, '3', 'int64 as a string, as proto JSON has it');
  t.is(st.path, s.dbPath);
  ok(t, truncate);
  t.regex(truncate.stdout, /^mode:\s+CHECKPOINT_MODE_TRUNCATE$/m);
  t.regex(truncate.stdout, /^busy:\s+no$/m);
  const cp = json<{ mode: string; busy: boolean; duration: string; walBytes: string }>(t, full);
  t.is(cp.mode, 'CHECKPOINT_MODE_FULL');
  t.false(cp.busy);
  t.regex(cp.duration, /^\d+(\.\d+)?s$/, 'a Duration as proto JSON has it');
  t.is(bad.code, 64);
  t.regex(bad.stderr, /passive, full, restart, truncate/);
  const after = json<{ lastCheckpoint: { mode: string; trigger: string } }>(t, await cli(s, 'admin', 'status', '--json'));
  t.is(after.lastCheckpoint.trigger, 'admin');
});

test('admin purge deletes expired sessions in batches', async (t) => {
  // No background sweep to get there first on a slow run.
  const s = await server(t, { SESSIOND_SWEEP_INTERVAL: '1h' });
  for (let i = 0; i < 3; i++) await s.client.createSession({ serverId: 'web-1', ttl: { seconds: 60, nanos: 0 } });
  s.clock.advance(2 * 60_000);
  const first = await cli(s, 'admin', 'purge', '--batch-size', '2');
  ok(t, first);
  t.is(first.stdout, 'purged 3 sessions in 2 batches\n');
  t.deepEqual(json(t, await cli(s, 'admin', 'purge', '--json')), { purgedCount: '0', batches: '0' });
  const bad = await cli(s, 'admin', 'purge', '--batch-size', 'lots');
  t.is(bad.code, 64);
  t.regex(bad.stderr, /not a positive integer/);
});

test('admin commands carry the admin token from SESSIOND_ADMIN_TOKEN or --admin-token; a wrong one is an unknown key', async (t) => {
  const s = await server(t, { SESSIOND_ADMIN_TOKEN: ADMIN_TOKEN });
  const [none, fromEnv, fromFlag, wrong] = await Promise.all([
    runCli(['admin', 'status', '--address', s.address]),
    runCli(['admin', 'status', '--address', s.address], { SESSIOND_ADMIN_TOKEN: ADMIN_TOKEN }),
    runCli(['admin', 'checkpoint', '--address', s.address, '--admin-token', ADMIN_TOKEN]),
    runCli(['admin', 'purge', '--address', s.address], { SESSIOND_ADMIN_TOKEN: 'not-the-admin-token-at-all' }),
  ]);
  t.is(none.code, 1);
  t.regex(none.stderr, /^sessiond: UNAUTHENTICATED: /);
  ok(t, fromEnv);
  ok(t, fromFlag);
  t.is(wrong.code, 1);
  // The admin token is the key of one principal: any other key names no principal at all.
  t.regex(wrong.stderr, /^sessiond: UNAUTHENTICATED: /);
  for (const r of [none, fromEnv, fromFlag, wrong]) t.false((r.stdout + r.stderr).includes(ADMIN_TOKEN), 'the token is never printed');
});

test('sessions list: a table by default, --json, filters, pages and --all', async (t) => {
  const s = await server(t);
  const a1 = await s.client.createSession({ serverId: 'web-1', subject: 'alice', ip: '203.0.113.7' });
  const a2 = await s.client.createSession({ serverId: 'web-2', subject: 'alice' });
  const b = await s.client.createSession({ serverId: 'web-1', subject: 'bob' });
  const [all, alice, asJson, page, everyPage, web2] = await Promise.all([
    cli(s, 'sessions', 'list'),
    cli(s, 'sessions', 'list', '--subject', 'alice'),
    cli(s, 'sessions', 'list', '--subject', 'alice', '--json'),
    cli(s, 'sessions', 'list', '--subject', 'alice', '--page-size', '1'),
    cli(s, 'sessions', 'list', '--subject', 'alice', '--page-size', '1', '--all'),
    cli(s, 'sessions', 'list', '--server-id', 'web-2'),
  ]);
  ok(t, all);
  t.regex(all.stdout, /^ID\s+SERVER ID\s+SUBJECT\s+IP\s+CREATED\s+LAST ACTIVE\s+IDLE EXPIRES\s+EXPIRES\n/);
  t.deepEqual(rows(all).map((r) => r[0]), [a1.session!.id, a2.session!.id, b.session!.id], 'oldest first');
  t.deepEqual(rows(all)[0]!.slice(1, 4), ['web-1', 'alice', '203.0.113.7']);
  t.regex(rows(all)[0]![4]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.deepEqual(rows(alice).map((r) => r[0]), [a1.session!.id, a2.session!.id]);
  const listed = json<{ sessions: { id: string; subject: string; attributes: object }[]; nextPageToken: string }>(t, asJson);
  t.deepEqual(listed.sessions.map((x) => x.id), [a1.session!.id, a2.session!.id]);
  t.is(listed.nextPageToken, '');
  ok(t, page);
  t.is(rows(page).length, 1);
  const more = /more sessions: add --page-token (\S+)/.exec(page.stderr);
  t.truthy(more, page.stderr);
  const next = await cli(s, 'sessions', 'list', '--subject', 'alice', '--page-size', '1', '--page-token', more![1]!);
  t.deepEqual(rows(next).map((r) => r[0]), [a2.session!.id]);
  t.deepEqual(rows(everyPage).map((r) => r[0]), [a1.session!.id, a2.session!.id]);
  t.is(everyPage.stderr, '');
  t.deepEqual(rows(web2).map((r) => r[0]), [a2.session!.id]);
  const none = await cli(s, 'sessions', 'list', '--subject', 'nobody');
  ok(t, none);
  t.is(none.stdout, '(no sessions)\n');
  const badToken = await cli(s, 'sessions', 'list', '--page-token', 'garbage!');
  t.is(badToken.code, 1);
  t.regex(badToken.stderr, /^sessiond: INVALID_ARGUMENT: /);
});

test('sessions get: key-value lines or --json; an unknown id exits 1 with NOT_FOUND', async (t) => {
  const s = await server(t);
  const c = await s.client.createSession({ serverId: 'web-1', subject: 'alice', attributes: { role: 'admin', team: 'blue' }, userAgent: 'curl/8' });
  const id = c.session!.id;
  const [human, asJson, missing, noArg] = await Promise.all([
    cli(s, 'sessions', 'get', id),
    cli(s, 'sessions', 'get', id, '--json'),
    cli(s, 'sessions', 'get', UNKNOWN_ID),
    cli(s, 'sessions', 'get'),
  ]);
  ok(t, human);
  t.regex(human.stdout, new RegExp(`^id:\\s+${id}$`, 'm'));
  t.regex(human.stdout, /^server id:\s+web-1$/m);
  t.regex(human.stdout, /^attributes:\s+role=admin, team=blue$/m);
  t.regex(human.stdout, /^user agent:\s+curl\/8$/m);
  t.regex(human.stdout, /^idle timeout:\s+1800s$/m);
  const got = json<{ session: { id: string; serverId: string; attributes: Record<string, string>; createTime: string; etag: string } }>(t, asJson);
  t.is(got.session.id, id);
  t.deepEqual(got.session.attributes, { role: 'admin', team: 'blue' });
  t.is(new Date(got.session.createTime).getTime(), c.session!.createTime!.getTime());
  t.is(got.session.etag, c.session!.etag);
  t.false(human.stdout.includes(c.token) || asJson.stdout.includes(c.token), 'never the token');
  t.is(missing.code, 1);
  t.is(missing.stdout, '');
  t.regex(missing.stderr, new RegExp(`^sessiond: NOT_FOUND: session ${UNKNOWN_ID} not found`));
  t.is(noArg.code, 64);
  t.regex(noArg.stderr, /missing required argument 'id'/);

  // One id in 64 starts with '-' (base64url): it is an id, not an option; a typo still is an option.
  const dashId = `-${UNKNOWN_ID.slice(1)}`;
  const [dash, dashRevoke, typo] = await Promise.all([
    cli(s, 'sessions', 'get', dashId),
    cli(s, 'sessions', 'revoke', dashId, '--allow-missing'),
    cli(s, 'sessions', 'get', '--jsno'),
  ]);
  t.is(dash.code, 1, dash.stderr);
  t.regex(dash.stderr, new RegExp(`^sessiond: NOT_FOUND: session ${dashId} not found`));
  t.is(dashRevoke.code, 0, dashRevoke.stderr);
  t.is(typo.code, 64);
  t.regex(typo.stderr, /unknown option '--jsno'/);
});

test('sessions revoke: one by id, or in bulk by subject or server id', async (t) => {
  const s = await server(t);
  const one = await s.client.createSession({ serverId: 'web-1', subject: 'carol' });
  const alice = [await s.client.createSession({ serverId: 'web-1', subject: 'alice' }), await s.client.createSession({ serverId: 'web-2', subject: 'alice' })];
  const web3 = await s.client.createSession({ serverId: 'web-3', subject: 'dave' });
  const single = await cli(s, 'sessions', 'revoke', one.session!.id);
  ok(t, single);
  t.is(single.stdout, `revoked session ${one.session!.id}\n`);
  await rejectsWithCode(t, s.client.getSession(one.session!.id), status.NOT_FOUND);
  const [again, allowMissing, bulk, byServer] = await Promise.all([
    cli(s, 'sessions', 'revoke', one.session!.id),
    cli(s, 'sessions', 'revoke', one.session!.id, '--allow-missing', '--json'),
    cli(s, 'sessions', 'revoke', '--subject', 'alice', '--json'),
    cli(s, 'sessions', 'revoke', '--server-id', 'web-3'),
  ]);
  t.is(again.code, 1);
  t.regex(again.stderr, /^sessiond: NOT_FOUND: /);
  t.deepEqual(json(t, allowMissing), {});
  t.deepEqual(json(t, bulk), { revokedCount: '2' });
  ok(t, byServer);
  t.is(byServer.stdout, 'revoked 1 session\n');
  for (const c of [...alice, web3]) t.false((await s.client.validateSession(c.token)).valid);
  const [neither, both] = await Promise.all([cli(s, 'sessions', 'revoke'), cli(s, 'sessions', 'revoke', web3.session!.id, '--subject', 'x')]);
  t.is(neither.code, 64);
  t.regex(neither.stderr, /give a session id, or --subject/);
  t.is(both.code, 64);
  t.regex(both.stderr, /not both/);
  const keep = await s.client.createSession({ serverId: 'web-1', subject: 'erin' });
  const other = await s.client.createSession({ serverId: 'web-1', subject: 'erin' });
  const [others, exceptWithId] = await Promise.all([
    cli(s, 'sessions', 'revoke', '--subject', 'erin', '--except', keep.session!.id),
    cli(s, 'sessions', 'revoke', keep.session!.id, '--except', other.session!.id),
  ]);
  ok(t, others);
  t.is(others.stdout, 'revoked 1 session\n');
  t.true((await s.client.validateSession(keep.token)).valid, '--except kept it');
  t.false((await s.client.validateSession(other.token)).valid);
  t.is(exceptWithId.code, 64);
  t.regex(exceptWithId.stderr, /--except goes with --subject/);
});

test('sessions watch: one line per event, --json lines, filters, --until-now stops at the head; a bad --after exits 64', async (t) => {
  const s = await server(t);
  const a = await s.client.createSession({ serverId: 'web-1', subject: 'frank' });
  await s.client.deleteSession(a.session!.id);
  const b = await s.client.createSession({ serverId: 'web-2', subject: 'gina' });
  const [all, json, filtered, fromHead, bad] = await Promise.all([
    cli(s, 'sessions', 'watch', '--after', '0', '--until-now'),
    cli(s, 'sessions', 'watch', '--after', '1', '--until-now', '--json'),
    cli(s, 'sessions', 'watch', '--after', '0', '--until-now', '--server-id', 'web-2'),
    cli(s, 'sessions', 'watch', '--until-now'),
    cli(s, 'sessions', 'watch', '--after', 'yesterday'),
  ]);
  ok(t, all);
  const rows = all.stdout.trim().split('\n').map((l) => l.split('\t'));
  t.deepEqual(rows.map((r) => [r[0], r[1], r[2], r[3], r[4], r[6]]), [
    ['1', 'CREATED', a.session!.id, 'web-1', 'frank', '-'],
    ['2', 'REVOKED', a.session!.id, 'web-1', 'frank', 'delete'],
    ['3', 'CREATED', b.session!.id, 'web-2', 'gina', '-'],
  ]);
  t.regex(rows[0]![5]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  ok(t, json);
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(lines.map((l) => [l['sequence'], l['type'], l['cause']]), [['2', 'SESSION_EVENT_TYPE_REVOKED', 'delete'], ['3', 'SESSION_EVENT_TYPE_CREATED', '']]);
  ok(t, filtered);
  t.deepEqual(filtered.stdout.trim().split('\n').map((l) => l.split('\t')[2]), [b.session!.id]);
  ok(t, fromHead);
  t.is(fromHead.stdout, '', 'from now until now is nothing');
  t.is(bad.code, 64);
  t.regex(bad.stderr, /--after "yesterday" is not a sequence/);
});

test('usage: help for the program and for serve; bad options exit 64', async (t) => {
  const [help, serveHelp, badTimeout, unknownOption, adminHelp, listHelp] = await Promise.all([
    runCli(['--help']),
    runCli(['serve', '--help']),
    runCli(['health', '--timeout', 'soon']),
    runCli(['health', '--no-such-option']),
    runCli(['admin', '--help']),
    runCli(['sessions', 'list', '--help']),
  ]);
  ok(t, help);
  for (const command of ['serve', 'health', 'admin', 'sessions', 'keys']) t.regex(help.stdout, new RegExp(`^\\s+${command}\\b`, 'm'));
  ok(t, serveHelp);
  for (const flag of ['--listen', '--db-path', '--metrics-listen', '--slow-call-threshold', 'SESSIOND_ADMIN_TOKEN']) t.true(serveHelp.stdout.includes(flag), flag);
  t.is(badTimeout.code, 64);
  t.regex(badTimeout.stderr, /--timeout/);
  t.is(unknownOption.code, 64);
  t.regex(unknownOption.stderr, /unknown option '--no-such-option'/);
  ok(t, adminHelp);
  for (const sub of ['checkpoint', 'status', 'purge']) t.regex(adminHelp.stdout, new RegExp(`^\\s+${sub}\\b`, 'm'));
  ok(t, listHelp);
  for (const needle of ['--api-key <key>', 'SESSIOND_API_KEY', '--admin-token <token>']) t.true(listHelp.stdout.includes(needle), needle);
});

test('`sessiond` with no command serves, with SESSIOND_ADDRESS in its environment; `sessiond serve` too; SIGTERM stops it', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The client-only variable is set for the server too, as one shared environment would have it.
  const bare = await spawnCliServer([], { SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_DB_PATH: join(dir, 'a.db'), SESSIOND_ADDRESS: '127.0.0.1:9' });
  t.teardown(() => void (bare.proc.exitCode === null && bare.proc.kill('SIGKILL')));
  const explicit = await spawnCliServer(['serve', '--listen', '127.0.0.1:0', '--db-path', join(dir, 'b.db'), '--metrics-listen', '127.0.0.1:0'], {});
  t.teardown(() => void (explicit.proc.exitCode === null && explicit.proc.kill('SIGKILL')));
  t.regex(explicit.stderr(), /"metrics":"http:\/\/127\.0\.0\.1:\d+\/metrics"/);
  const [h1, h2] = await Promise.all([runCli(['health', '--address', bare.address]), runCli(['health'], { SESSIOND_ADDRESS: explicit.address })]);
  ok(t, h1);
  ok(t, h2);
  bare.proc.kill('SIGTERM');
  explicit.proc.kill('SIGTERM');
  t.is(await bare.exited, 0);
  t.is(await explicit.exited, 0);
  t.regex(bare.stderr(), /"msg":"shutdown: database closed"/);

  const bad = await runCli(['serve', '--no-such-flag', '--listen', '127.0.0.1:0', '--db-path', join(dir, 'c.db')]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /unknown flag --no-such-flag/);
  const stray = await runCli(['no-such-command'], { SESSIOND_DB_PATH: join(dir, 'c.db') });
  t.is(stray.code, 2, 'an unknown word goes to serve, which refuses it');
  t.regex(stray.stderr, /unexpected argument "no-such-command"/);
});

test('the server accepts the client-only variables SESSIOND_ADDRESS and SESSIOND_API_KEY but still rejects unknown ones', (t) => {
  t.notThrows(() => loadConfig([], { SESSIOND_ADDRESS: '10.0.0.1:50051' }));
  t.notThrows(() => loadConfig([], { SESSIOND_API_KEY: 'sk_sessiond_of-the-cli-in-the-same-environment' }));
  t.throws(() => loadConfig([], { SESSIOND_ADRESS: '10.0.0.1:50051' }), { message: /unknown variable SESSIOND_ADRESS/ });
});
