import test, { type ExecutionContext } from 'ava';
import { status } from '@grpc/grpc-js';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SessiondClient } from '../src/client/client';
import { ConfigError, loadConfig } from '../src/server/config';
import { principalsFromDocument, readPrincipalsFile } from '../src/server/principals-file';
import { rejectsWithCode } from './helpers/grpc';
import { spawnServer } from './helpers/process';
import { writePrincipals, type PrincipalSpec } from './helpers/principals';
import { startTestServer, tempDir } from './helpers/server';
import { waitFor } from './helpers/wait';

/*
 * The principals file: checked at start with every problem listed, reloaded
 * on SIGHUP and when it changes (also as a Kubernetes Secret volume swaps
 * it), and a reload that fails keeps the principals in force.
 */

const WEB: PrincipalSpec = { name: 'web', permissions: ['sessions.read', 'sessions.write'], serverIds: ['web-*'] };

async function metric(s: { app: { metrics: { registry: { getSingleMetricAsString(n: string): Promise<string> } } } }, name: string): Promise<string> {
  return s.app.metrics.registry.getSingleMetricAsString(name);
}

test('a changed file: the old key stops working and the new one works, without a restart', async (t) => {
  const s = await startTestServer({ principals: [WEB] });
  t.teardown(() => s.close());
  const oldKey = s.keys['web']!;
  t.truthy((await s.client.createSession({ serverId: 'web-1' })).token);
  // Written beside it, then renamed over it: a reader never sees half a file.
  const next = writePrincipals(s.dir, [WEB], 'next.yaml');
  renameSync(next.path, s.principalsFile!);
  await waitFor(() => s.logs.some((l) => l['msg'] === 'principals reloaded'), 'the reload');
  await rejectsWithCode(t, s.client.createSession({ serverId: 'web-1' }), status.UNAUTHENTICATED, /not valid/);
  const fresh = new SessiondClient(s.address, { apiKey: next.keys['web'], defaultDeadlineMs: 10_000 });
  t.teardown(() => fresh.close());
  t.truthy((await fresh.createSession({ serverId: 'web-1' })).token);
  t.regex(await metric(s, 'sessiond_principals_reloads_total'), /result="ok"} 1/);
  t.false(JSON.stringify(s.logs).includes(oldKey) || JSON.stringify(s.logs).includes(next.keys['web']!), 'no key in the log');
});

test('a broken file keeps the principals in force, says why in the log and a metric, and the next good file is taken', async (t) => {
  const s = await startTestServer({ principals: [WEB] });
  t.teardown(() => s.close());
  const broken = [
    'principals: [ {name: web, server_ids: [web-*], permissions: [sessions.read',
    'principals:\n  - name: web\n    api_key_sha256: [nothex]\n    server_ids: ["*"]\n    permissions: [sessions.write]\n',
    'principals:\n  - name: web\n    api_key_sha256: ["' + 'a'.repeat(64) + '"]\n    server_ids: ["*"]\n    permissions: [sessions.wrte]\n',
  ];
  for (const [i, text] of broken.entries()) {
    writeFileSync(join(s.dir, 'broken.yaml'), text);
    renameSync(join(s.dir, 'broken.yaml'), s.principalsFile!);
    await waitFor(() => s.logs.filter((l) => l['msg'] === 'principals reload failed; the previous principals stay in force').length > i, `failed reload ${i}`);
    t.truthy((await s.client.createSession({ serverId: 'web-1' })).token, 'the old key still works');
  }
  const failures = s.logs.filter((l) => l['level'] === 'error' && /reload failed/.test(String(l['msg'])));
  t.regex(JSON.stringify(failures[0]!['problems']), /not YAML or JSON/);
  t.regex(JSON.stringify(failures[1]!['problems']), /api_key_sha256\[0\]: is not 64 hex digits/);
  t.regex(JSON.stringify(failures[2]!['problems']), /permissions\[0\]: \\"sessions.wrte\\" is not one of/);
  t.regex(await metric(s, 'sessiond_principals_reload_failing'), / 1$/m);
  t.regex(await metric(s, 'sessiond_principals_reloads_total'), /result="failed"} 3/);
  // A removed file is a failed reload too: nothing changes.
  rmSync(s.principalsFile!);
  t.is(s.app.reloadPrincipals('test'), false);
  t.truthy((await s.client.createSession({ serverId: 'web-1' })).token);
  const good = writePrincipals(s.dir, [WEB], 'principals.yaml', s.keys);
  t.is(good.path, s.principalsFile!);
  t.true(s.app.reloadPrincipals('test'));
  t.regex(await metric(s, 'sessiond_principals_reload_failing'), / 0$/m);
});

test('a Kubernetes Secret volume update (the ..data symlink swapped to a new folder) is picked up', async (t) => {
  const dir = tempDir('sessiond-secret-volume-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const volume = join(dir, 'volume');
  mkdirSync(join(volume, '..2026_01'), { recursive: true });
  const first = writePrincipals(join(volume, '..2026_01'), [WEB]);
  symlinkSync('..2026_01', join(volume, '..data'));
  symlinkSync('..data/principals.yaml', join(volume, 'principals.yaml'));
  const s = await startTestServer({ env: { SESSIOND_PRINCIPALS_FILE: join(volume, 'principals.yaml') }, clientOptions: { apiKey: first.keys['web'] } });
  t.teardown(() => s.close());
  t.truthy((await s.client.createSession({ serverId: 'web-1' })).token);
  // What the kubelet does: a new timestamped folder, a new symlink, renamed over ..data.
  mkdirSync(join(volume, '..2026_02'));
  const second = writePrincipals(join(volume, '..2026_02'), [WEB]);
  symlinkSync('..2026_02', join(volume, '..data_tmp'));
  renameSync(join(volume, '..data_tmp'), join(volume, '..data'));
  rmSync(join(volume, '..2026_01'), { recursive: true });
  await waitFor(() => s.logs.some((l) => l['msg'] === 'principals reloaded'), 'the reload after the swap');
  await rejectsWithCode(t, s.client.createSession({ serverId: 'web-1' }), status.UNAUTHENTICATED);
  const c = new SessiondClient(s.address, { apiKey: second.keys['web'], defaultDeadlineMs: 10_000 });
  t.teardown(() => c.close());
  t.truthy((await c.createSession({ serverId: 'web-1' })).token);
});

test('SIGHUP reloads a real server process', async (t) => {
  const dir = tempDir('sessiond-sighup-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = writePrincipals(dir, [WEB]);
  const p = await spawnServer({ SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_PRINCIPALS_FILE: first.path });
  t.teardown(() => {
    if (p.proc.exitCode === null) p.proc.kill('SIGKILL');
  });
  const oldClient = new SessiondClient(p.address, { apiKey: first.keys['web'], defaultDeadlineMs: 10_000 });
  t.teardown(() => oldClient.close());
  t.truthy((await oldClient.createSession({ serverId: 'web-1' })).token);
  // Rewritten in place with the same size and mtime second is possible: SIGHUP does not depend on the watcher.
  const second = writePrincipals(dir, [WEB]);
  p.proc.kill('SIGHUP');
  await waitFor(() => /"msg":"principals reloaded","reason":"(SIGHUP|file changed)"/.test(p.stderr()), 'the reload');
  await rejectsWithCode(t, oldClient.createSession({ serverId: 'web-1' }), status.UNAUTHENTICATED);
  const c = new SessiondClient(p.address, { apiKey: second.keys['web'], defaultDeadlineMs: 10_000 });
  t.teardown(() => c.close());
  t.truthy((await c.createSession({ serverId: 'web-1' })).token);
  t.is(p.proc.exitCode, null, 'SIGHUP does not stop the server');
  p.proc.kill('SIGTERM');
  t.is(await p.exited, 0);
});

function problemsOf(t: ExecutionContext, doc: unknown): string[] {
  const r = principalsFromDocument(doc);
  t.deepEqual(r.entries, [], 'a file with a problem yields no principals at all');
  return r.problems;
}

test('the file is checked as a whole: every problem is listed, naming the entry and the field, never quoting a hash', (t) => {
  const hash = 'b'.repeat(64);
  const problems = problemsOf(t, {
    principals: [
      { name: 'web', api_key_sha256: hash, server_ids: ['web-*'], permissions: ['sessions.read'] },
      { name: 'web', api_key_sha256: [hash], server_ids: ['w*b'], permissions: ['sessions.read', 'root'], extra: 1 },
      { name: '-bad', server_ids: [], permissions: [] },
      'not a mapping',
      { name: 'certs', tls_identity: ' spiffe://x ', server_ids: ['*'], permissions: ['admin'] },
    ],
    version: 2,
  });
  const want = [
    /^unknown top-level field "version"$/,
    /^principals\[1\] \(web\): extra: unknown field/,
    /^principals\[1\] \(web\): name: another principal has this name$/,
    /^principals\[1\] \(web\): api_key_sha256\[0\]: the same key is also listed for web$/,
    /^principals\[1\] \(web\): server_ids\[0\]: "w\*b": "\*" may only end a pattern/,
    /^principals\[1\] \(web\): permissions\[1\]: "root" is not one of sessions.validate, sessions.read, sessions.write, sessions.events, admin$/,
    /^principals\[2\] \(-bad\): name: required/,
    /^principals\[2\] \(-bad\): needs api_key_sha256 or tls_identity/,
    /^principals\[2\] \(-bad\): server_ids: required/,
    /^principals\[2\] \(-bad\): permissions: required/,
    /^principals\[3\]: must be a mapping/,
    /^principals\[4\] \(certs\): tls_identity\[0\]: must be a SAN without surrounding spaces/,
  ];
  for (const re of want) t.is(problems.filter((p) => re.test(p)).length, 1, `one problem matching ${re} in ${JSON.stringify(problems, null, 1)}`);
  t.is(problems.length, want.length, JSON.stringify(problems, null, 1));
  t.false(problems.some((p) => p.includes(hash)), 'no hash is quoted');
  t.deepEqual(problemsOf(t, { principals: 'x' }), ['the file must be a mapping with a list "principals" (see docs/security.md)']);
  t.deepEqual(problemsOf(t, null), ['the file must be a mapping with a list "principals" (see docs/security.md)']);
});

test('a good file in YAML or JSON gives its principals; permissions imply one another as documented', (t) => {
  const dir = tempDir('sessiond-principals-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const hash = 'C'.repeat(64);
  const doc = { principals: [{ name: 'web', api_key_sha256: [hash], tls_identity: 'spiffe://cluster.local/ns/web/sa/api', server_ids: ['web-1', 'web-*'], permissions: ['sessions.read'] }] };
  writeFileSync(join(dir, 'p.json'), JSON.stringify(doc));
  writeFileSync(join(dir, 'p.yaml'), 'principals:\n  - name: web\n    api_key_sha256: ["' + hash + '"]\n    tls_identity: spiffe://cluster.local/ns/web/sa/api\n    server_ids: [web-1, "web-*"]\n    permissions: [sessions.read]\n');
  for (const f of ['p.json', 'p.yaml']) {
    const r = readPrincipalsFile(join(dir, f));
    t.deepEqual(r.problems, [], f);
    const e = r.entries[0]!;
    t.is(e.principal.name, 'web');
    t.deepEqual(e.apiKeySha256, ['c'.repeat(64)], 'hashes are compared in lower case');
    t.deepEqual(e.tlsIdentities, ['spiffe://cluster.local/ns/web/sa/api']);
    t.deepEqual([...e.principal.permissions].sort(), ['sessions.read', 'sessions.validate']);
    t.true(e.principal.scope.includes('web-9') && e.principal.scope.includes('web-1') && !e.principal.scope.includes('api-1'));
  }
  t.deepEqual(readPrincipalsFile(join(dir, 'missing.yaml')).problems, ['cannot read the file (ENOENT)']);
});

test('start-up lists the file\'s problems with the other configuration problems, naming the file', (t) => {
  const dir = tempDir('sessiond-principals-config-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'p.yaml'), 'principals:\n  - name: web\n    server_ids: ["*"]\n    permissions: [sessions.read]\n');
  const err = t.throws(() => loadConfig([], { SESSIOND_PRINCIPALS_FILE: join(dir, 'p.yaml'), SESSIOND_CACHE_SIZE: 'lots' }), { instanceOf: ConfigError }) as ConfigError;
  t.is(err.problems.length, 2, JSON.stringify(err.problems));
  t.true(err.problems.some((p) => p.startsWith(`principals-file ${join(dir, 'p.yaml')}: principals[0] (web): needs api_key_sha256 or tls_identity`)));
  // With principals, a non-loopback listen is fine; with allow-unauthenticated too, it is a contradiction.
  const ok = writePrincipals(dir, [WEB]);
  t.is(loadConfig([], { SESSIOND_PRINCIPALS_FILE: ok.path, SESSIOND_LISTEN: '0.0.0.0:50051' }).config.server.principalsFile, ok.path);
  const both = t.throws(() => loadConfig([], { SESSIOND_PRINCIPALS_FILE: ok.path, SESSIOND_ALLOW_UNAUTHENTICATED: 'true' }), { instanceOf: ConfigError }) as ConfigError;
  t.regex(both.problems.join('\n'), /allow-unauthenticated has no effect with principals configured/);
});

test('open validation streams are checked again at a reload: a removed key ends its stream, a kept one goes on with its new server_ids', async (t) => {
  const GW: PrincipalSpec = { name: 'gateway', permissions: ['sessions.validate'], serverIds: ['web-*'] };
  const s = await startTestServer({ principals: [WEB, GW, { ...GW, name: 'old-gateway' }] });
  t.teardown(() => s.close());
  const web1 = await s.client.createSession({ serverId: 'web-1' });
  const kept = s.clientAs('gateway').openValidator();
  const removed = s.clientAs('old-gateway').openValidator();
  t.teardown(() => {
    kept.close();
    removed.close();
  });
  t.true((await kept.validate(web1.token)).valid);
  t.true((await removed.validate(web1.token)).valid);
  // gateway keeps its key but now sees only api-*; old-gateway is gone.
  writePrincipals(s.dir, [WEB, { ...GW, serverIds: ['api-*'] }], 'principals.yaml', s.keys);
  t.true(s.app.reloadPrincipals('test'));
  const err = (await t.throwsAsync(removed.validate(web1.token))) as { code?: number; details?: string };
  t.is(err.code, status.UNAUTHENTICATED, JSON.stringify(err));
  t.regex(String(err.details), /not valid/);
  t.like(await kept.validate(web1.token), { valid: false, reason: 1 }, 'the same stream now answers with the new server_ids');
});
