import test from 'ava';
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { newApiKey } from '../src/shared/api-keys';
import { makeTestCerts } from './helpers/certs';
import { startTestServer } from './helpers/server';
import { requireTool, tool, type Tool } from './helpers/tools';

/*
 * A real Go client (grpc-go from Debian's golang-google-grpc-dev) against a
 * real server, through the code `make clients-go` generates with Debian's
 * protoc, protoc-gen-go and protoc-gen-go-grpc and builds offline in GOPATH
 * mode. The program is clients/go/example; it prints JSON, asserted on here.
 * The servers have principals, as any server reachable from another host must:
 * the program sends its key from SESSIOND_API_KEY on every call but health.
 */

const ROOT = join(__dirname, '..');
const run = promisify(execFile);

// The build's tools (Debian packages; .ci/run installs them): without them the
// tests are visible skips, and failures under TESTS_REQUIRE_TOOLS=1.
const GRPC_GO = '/usr/share/gocode/src/google.golang.org/grpc';
const GO_TOOLS: Tool[] = [
  tool('go (apt-get install golang-go)', 'go', ['version']),
  tool('protoc (apt-get install protobuf-compiler)', 'protoc'),
  tool('protoc-gen-go (apt-get install protoc-gen-go)', 'protoc-gen-go', ['--version']),
  tool('protoc-gen-go-grpc (apt-get install protoc-gen-go-grpc)', 'protoc-gen-go-grpc', ['--version']),
  { name: `grpc-go sources in ${GRPC_GO} (apt-get install golang-google-grpc-dev)`, present: existsSync(GRPC_GO) },
];
const goTest = requireTool(...GO_TOOLS);

// The same target as a developer runs, into a folder kept between runs: make
// rebuilds only when proto/ or the program changed, and the Go build cache
// lives in the tree, so a warm run costs about as much as starting the program.
const GO_GEN = join(ROOT, '.test-output', 'go-client');
const EXAMPLE = join(GO_GEN, 'bin', 'sessiond-go-example');

test.before(async () => {
  // Nothing to build with: the tests are registered as skips (or failures in CI) already.
  if (GO_TOOLS.some((x) => !x.present)) return;
  await run('make', ['-s', 'clients-go', `GO_GEN=${GO_GEN}`], { cwd: ROOT, timeout: 300_000 });
});

interface Answer { correlation_id: number; valid: boolean; id?: string; reason: string; error_code: number; error_message?: string }
interface ExampleOutput {
  grpc_version: string;
  health?: { status: string; liveness: string; journal_mode: string };
  create?: { id: string; server_id: string; subject: string; attributes: Record<string, string>; token_length: number; lifetime_seconds: number };
  validate?: { valid: boolean; id: string };
  stream?: { batch_max: number; answers: Record<string, Answer> };
  revoke?: { revoked_count: number; valid_after: boolean; reason_after: string };
  /** Set when a call failed: the pass stops there, and the program exits 1. */
  error?: { call: string; code: string; details: string };
  /** Set when an answer was not what the API promises. */
  failed?: string;
}

/** The parent's environment without SESSIOND_* variables: each run gets only the key it is given. */
function envWith(apiKey: string | undefined): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_')));
  return apiKey === undefined ? base : { ...base, SESSIOND_API_KEY: apiKey };
}

/** Runs the example; `exitCode` 1 with `error` or `failed` set when the pass stopped. */
async function example(address: string, extra: string[] = [], apiKey?: string): Promise<ExampleOutput & { exitCode: number; stderr: string }> {
  try {
    const { stdout, stderr } = await run(EXAMPLE, [...extra, address], { timeout: 60_000, env: envWith(apiKey) });
    return { ...(JSON.parse(stdout) as ExampleOutput), exitCode: 0, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (e.code !== 1 || !e.stdout) throw err;
    return { ...(JSON.parse(e.stdout) as ExampleOutput), exitCode: 1, stderr: e.stderr ?? '' };
  }
}

const GO_BACKEND = { name: 'go-backend', serverIds: ['web-go'], permissions: ['sessions.read', 'sessions.write'] as const };

goTest('make clients-go generates the Go package for both services and builds the example', (t) => {
  const pkg = join(GO_GEN, 'src', 'sessiond', 'gen', 'sessions', 'v1');
  for (const f of ['session.pb.go', 'session_service.pb.go', 'session_service_grpc.pb.go', 'admin_service.pb.go', 'admin_service_grpc.pb.go']) {
    t.true(existsSync(join(pkg, f)), f);
  }
  t.notThrows(() => accessSync(EXAMPLE, constants.X_OK));
});

goTest('clients/go/README.md shows the commands this file runs, and a row for every flag the program has', async (t) => {
  const readme = readFileSync(join(ROOT, 'clients', 'go', 'README.md'), 'utf8');
  t.true(readme.includes('\nmake clients-go\n'), 'the build command');
  t.true(readme.includes('SESSIOND_API_KEY=sk_sessiond_... clients/go/gen/bin/sessiond-go-example 127.0.0.1:50051'), 'the run command, at the default GO_GEN');
  const { stderr } = await run(EXAMPLE, ['-h']);
  const flags = [...stderr.matchAll(/^ {2}(-[a-z-]+)/gm)].map((m) => m[1]!);
  t.true(flags.length >= 5, stderr);
  const rows = readme.split('\n').filter((line) => line.startsWith('| `-'));
  const documented = rows.flatMap((row) => [...row.split('|')[1]!.matchAll(/`(-[a-z-]+)`/g)].map((m) => m[1]!));
  t.deepEqual([...documented].sort(), [...flags].sort());
});

goTest('the Go client sends its API key, creates, validates one token and a batch on the stream, revokes, and checks health', async (t) => {
  const s = await startTestServer({ principals: [{ ...GO_BACKEND, permissions: [...GO_BACKEND.permissions] }] });
  try {
    const out = await example(s.address, [], s.keys['go-backend']);
    t.is(out.exitCode, 0, out.stderr);
    t.is(out.error, undefined);
    t.is(out.failed, undefined);
    t.regex(out.grpc_version, /^\d+\.\d+\.\d+/);
    t.deepEqual(out.health, { status: 'SERVING', liveness: 'SERVING', journal_mode: 'wal' });

    const created = out.create!;
    t.is(created.server_id, 'web-go');
    t.is(created.subject, 'alice-go');
    t.deepEqual(created.attributes, { lang: 'go' });
    t.true(created.token_length >= 22, 'a token of at least 128 bits');
    t.is(created.lifetime_seconds, 3600, 'the ttl Duration arrived');
    t.deepEqual(out.validate, { valid: true, id: created.id });

    // The server announced batches, so the three validations went in one message, each answered on its own.
    t.is(out.stream!.batch_max, 1000);
    t.deepEqual(out.stream!.answers, {
      '1': { correlation_id: 1, valid: true, id: created.id, reason: 'INVALID_REASON_UNSPECIFIED', error_code: 0 },
      '2': { correlation_id: 2, valid: false, reason: 'INVALID_REASON_NOT_FOUND', error_code: 0 },
      '3': { correlation_id: 3, valid: false, reason: 'INVALID_REASON_UNSPECIFIED', error_code: 3, error_message: 'token is required' },
    });
    t.deepEqual(out.revoke, { revoked_count: 1, valid_after: false, reason_after: 'INVALID_REASON_REVOKED' });
    // What the program printed is what the server holds: the session is gone.
    await t.throwsAsync(s.client.getSession(created.id), { message: /NOT_FOUND/ });
  } finally {
    await s.close();
  }
});

goTest('the Go client without a key, or with a wrong one, is UNAUTHENTICATED (health needs none); a key for other server_ids is PERMISSION_DENIED', async (t) => {
  const s = await startTestServer({
    principals: [
      { ...GO_BACKEND, permissions: [...GO_BACKEND.permissions] },
      { name: 'other-backend', serverIds: ['web-2', 'api-*'], permissions: ['sessions.read', 'sessions.write'] },
    ],
  });
  try {
    const wrongKey = newApiKey();
    const [none, wrong, other] = [await example(s.address), await example(s.address, [], wrongKey), await example(s.address, [], s.keys['other-backend'])];
    for (const out of [none, wrong, other]) {
      t.is(out.exitCode, 1);
      t.is(out.health?.status, 'SERVING', 'health answered first, without credentials');
      t.is(out.create, undefined, 'no session was made');
      t.is(out.error?.call, 'CreateSession');
    }
    for (const out of [none, wrong]) {
      t.is(out.error?.code, 'UNAUTHENTICATED');
      t.regex(out.stderr, /^sessiond-go-example: CreateSession: UNAUTHENTICATED: /);
    }
    t.regex(none.error!.details, /needs credentials/);
    t.regex(wrong.error!.details, /the API key is not valid/);
    t.false(JSON.stringify(wrong).includes(wrongKey), 'the key is not in the answer');
    t.is(other.error?.code, 'PERMISSION_DENIED');
    t.regex(other.error!.details, /principal other-backend may not act for server_id "web-go"/);
  } finally {
    await s.close();
  }
});

goTest('the Go client speaks mTLS and sends its key over it; without its certificate the handshake fails', async (t) => {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const s = await startTestServer({
    principals: [{ ...GO_BACKEND, permissions: [...GO_BACKEND.permissions] }],
    env: { SESSIOND_TLS_CERT: certs.serverCert, SESSIOND_TLS_KEY: certs.serverKey, SESSIOND_TLS_CLIENT_CA: certs.caCert },
  });
  try {
    const tls = ['-ca-file', certs.caCert, '-cert-file', certs.clientCert, '-key-file', certs.clientKey];
    const out = await example(s.address, tls, s.keys['go-backend']);
    t.is(out.exitCode, 0, out.stderr);
    t.is(out.health?.status, 'SERVING');
    t.true(out.validate?.valid);
    t.deepEqual(out.revoke, { revoked_count: 1, valid_after: false, reason_after: 'INVALID_REASON_REVOKED' });
    // Plaintext to a TLS port, and TLS without the client certificate, both fail on the first call.
    for (const extra of [[], ['-ca-file', certs.caCert]]) {
      const refused = await example(s.address, ['-timeout', '5s', ...extra], s.keys['go-backend']);
      t.is(refused.exitCode, 1);
      t.is(refused.health, undefined);
      t.is(refused.error?.call, 'Health.Check');
      t.is(refused.error?.code, 'UNAVAILABLE');
    }
  } finally {
    await s.close();
  }
});
