import test from 'ava';
import { credentials, status } from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startApp } from '../src/server/app';
import { SessiondClient, ServingStatus, tlsCredentials, type ClientOptions } from '../src/client/client';
import { ConfigError, loadConfig } from '../src/server/config';
import { createLogger } from '../src/server/log';
import { CLIENT_DNS, CLIENT_URI, makeTestCerts, NAMED_HOST, type TestCerts } from './helpers/certs';
import { rejectsWithCode } from './helpers/grpc';
import { writePrincipals } from './helpers/principals';
import { runServerToExit } from './helpers/process';
import { startTestServer, tempDir, type TestServer } from './helpers/server';

/*
 * TLS and mTLS with certificates openssl makes for this run: a CA, a server
 * certificate for 127.0.0.1 and localhost, a client certificate, and a second
 * CA that nobody trusts. Real servers, real handshakes; TLS files that cannot
 * be used stop start-up with the path named.
 */

let certs: TestCerts;
test.before(() => {
  certs = makeTestCerts();
});
test.after.always(() => certs?.remove());

const DEADLINE = 5000;

function tlsEnv(mtls = false): Record<string, string> {
  return {
    SESSIOND_TLS_CERT: certs.serverCert,
    SESSIOND_TLS_KEY: certs.serverKey,
    ...(mtls ? { SESSIOND_TLS_CLIENT_CA: certs.caCert } : {}),
  };
}

async function withServer(env: Record<string, string>, fn: (s: TestServer) => Promise<void>): Promise<void> {
  // The helper's own client is plaintext; the tests dial their own.
  const s = await startTestServer({ env });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

function dial(s: TestServer, options: ClientOptions, host = '127.0.0.1'): SessiondClient {
  return new SessiondClient(`${host}:${s.app.port}`, { defaultDeadlineMs: DEADLINE, ...options });
}

async function using<T>(client: SessiondClient, fn: (c: SessiondClient) => Promise<T>): Promise<T> {
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

test('TLS: a client that trusts the CA creates and validates sessions, and health answers over TLS', async (t) => {
  await withServer(tlsEnv(), async (s) => {
    t.deepEqual(s.config.server.tls, { certFile: certs.serverCert, keyFile: certs.serverKey, clientCaFile: undefined });
    t.true(s.logs.some((l) => l['msg'] === 'serving' && l['transport'] === 'tls'), 'the serving line says tls');
    await using(dial(s, { credentials: tlsCredentials({ caFile: certs.caCert }) }), async (c) => {
      const { session, token } = await c.createSession({ serverId: 'web-1', subject: 'alice' });
      const check = await c.validateSession(token);
      t.true(check.valid);
      t.is(check.session?.id, session?.id);
      const h = await c.health('');
      t.is(h.status, ServingStatus.SERVING);
      t.is(String(h.metadata.get('x-sessiond-journal-mode')[0]), 'wal', 'the storage metadata arrives over TLS too');
      // Admin calls from loopback without a token, as over plaintext: TLS changes no admin rule.
      t.false((await c.checkpoint({ mode: 4 })).busy);
    });
    // The certificate's DNS name works as well as its IP address.
    await using(dial(s, { credentials: tlsCredentials({ caFile: certs.caCert }) }, 'localhost'), async (c) => {
      t.is((await c.health('sessions.v1.SessionService')).status, ServingStatus.SERVING);
    });
  });
});

test('TLS: a plaintext client, and a client that trusts another CA, cannot connect', async (t) => {
  await withServer(tlsEnv(), async (s) => {
    await using(dial(s, { credentials: credentials.createInsecure() }), async (c) => {
      await rejectsWithCode(t, c.health(''), status.UNAVAILABLE);
      await rejectsWithCode(t, c.createSession({ serverId: 'web-1' }), status.UNAVAILABLE);
    });
    await using(dial(s, { credentials: tlsCredentials({ caFile: certs.otherCaCert }) }), async (c) => {
      await rejectsWithCode(t, c.health(''), status.UNAVAILABLE);
    });
    // Nothing reached storage.
    const { sessions } = await using(dial(s, { credentials: tlsCredentials({ caFile: certs.caCert }) }), (c) => c.listSessions({}));
    t.is(sessions.length, 0);
  });
});

test('TLS: a client that trusts the CA refuses a server whose certificate another CA signed', async (t) => {
  await withServer({ SESSIOND_TLS_CERT: certs.otherServerCert, SESSIOND_TLS_KEY: certs.otherServerKey }, async (s) => {
    await using(dial(s, { credentials: tlsCredentials({ caFile: certs.caCert }) }), async (c) => {
      await rejectsWithCode(t, c.health(''), status.UNAVAILABLE);
    });
  });
});

test('mTLS: a client certificate from the trusted CA gets in; none, or one from another CA, does not', async (t) => {
  await withServer(tlsEnv(true), async (s) => {
    t.is(s.config.server.tls?.clientCaFile, certs.caCert);
    t.true(s.logs.some((l) => l['msg'] === 'serving' && l['transport'] === 'mtls'), 'the serving line says mtls');
    await using(dial(s, { credentials: tlsCredentials({ caFile: certs.caCert, certFile: certs.clientCert, keyFile: certs.clientKey }) }), async (c) => {
      const { token } = await c.createSession({ serverId: 'web-1', subject: 'bob' });
      t.true((await c.validateSession(token)).valid);
      t.is((await c.health('')).status, ServingStatus.SERVING);
    });
    await using(dial(s, { credentials: tlsCredentials({ caFile: certs.caCert }) }), async (c) => {
      await rejectsWithCode(t, c.health(''), status.UNAVAILABLE);
    });
    await using(dial(s, { credentials: tlsCredentials({ caFile: certs.caCert, certFile: certs.otherClientCert, keyFile: certs.otherClientKey }) }), async (c) => {
      await rejectsWithCode(t, c.health(''), status.UNAVAILABLE);
    });
    await using(dial(s, { credentials: credentials.createInsecure() }), async (c) => {
      await rejectsWithCode(t, c.health(''), status.UNAVAILABLE);
    });
  });
});

test('mTLS with principals: a verified certificate names its principal by SAN; one that names none is UNAUTHENTICATED; an API key still works', async (t) => {
  const adminToken = 'admin-token-for-the-mtls-test';
  const dir = tempDir('sessiond-mtls-principals-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = writePrincipals(dir, [
    { name: 'ops-cli', permissions: ['admin', 'sessions.read'], serverIds: ['*'], tlsIdentity: [CLIENT_URI], key: false },
    { name: 'web-backend', permissions: ['sessions.write', 'sessions.read'], serverIds: ['web-*'], tlsIdentity: [CLIENT_DNS], key: false },
  ]);
  await withServer({ ...tlsEnv(true), SESSIOND_ADMIN_TOKEN: adminToken, SESSIOND_PRINCIPALS_FILE: file.path }, async (s) => {
    const creds = (cert: string, key: string) => tlsCredentials({ caFile: certs.caCert, certFile: cert, keyFile: key });
    // CN=web-1 and no SAN: verified, but no principal is named by it.
    await using(dial(s, { credentials: creds(certs.clientCert, certs.clientKey) }), async (c) => {
      await rejectsWithCode(t, c.getStorageStatus(), status.UNAUTHENTICATED, /names no principal/);
      await rejectsWithCode(t, c.createSession({ serverId: 'web-1' }), status.UNAUTHENTICATED, /names no principal/);
    });
    // The same connection with the admin token: the key decides.
    await using(dial(s, { credentials: creds(certs.clientCert, certs.clientKey), adminToken }), async (c) => {
      t.is((await c.getStorageStatus()).journalMode.toLowerCase(), 'wal');
    });
    // A DNS SAN: a backend of web-*.
    let id = '';
    await using(dial(s, { credentials: creds(certs.dnsClientCert, certs.dnsClientKey) }), async (c) => {
      const created = await c.createSession({ serverId: 'web-1' });
      id = created.session!.id;
      t.true((await c.validateSession(created.token)).valid);
      await rejectsWithCode(t, c.createSession({ serverId: 'api-1' }), status.PERMISSION_DENIED, /web-backend may not act for server_id "api-1"/);
      await rejectsWithCode(t, c.getStorageStatus(), status.PERMISSION_DENIED, /web-backend lacks the permission admin/);
    });
    // A URI SAN (SPIFFE): an operator with admin and read.
    await using(dial(s, { credentials: creds(certs.uriClientCert, certs.uriClientKey) }), async (c) => {
      t.is((await c.getStorageStatus()).liveSessions, 1);
      t.is((await c.getSession(id)).session?.serverId, 'web-1');
      await rejectsWithCode(t, c.createSession({ serverId: 'web-1' }), status.PERMISSION_DENIED, /ops-cli lacks the permission sessions.write/);
    });
  });
});

test('TLS settings: each problem is listed, naming the setting and the path', (t) => {
  const dir = tempDir('sessiond-tls-config-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const garbage = join(dir, 'garbage.pem');
  writeFileSync(garbage, 'not a certificate\n');
  const missing = join(dir, 'missing.pem');
  const problemsOf = (env: Record<string, string>) => {
    const err = t.throws(() => loadConfig([], env), { instanceOf: ConfigError }) as ConfigError;
    return err.problems;
  };

  t.deepEqual(problemsOf({ SESSIOND_TLS_CERT: certs.serverCert }), ['tls-cert is set without tls-key: TLS needs the certificate chain and its private key']);
  t.deepEqual(problemsOf({ SESSIOND_TLS_KEY: certs.serverKey }), ['tls-key is set without tls-cert: TLS needs the certificate chain and its private key']);
  t.deepEqual(problemsOf({ SESSIOND_TLS_CLIENT_CA: certs.caCert }), ['tls-client-ca (mTLS) needs tls-cert and tls-key: client certificates are only asked for over TLS']);

  // Several file problems at once, and a bad unrelated setting with them.
  const problems = problemsOf({ SESSIOND_TLS_CERT: missing, SESSIOND_TLS_KEY: garbage, SESSIOND_TLS_CLIENT_CA: dir, SESSIOND_CACHE_SIZE: 'x' });
  t.is(problems.length, 4, JSON.stringify(problems));
  t.true(problems.includes(`tls-cert ${missing}: cannot read the file (ENOENT)`), JSON.stringify(problems));
  t.true(problems.includes(`tls-key ${garbage}: not a PEM private key`), JSON.stringify(problems));
  t.true(problems.includes(`tls-client-ca ${dir}: cannot read the file (EISDIR: a directory)`), JSON.stringify(problems));

  // A key that is not the certificate's, and a certificate file that holds no certificate.
  t.deepEqual(problemsOf({ SESSIOND_TLS_CERT: certs.serverCert, SESSIOND_TLS_KEY: certs.clientKey }), [
    `tls-key ${certs.clientKey} is not the private key of the certificate in tls-cert ${certs.serverCert}`,
  ]);
  t.deepEqual(problemsOf({ SESSIOND_TLS_CERT: certs.serverKey, SESSIOND_TLS_KEY: certs.serverKey }), [
    `tls-cert ${certs.serverKey}: no PEM certificate ("-----BEGIN CERTIFICATE-----") in the file`,
  ]);

  // Empty values mean plaintext, as when unset.
  t.is(loadConfig([], { SESSIOND_TLS_CERT: '', SESSIOND_TLS_KEY: '', SESSIOND_TLS_CLIENT_CA: '' }).config.server.tls, undefined);
  // Flags work as well as variables.
  const { config } = loadConfig(['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-client-ca', certs.caCert], {});
  t.deepEqual(config.server.tls, { certFile: certs.serverCert, keyFile: certs.serverKey, clientCaFile: certs.caCert });
});

test('start-up with unusable TLS files exits 2, naming each path on stderr', async (t) => {
  const dir = tempDir('sessiond-tls-exit-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const missing = join(dir, 'no-such-cert.pem');
  const env = { SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_TLS_CERT: missing, SESSIOND_TLS_KEY: certs.clientKey, SESSIOND_TLS_CLIENT_CA: join(dir, 'no-such-ca.pem') };
  const r = await runServerToExit(env);
  t.is(r.code, 2, r.stderr);
  t.true(r.stderr.includes(`tls-cert ${missing}: cannot read the file (ENOENT)`), r.stderr);
  t.true(r.stderr.includes(`tls-client-ca ${join(dir, 'no-such-ca.pem')}: cannot read the file (ENOENT)`), r.stderr);
  t.false(existsSync(join(dir, 'sessions.db')), 'the database is not created when the configuration is bad');

  const mismatch = await runServerToExit({ SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_TLS_CERT: certs.serverCert, SESSIOND_TLS_KEY: certs.otherServerKey });
  t.is(mismatch.code, 2, mismatch.stderr);
  t.true(mismatch.stderr.includes(certs.otherServerKey) && mismatch.stderr.includes(certs.serverCert), mismatch.stderr);
});

test('a TLS file that disappears between validation and start-up fails startApp, naming the path, before the database is opened', async (t) => {
  const dir = tempDir('sessiond-tls-start-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cert = join(dir, 'server.pem');
  copyFileSync(certs.serverCert, cert);
  const dbPath = join(dir, 'sessions.db');
  const { config } = loadConfig([], { SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_DB_PATH: dbPath, SESSIOND_TLS_CERT: cert, SESSIOND_TLS_KEY: certs.serverKey });
  rmSync(cert);
  const err = await t.throwsAsync(startApp(config, { log: createLogger('silent') }));
  t.true(err?.message.includes(`tls-cert ${cert}: cannot read the file (ENOENT)`), err?.message);
  t.false(existsSync(dbPath), 'nothing was opened');
});

test('tlsCredentials names the file it cannot use, and wants a client certificate and key together', (t) => {
  const missing = join(certs.dir, 'nope.pem');
  t.throws(() => tlsCredentials({ caFile: missing }), { message: new RegExp(`CA ${missing}: cannot read the file \\(ENOENT\\)`) });
  t.throws(() => tlsCredentials({ caFile: certs.caCert, certFile: certs.clientCert }), { message: /client certificate and its key go together/ });
  t.throws(() => tlsCredentials({ certFile: certs.clientCert, keyFile: certs.serverKey }), {
    message: new RegExp(`client key ${certs.serverKey} is not the private key of the certificate in client certificate ${certs.clientCert}`),
  });
  // No CA file: the system's roots (for a server with a public CA's certificate); still TLS.
  t.true(tlsCredentials()._isSecure());
  t.false(credentials.createInsecure()._isSecure());
});

/** Runs the `sessiond` command (bin/sessiond.js) to completion. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_')));
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(__dirname, '..', 'bin', 'sessiond.js'), ...args], { env: { ...clean, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

test('the CLI connects with --tls-ca, with a client certificate for mTLS, and from SESSIOND_TLS_* client variables', async (t) => {
  const adminToken = 'cli-admin-token-0123456789';
  await withServer({ ...tlsEnv(true), SESSIOND_ADMIN_TOKEN: adminToken }, async (s) => {
    const address = ['--address', s.address, '--timeout', '5s'];
    const mtls = ['--tls-ca', certs.caCert, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey];
    const ok = await cli(['health', ...address, ...mtls]);
    t.is(ok.code, 0, ok.stderr);
    t.regex(ok.stdout, /^SERVING/);
    const live = await cli(['health', ...address, ...mtls, '--service', 'liveness']);
    t.is(live.code, 0, live.stderr);

    // The same from the environment; the variables differ from the server's own SESSIOND_TLS_CERT/KEY.
    const fromEnv = await cli(['admin', 'status', '--json', ...address], {
      SESSIOND_TLS_CA: certs.caCert,
      SESSIOND_TLS_CLIENT_CERT: certs.clientCert,
      SESSIOND_TLS_CLIENT_KEY: certs.clientKey,
      SESSIOND_ADMIN_TOKEN: adminToken,
    });
    t.is(fromEnv.code, 0, fromEnv.stderr);
    t.regex(fromEnv.stdout, /"journalMode": "wal"/i);

    // No client certificate, or no TLS at all: the handshake fails, so the server is unreachable (exit 2).
    const noCert = await cli(['health', ...address, '--tls-ca', certs.caCert]);
    t.is(noCert.code, 2, noCert.stderr);
    t.regex(noCert.stderr, /cannot reach the server/);
    const plaintext = await cli(['health', ...address]);
    t.is(plaintext.code, 2, plaintext.stderr);

    // A file that cannot be read is named.
    const missing = join(certs.dir, 'no-such-ca.pem');
    const bad = await cli(['health', ...address, '--tls-ca', missing]);
    t.is(bad.code, 1, bad.stderr);
    t.true(bad.stderr.includes(`CA ${missing}: cannot read the file (ENOENT)`), bad.stderr);
  });
});

test('the CLI verifies a certificate that does not name the address with --tls-server-name', async (t) => {
  await withServer({ SESSIOND_TLS_CERT: certs.namedServerCert, SESSIOND_TLS_KEY: certs.namedServerKey }, async (s) => {
    const args = ['health', '--address', s.address, '--timeout', '5s', '--tls-ca', certs.caCert];
    const mismatch = await cli(args);
    t.is(mismatch.code, 2, 'the certificate names sessiond.example.internal, not 127.0.0.1');
    const named = await cli([...args, '--tls-server-name', NAMED_HOST]);
    t.is(named.code, 0, named.stderr);
    const fromEnv = await cli(args, { SESSIOND_TLS_SERVER_NAME: NAMED_HOST });
    t.is(fromEnv.code, 0, fromEnv.stderr);
  });
});

test('the server accepts the CLI-only TLS variables in its environment', (t) => {
  const { config } = loadConfig([], { SESSIOND_TLS_CA: certs.caCert, SESSIOND_TLS_CLIENT_CERT: certs.clientCert, SESSIOND_TLS_CLIENT_KEY: certs.clientKey, SESSIOND_TLS_SERVER_NAME: NAMED_HOST });
  t.is(config.server.tls, undefined, 'they are the client side: the server stays plaintext');
});
