import test, { type ExecutionContext } from 'ava';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { API_KEY_PREFIX, apiKeySha256, newApiKey } from '../src/shared/api-keys';
import { entryYaml, generateKey, type GeneratedEntry, type GeneratedKey } from '../src/cli/keys-command';
import { principalsFromDocument, readPrincipalsFile } from '../src/server/principals-file';
import { runCli, spawnCliServer, type CliResult } from './helpers/cli';
import { startTestServer, tempDir } from './helpers/server';
import { waitFor } from './helpers/wait';

/*
 * `sessiond keys generate` and the client commands' API key (--api-key,
 * SESSIOND_API_KEY), as an operator uses them: generate a key, put its entry
 * in the principals file of a real server, call that server with the CLI;
 * rotate the key with SIGHUP and no restart. A key is printed once, by the
 * command that makes it, and never in an error.
 */

const KEY = /sk_sessiond_[A-Za-z0-9_-]{43}/g;

function ok(t: ExecutionContext, r: CliResult): void {
  t.is(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

function occurrences(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

/** Writes the file whole under its final name, as an editor's save or a Secret update does, so that no reload reads half of it. */
function writeAtomically(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

function fileOf(...entries: GeneratedEntry[]): string {
  return `principals:\n${entries.map(entryYaml).join('\n')}\n`;
}

test('keys generate prints a new key once, labelled, and an entry that the principals file accepts as it is', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [human, asJson] = await Promise.all([
    runCli(['keys', 'generate', 'web-frontend', '--server-id', 'web-*', '--server-id', 'web-1']),
    runCli(['keys', 'generate', 'gateway', '--server-id', '*', '--permission', 'sessions.validate', '--json']),
  ]);
  ok(t, human);
  t.is(human.stderr, '', 'nothing on stderr, where logs collect');
  const keys = human.stdout.match(KEY) ?? [];
  t.is(keys.length, 1, 'the key, once');
  const key = keys[0]!;
  t.regex(human.stdout, /^API key of principal web-frontend \(shown only now/);
  t.true(human.stdout.includes(apiKeySha256(key)));

  // The entry, pasted under "principals:", is a file the server loads.
  const file = join(dir, 'principals.yaml');
  writeFileSync(file, `principals:\n${human.stdout.slice(human.stdout.indexOf('  - name:'))}`);
  const read = readPrincipalsFile(file);
  t.deepEqual(read.problems, []);
  t.is(read.entries.length, 1);
  const [entry] = read.entries;
  t.is(entry!.principal.name, 'web-frontend');
  t.deepEqual(entry!.apiKeySha256, [apiKeySha256(key)]);
  t.deepEqual([...entry!.principal.permissions].sort(), ['sessions.read', 'sessions.validate', 'sessions.write'], 'the default, read (with validate) and write');
  t.true(entry!.principal.scope.includes('web-7'));
  t.false(entry!.principal.scope.includes('api-1'));

  ok(t, asJson);
  t.is(asJson.stderr, '');
  const g = JSON.parse(asJson.stdout) as GeneratedKey;
  t.deepEqual(Object.keys(g).sort(), ['api_key', 'entry', 'name']);
  t.is(g.name, 'gateway');
  t.true(g.api_key.startsWith(API_KEY_PREFIX));
  t.not(g.api_key, key, 'a new key every time');
  t.deepEqual(g.entry, { name: 'gateway', api_key_sha256: [apiKeySha256(g.api_key)], server_ids: ['*'], permissions: ['sessions.validate'] });
  t.is(occurrences(asJson.stdout, g.api_key), 1);
  t.deepEqual(principalsFromDocument({ principals: [g.entry] }).problems, []);
});

test('keys generate refuses what the principals file would refuse, and a key without a --server-id; it makes no key then', async (t) => {
  const gen = (...args: string[]) => runCli(['keys', 'generate', ...args]);
  const [noServerId, badName, longName, longestName, oddName, badPattern, badPermission, noName] = await Promise.all([
    gen('web'),
    gen('web frontend!', '--server-id', 'web-1'),
    gen('a'.repeat(129), '--server-id', 'web-1'),
    gen('a'.repeat(128), '--server-id', 'web-1', '--json'),
    gen('ops/cli:eu@prod-1.a_b', '--server-id', 'web-1', '--json'),
    gen('web', '--server-id', 'web-*-eu'),
    gen('web', '--server-id', 'web-1', '--permission', 'sessions.everything'),
    gen('--server-id', 'web-1'),
  ]);
  for (const r of [noServerId, badName, longName, badPattern, badPermission, noName]) {
    t.is(r.code, 64, r.stderr);
    t.is(r.stdout, '');
    t.is((r.stdout + r.stderr).match(KEY), null, 'no key was made');
  }
  t.regex(noServerId.stderr, /give at least one --server-id/);
  t.regex(badName.stderr, /^sessiond: keys generate: name: required: letters, digits and \._:@\/- \(at most 128\), starting with a letter or digit$/m);
  t.regex(longName.stderr, /name: required/);
  t.regex(badPattern.stderr, /server_ids\[0\]: .*"\*" may only end a pattern/);
  t.regex(badPermission.stderr, /not one of sessions\.validate, sessions\.read, sessions\.write, sessions\.events, admin/);
  t.regex(noName.stderr, /missing required argument 'name'/);
  for (const r of [longestName, oddName]) {
    ok(t, r);
    t.deepEqual(principalsFromDocument({ principals: [(JSON.parse(r.stdout) as GeneratedKey).entry] }).problems, []);
  }
});

test('a generated key lets the CLI call a server started with its entry, from --api-key or SESSIOND_API_KEY; a wrong key is UNAUTHENTICATED and never printed', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [webRun, opsRun] = await Promise.all([
    runCli(['keys', 'generate', 'web-backend', '--server-id', 'web-*', '--json']),
    runCli(['keys', 'generate', 'ops-cli', '--server-id', '*', '--permission', 'admin', '--json']),
  ]);
  const web = JSON.parse(webRun.stdout) as GeneratedKey;
  const ops = JSON.parse(opsRun.stdout) as GeneratedKey;
  // The test's own client: a writer for every server_id, to make sessions the CLI must or must not see.
  const seed = generateKey('seed', ['*'], ['sessions.write']);
  const file = join(dir, 'principals.json');
  // JSON is YAML too: the --json entries go into the file as they are.
  writeFileSync(file, JSON.stringify({ principals: [web.entry, ops.entry, seed.entry] }), { mode: 0o600 });
  const s = await startTestServer({ env: { SESSIOND_PRINCIPALS_FILE: file }, clientOptions: { apiKey: seed.api_key } });
  t.teardown(() => s.close());
  const mine = await s.client.createSession({ serverId: 'web-1', subject: 'alice' });
  const theirs = await s.client.createSession({ serverId: 'api-1', subject: 'bob' });

  const cli = (args: string[], env: Record<string, string> = {}) => runCli([...args, '--address', s.address], env);
  const wrongKey = newApiKey();
  const calls = {
    flag: cli(['sessions', 'list', '--json', '--api-key', web.api_key]),
    env: cli(['sessions', 'list', '--json'], { SESSIOND_API_KEY: web.api_key }),
    wrongEnv: cli(['sessions', 'list'], { SESSIOND_API_KEY: wrongKey }),
    wrongFlag: cli(['sessions', 'get', mine.session!.id, '--api-key', wrongKey]),
    none: cli(['sessions', 'list']),
    notAdmin: cli(['admin', 'status'], { SESSIOND_API_KEY: web.api_key }),
    adminKey: cli(['admin', 'status', '--json', '--api-key', ops.api_key]),
    // --admin-token wins on admin calls: the same API key alone is refused above (notAdmin).
    adminTokenWins: cli(['admin', 'checkpoint'], { SESSIOND_API_KEY: web.api_key, SESSIOND_ADMIN_TOKEN: ops.api_key }),
    othersById: cli(['sessions', 'get', theirs.session!.id], { SESSIOND_API_KEY: web.api_key }),
    othersRevoke: cli(['sessions', 'revoke', '--server-id', 'api-1'], { SESSIOND_API_KEY: web.api_key }),
    health: cli(['health']),
  };
  const results = Object.fromEntries(await Promise.all(Object.entries(calls).map(async ([k, p]) => [k, await p] as const))) as Record<keyof typeof calls, CliResult>;

  for (const r of [results.flag, results.env]) {
    const listed = JSON.parse(r.stdout) as { sessions: { id: string }[] };
    ok(t, r);
    t.deepEqual(listed.sessions.map((x) => x.id), [mine.session!.id], "only its own server_ids' sessions");
  }
  for (const r of [results.wrongEnv, results.wrongFlag, results.none]) {
    t.is(r.code, 1, r.stderr);
    t.is(r.stdout, '');
    t.regex(r.stderr, /^sessiond: UNAUTHENTICATED: /);
  }
  t.regex(results.wrongEnv.stderr, /the API key is not valid/);
  t.regex(results.none.stderr, /needs credentials/);
  t.is(results.notAdmin.code, 1);
  t.regex(results.notAdmin.stderr, /^sessiond: PERMISSION_DENIED: principal web-backend lacks the permission admin/);
  ok(t, results.adminKey);
  t.is((JSON.parse(results.adminKey.stdout) as { journalMode: string }).journalMode, 'wal');
  ok(t, results.adminTokenWins);
  t.is(results.othersById.code, 1);
  t.regex(results.othersById.stderr, /^sessiond: NOT_FOUND: /, "another backend's session is not found, not forbidden");
  t.is(results.othersRevoke.code, 1);
  t.regex(results.othersRevoke.stderr, /^sessiond: PERMISSION_DENIED: /);
  ok(t, results.health);
  for (const [name, r] of Object.entries(results)) {
    for (const key of [web.api_key, ops.api_key, seed.api_key, wrongKey]) t.false((r.stdout + r.stderr).includes(key), `${name}: no key printed`);
  }
  t.false(JSON.stringify(s.logs).includes(wrongKey), 'nor logged by the server');
});

test('a key rotates with no restart: both hashes listed, SIGHUP, clients switch, the old hash removed, SIGHUP', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'principals.yaml');
  const old = generateKey('web-backend', ['web-1'], ['sessions.read', 'sessions.write']);
  const next = newApiKey();
  writeAtomically(file, fileOf(old.entry));
  const server = await spawnCliServer([], { SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_PRINCIPALS_FILE: file });
  t.teardown(() => void (server.proc.exitCode === null && server.proc.kill('SIGKILL')));
  const list = (key: string) => runCli(['sessions', 'list', '--address', server.address], { SESSIOND_API_KEY: key });
  const sighups = () => server.stderr().split('\n').filter((l) => /"msg":"principals reloaded"/.test(l) && /"reason":"SIGHUP"/.test(l)).length;
  const reload = async () => {
    const before = sighups();
    server.proc.kill('SIGHUP');
    await waitFor(() => sighups() > before, 'the SIGHUP reload');
  };

  ok(t, await list(old.api_key));
  // 1. Add the new key's hash beside the old one.
  writeAtomically(file, fileOf({ ...old.entry, api_key_sha256: [...old.entry.api_key_sha256, apiKeySha256(next)] }));
  await reload();
  const [oldDuring, nextDuring] = await Promise.all([list(old.api_key), list(next)]);
  ok(t, oldDuring);
  ok(t, nextDuring);
  // 2. Clients have switched: remove the old hash.
  writeAtomically(file, fileOf({ ...old.entry, api_key_sha256: [apiKeySha256(next)] }));
  await reload();
  const [oldAfter, nextAfter] = await Promise.all([list(old.api_key), list(next)]);
  t.is(oldAfter.code, 1);
  t.regex(oldAfter.stderr, /^sessiond: UNAUTHENTICATED: the API key is not valid/);
  ok(t, nextAfter);

  // A file that does not load keeps the principals in force.
  writeAtomically(file, 'principals: [{name: broken}]\n');
  await waitFor(() => /principals reload failed/.test(server.stderr()), 'the failed reload');
  ok(t, await list(next));

  server.proc.kill('SIGTERM');
  t.is(await server.exited, 0);
  for (const key of [old.api_key, next]) t.false(server.stderr().includes(key), 'the server never logs a key');
});
