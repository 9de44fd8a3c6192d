import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeTestCerts } from './helpers/certs';
import { startTestServer, tempDir } from './helpers/server';

/*
 * A real Python grpcio client (Debian's python3-grpcio, run with
 * /usr/bin/python3) against a real server, through the code `make clients`
 * generates with Debian's protoc and grpc_python_plugin. The script is
 * clients/python/smoke.py; it prints JSON, asserted on here.
 */

const ROOT = join(__dirname, '..');
const PYTHON = '/usr/bin/python3';
const run = promisify(execFile);

let gen: string;

test.before(async () => {
  for (const [tool, pkg] of [[PYTHON, 'python3'], ['/usr/bin/protoc', 'protobuf-compiler'], ['/usr/bin/grpc_python_plugin', 'protobuf-compiler-grpc']] as const) {
    if (!existsSync(tool)) throw new Error(`${tool} is missing: apt-get install ${pkg} (.ci/run installs it)`);
  }
  await run(PYTHON, ['-c', 'import grpc, google.protobuf']).catch(() => {
    throw new Error(`${PYTHON} cannot import grpc: apt-get install python3-grpcio python3-protobuf (.ci/run installs them)`);
  });
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
}

async function smoke(address: string, extra: string[] = []): Promise<SmokeOutput> {
  const { stdout } = await run(PYTHON, [join(ROOT, 'clients', 'python', 'smoke.py'), address, '--gen', gen, ...extra], { timeout: 60_000 });
  return JSON.parse(stdout) as SmokeOutput;
}

test('make clients generates the Python modules for both services and the health protocol', (t) => {
  for (const f of ['sessions/v1/session_service_pb2.py', 'sessions/v1/session_service_pb2_grpc.py', 'sessions/v1/admin_service_pb2_grpc.py', 'sessions/v1/session_pb2.py', 'health_pb2_grpc.py']) {
    t.true(existsSync(join(gen, f)), f);
  }
});

test('the Python client creates, validates, lists and revokes sessions, gets NOT_FOUND, checkpoints and checks health', async (t) => {
  const s = await startTestServer();
  try {
    const out = await smoke(s.address);
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

    // What Python saw is what the server holds.
    const fromNode = await s.client.getSession(out.create.id).catch((err: { code: number }) => err.code);
    t.is(fromNode, 5 /* NOT_FOUND */);
  } finally {
    await s.close();
  }
});

test('the Python client speaks mTLS and sends the admin token', async (t) => {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const adminToken = 'python-admin-token-0123456789';
  const s = await startTestServer({
    env: { SESSIOND_TLS_CERT: certs.serverCert, SESSIOND_TLS_KEY: certs.serverKey, SESSIOND_TLS_CLIENT_CA: certs.caCert, SESSIOND_ADMIN_TOKEN: adminToken },
  });
  try {
    const out = await smoke(s.address, ['--ca-file', certs.caCert, '--cert-file', certs.clientCert, '--key-file', certs.clientKey, '--admin-token', adminToken]);
    t.is(out.health.status, 'SERVING');
    t.true(out.validate.valid);
    t.is(out.checkpoint.mode, 'CHECKPOINT_MODE_TRUNCATE');
    // Without the client certificate, the handshake fails before any call.
    const err = await t.throwsAsync(smoke(s.address, ['--ca-file', certs.caCert, '--admin-token', adminToken]));
    t.regex(String((err as { stderr?: string }).stderr), /StatusCode\.UNAVAILABLE/);
  } finally {
    await s.close();
  }
});
