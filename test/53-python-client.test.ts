import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { apiKeySha256, newApiKey } from '../src/shared/api-keys';
import { makeTestCerts } from './helpers/certs';
import { startTestServer, tempDir, type TestServer } from './helpers/server';
import { requireTool, tool } from './helpers/tools';

/*
 * A real Python grpcio client (Debian's python3-grpcio, run with
 * /usr/bin/python3) against a real server, through the code `make clients`
 * generates with Debian's protoc and grpc_python_plugin. The script is
 * clients/python/smoke.py; it prints JSON, asserted on here. The servers have
 * principals, as any server reachable from another host must: the script
 * sends its key from SESSIOND_API_KEY on every call.
 */

const ROOT = join(__dirname, '..');
const PYTHON = '/usr/bin/python3';
const run = promisify(execFile);

let gen: string;

const TOOLS = [
  tool('python3 with grpc (apt-get install python3 python3-grpcio python3-protobuf)', PYTHON, ['-c', 'import grpc, google.protobuf']),
  tool('protoc (apt-get install protobuf-compiler)', '/usr/bin/protoc', ['--version']),
  { name: 'grpc_python_plugin (apt-get install protobuf-compiler-grpc)', present: existsSync('/usr/bin/grpc_python_plugin') },
];
const pyTest = requireTool(...TOOLS);

test.before(async () => {
  if (TOOLS.some((x) => !x.present)) return;
  // The same target as a developer runs, into a folder of this run's own.
  gen = tempDir('sessiond-pygen-');
  await run('make', ['-s', 'clients', `PY_GEN=${gen}`], { cwd: ROOT });
});
test.after.always(() => gen && rmSync(gen, { recursive: true, force: true }));

interface SmokeOutput {
  grpc_version: string;
  health: { status: string; liveness: string; journal_mode: string; wal_frames: string };
  create: { id: string; server_id: string; subject: string; attributes: Record<string, string>; token_length: number; etag: string; lifetime_seconds: number };
  validate: { valid: boolean; id: string };
  list: { ids: string[]; next_page_token: string };
  revoke: { revoked_count: number; valid_after: boolean; reason_after: string };
  get_revoked: { code: string; details?: string };
  checkpoint: { mode: string; busy: boolean; log_frames: number; checkpointed_frames: number; wal_bytes: number };
  /** Set when a call failed: the pass stops there, and the script exits 1. */
  error?: { code: string; details: string };
}

/** The parent's environment without SESSIOND_* variables: each run gets only the key it is given. */
function envWith(apiKey: string | undefined): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_')));
  return apiKey === undefined ? base : { ...base, SESSIOND_API_KEY: apiKey };
}

/** Runs smoke.py; `exitCode` 1 with `error` set when a call failed. */
async function smoke(address: string, extra: string[] = [], apiKey?: string): Promise<SmokeOutput & { exitCode: number; stderr: string }> {
  try {
    const { stdout, stderr } = await run(PYTHON, [join(ROOT, 'clients', 'python', 'smoke.py'), address, '--gen', gen, ...extra], { timeout: 60_000, env: envWith(apiKey) });
    return { ...(JSON.parse(stdout) as SmokeOutput), exitCode: 0, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (e.code !== 1 || !e.stdout) throw err;
    return { ...(JSON.parse(e.stdout) as SmokeOutput), exitCode: 1, stderr: e.stderr ?? '' };
  }
}

/** A principals file of these entries in the server's folder, as the file the server is started with. */
function principalsFile(dir: string, principals: object[]): string {
  const file = join(dir, 'principals.json');
  writeFileSync(file, JSON.stringify({ principals }), { mode: 0o600 });
  return file;
}

async function serverWithPrincipals(principals: (key: (name: string) => string) => object[], env: Record<string, string> = {}): Promise<{ s: TestServer; keys: Map<string, string> }> {
  const dir = tempDir();
  const keys = new Map<string, string>();
  const key = (name: string) => {
    const k = newApiKey();
    keys.set(name, k);
    return apiKeySha256(k);
  };
  const s = await startTestServer({ dir, env: { SESSIOND_PRINCIPALS_FILE: principalsFile(dir, principals(key)), ...env } });
  const close = s.close.bind(s);
  s.close = async () => {
    await close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { s, keys };
}

pyTest('make clients generates the Python modules for both services and the health protocol', (t) => {
  for (const f of ['sessions/v1/session_service_pb2.py', 'sessions/v1/session_service_pb2_grpc.py', 'sessions/v1/admin_service_pb2_grpc.py', 'sessions/v1/session_pb2.py', 'health_pb2_grpc.py']) {
    t.true(existsSync(join(gen, f)), f);
  }
});

pyTest('the Python client sends its API key and creates, validates, lists and revokes sessions, gets NOT_FOUND, checkpoints and checks health', async (t) => {
  const { s, keys } = await serverWithPrincipals((key) => [
    { name: 'python-backend', api_key_sha256: key('python-backend'), server_ids: ['web-py'], permissions: ['sessions.read', 'sessions.write', 'admin'] },
  ]);
  try {
    const out = await smoke(s.address, [], keys.get('python-backend'));
    t.is(out.exitCode, 0, out.stderr);
    t.is(out.error, undefined);
    t.deepEqual(out.health, { status: 'SERVING', liveness: 'SERVING', journal_mode: 'wal', wal_frames: out.health.wal_frames });
    t.regex(out.health.wal_frames, /^\d+$/);

    t.is(out.create.server_id, 'web-py');
    t.is(out.create.subject, 'alice-py');
    t.deepEqual(out.create.attributes, { lang: 'python' });
    t.true(out.create.token_length >= 22, 'a token of at least 128 bits');
    t.is(out.create.lifetime_seconds, 3600, 'the ttl Duration arrived');
    t.not(out.create.etag, '');

    t.deepEqual(out.validate, { valid: true, id: out.create.id });
    t.deepEqual(out.list, { ids: [out.create.id], next_page_token: '' });
    t.deepEqual(out.revoke, { revoked_count: 1, valid_after: false, reason_after: 'INVALID_REASON_REVOKED' });
    t.is(out.get_revoked.code, 'NOT_FOUND');

    t.is(out.checkpoint.mode, 'CHECKPOINT_MODE_TRUNCATE');
    t.false(out.checkpoint.busy);
    t.is(out.checkpoint.wal_bytes, 0, 'TRUNCATE emptied the -wal file');
  } finally {
    await s.close();
  }
});

pyTest('the Python client without a key, or with a wrong one, is UNAUTHENTICATED (health needs none); a key for other server_ids is PERMISSION_DENIED', async (t) => {
  const { s, keys } = await serverWithPrincipals((key) => [
    { name: 'python-backend', api_key_sha256: key('python-backend'), server_ids: ['web-py'], permissions: ['sessions.read', 'sessions.write'] },
    { name: 'other-backend', api_key_sha256: key('other-backend'), server_ids: ['web-2', 'api-*'], permissions: ['sessions.read', 'sessions.write'] },
  ]);
  try {
    const wrongKey = newApiKey();
    const [none, wrong, other] = [await smoke(s.address), await smoke(s.address, [], wrongKey), await smoke(s.address, [], keys.get('other-backend'))];
    for (const out of [none, wrong]) {
      t.is(out.exitCode, 1);
      t.is(out.health.status, 'SERVING', 'health answered first, without credentials');
      t.false('create' in out, 'no session was made');
      t.is(out.error?.code, 'UNAUTHENTICATED');
      t.regex(out.stderr, /^smoke\.py: UNAUTHENTICATED: /);
    }
    t.regex(none.error!.details, /needs credentials/);
    t.regex(wrong.error!.details, /the API key is not valid/);
    t.false(JSON.stringify(wrong).includes(wrongKey), 'the key is not in the answer');
    t.is(other.exitCode, 1);
    t.is(other.error?.code, 'PERMISSION_DENIED');
    t.regex(other.error!.details, /principal other-backend may not act for server_id "web-py"/);
  } finally {
    await s.close();
  }
});

pyTest('the Python client speaks mTLS, sends its key, and sends the admin token on admin calls in its place', async (t) => {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const adminToken = newApiKey();
  const { s, keys } = await serverWithPrincipals(
    (key) => [{ name: 'python-backend', api_key_sha256: key('python-backend'), server_ids: ['web-py'], permissions: ['sessions.read', 'sessions.write'] }],
    { SESSIOND_TLS_CERT: certs.serverCert, SESSIOND_TLS_KEY: certs.serverKey, SESSIOND_TLS_CLIENT_CA: certs.caCert, SESSIOND_ADMIN_TOKEN: adminToken },
  );
  try {
    const tls = ['--ca-file', certs.caCert, '--cert-file', certs.clientCert, '--key-file', certs.clientKey];
    const out = await smoke(s.address, [...tls, '--admin-token', adminToken], keys.get('python-backend'));
    t.is(out.exitCode, 0, out.stderr);
    t.is(out.health.status, 'SERVING');
    t.true(out.validate.valid);
    t.is(out.checkpoint.mode, 'CHECKPOINT_MODE_TRUNCATE', 'the admin token, not the backend key, went on the admin call');
    // Without the admin token, the backend's own key is sent, and it lacks the admin permission.
    const noAdmin = await smoke(s.address, tls, keys.get('python-backend'));
    t.is(noAdmin.error?.code, 'PERMISSION_DENIED');
    t.regex(noAdmin.error!.details, /lacks the permission admin/);
    // A verified client certificate is not a principal unless the file names one of its SANs.
    const certOnly = await smoke(s.address, tls);
    t.is(certOnly.error?.code, 'UNAUTHENTICATED');
    t.regex(certOnly.error!.details, /the client certificate names no principal/);
    // Without the client certificate, the handshake fails before any call.
    const noCert = await smoke(s.address, ['--ca-file', certs.caCert], keys.get('python-backend'));
    t.is(noCert.exitCode, 1);
    t.is(noCert.error?.code, 'UNAVAILABLE');
  } finally {
    await s.close();
  }
});
