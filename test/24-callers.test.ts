import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { SessiondClient } from '../src/client/client';
import { PERMISSION_OF } from '../src/transport/permissions';
import { EventReader } from './helpers/events';
import { AdminServiceService } from '../generated/sessions/v1/admin_service';
import { SessionServiceService } from '../generated/sessions/v1/session_service';
import { writePrincipals, type PrincipalSpec } from './helpers/principals';
import { join } from 'node:path';
import { startTestServer, tempDir, type TestServer } from './helpers/server';
import { waitFor } from './helpers/wait';

/*
 * Every RPC of SessionService and AdminService against every kind of caller,
 * on a real server with a principals file: no credentials, a wrong key, a key
 * removed by a reload, a principal without the permission, one whose
 * server_ids do not hold the session, and the right one. Certificates naming
 * principals are in 50-tls (mTLS with principals).
 */

const PRINCIPALS: PrincipalSpec[] = [
  { name: 'writer', permissions: ['sessions.read', 'sessions.write'], serverIds: ['web-*'] },
  { name: 'validator', permissions: ['sessions.validate'], serverIds: ['web-*'] },
  { name: 'reader', permissions: ['sessions.read'], serverIds: ['web-1'] },
  { name: 'other', permissions: ['sessions.read', 'sessions.write', 'sessions.validate'], serverIds: ['api-1'] },
  { name: 'operator', permissions: ['admin'], serverIds: ['*'] },
  { name: 'auditor', permissions: ['sessions.events'], serverIds: ['web-*'] },
  { name: 'retired', permissions: ['sessions.read', 'sessions.write', 'admin'], serverIds: ['*'] },
];

/** A live session of web-1 made by the writer, fresh for each call that may consume it. */
interface Fixture {
  id: string;
  token: string;
  etag: string;
}

type Call = (c: SessiondClient, f: Fixture) => Promise<unknown>;

/** Each RPC, called the way a backend or operator would, with a request that succeeds for an allowed caller. */
const RPCS: Record<string, { path: string; call: Call }> = {
  CreateSession: { path: SessionServiceService.createSession.path, call: (c) => c.createSession({ serverId: 'web-1', subject: 'alice' }) },
  GetSession: { path: SessionServiceService.getSession.path, call: (c, f) => c.getSession(f.id) },
  ValidateSession: { path: SessionServiceService.validateSession.path, call: (c, f) => c.validateSession(f.token) },
  ValidateSessionStream: {
    path: SessionServiceService.validateSessionStream.path,
    call: async (c, f) => {
      const v = c.openValidator();
      try {
        return await v.validate(f.token);
      } finally {
        v.close();
      }
    },
  },
  TouchSession: { path: SessionServiceService.touchSession.path, call: (c, f) => c.touchSession(f.id) },
  UpdateSession: { path: SessionServiceService.updateSession.path, call: (c, f) => c.updateSession({ id: f.id, attributes: { k: 'v' }, merge: true, etag: f.etag }) },
  RotateSessionToken: { path: SessionServiceService.rotateSessionToken.path, call: (c, f) => c.rotateSessionToken(f.id) },
  DeleteSession: { path: SessionServiceService.deleteSession.path, call: (c, f) => c.deleteSession(f.id) },
  ListSessions: { path: SessionServiceService.listSessions.path, call: (c) => c.listSessions({ serverId: 'web-1' }) },
  RevokeSessions: { path: SessionServiceService.revokeSessions.path, call: (c) => c.revokeSessions({ serverId: 'web-1', subject: 'nobody' }) },
  WatchSessionEvents: {
    path: SessionServiceService.watchSessionEvents.path,
    // The fixture's CREATED is in the log: an allowed caller gets it.
    call: async (c) => {
      const w = c.watch({ afterSequence: 0 });
      try {
        return await new EventReader(w).take(1, 5000);
      } finally {
        w.close();
      }
    },
  },
  Checkpoint: { path: AdminServiceService.checkpoint.path, call: (c) => c.checkpoint({}) },
  GetStorageStatus: { path: AdminServiceService.getStorageStatus.path, call: (c) => c.getStorageStatus() },
  PurgeExpiredSessions: { path: AdminServiceService.purgeExpiredSessions.path, call: (c) => c.purgeExpiredSessions({}) },
  Backup: { path: AdminServiceService.backup.path, call: (c) => c.backup() },
  IntegrityCheck: { path: AdminServiceService.integrityCheck.path, call: (c) => c.integrityCheck({}) },
};

/** Who may call each RPC (by permission, PERMISSION_OF), and who may not. */
const ALLOWED: Record<string, string[]> = {
  'sessions.validate': ['writer', 'validator', 'reader'],
  'sessions.read': ['writer', 'reader'],
  'sessions.write': ['writer'],
  'sessions.events': ['auditor'],
  admin: ['operator'],
};

async function codeOf(p: Promise<unknown>): Promise<{ code: status; details: string }> {
  try {
    await p;
    return { code: status.OK, details: '' };
  } catch (err) {
    const e = err as ServiceError;
    return { code: e.code ?? status.UNKNOWN, details: e.details ?? String(err) };
  }
}

let s: TestServer;
let anonymous: SessiondClient;
let wrongKey: SessiondClient;
let retired: SessiondClient;
const as: Record<string, SessiondClient> = {};

test.before(async () => {
  s = await startTestServer({ principals: PRINCIPALS, env: { SESSIOND_BACKUP_DIR: join(tempDir(), 'backups') } });
  for (const p of PRINCIPALS) as[p.name] = s.clientAs(p.name);
  anonymous = new SessiondClient(s.address, { defaultDeadlineMs: 10_000 });
  wrongKey = new SessiondClient(s.address, { apiKey: `${s.keys['writer']!.slice(0, -2)}xx`, defaultDeadlineMs: 10_000 });
  // Drop "retired" from the file: its key must stop working without a restart.
  writePrincipals(s.dir, PRINCIPALS.filter((p) => p.name !== 'retired'), 'next.yaml', s.keys);
  retired = as['retired']!;
  t0Retired = await codeOf(retired.getStorageStatus());
});
let t0Retired: { code: status };

test.after.always(async () => {
  anonymous?.close();
  wrongKey?.close();
  await s?.close();
});

async function fixture(serverId = 'web-1'): Promise<Fixture> {
  const creator = serverId === 'api-1' ? as['other']! : as['writer']!;
  const c = await creator.createSession({ serverId, subject: 'alice' });
  return { id: c.session!.id, token: c.token, etag: c.session!.etag };
}

test.serial('every RPC of both services has a permission in the one table', (t) => {
  const paths = [...Object.values(SessionServiceService), ...Object.values(AdminServiceService)].map((m) => m.path);
  t.deepEqual([...PERMISSION_OF.keys()].sort(), [...paths].sort());
  t.deepEqual(Object.values(RPCS).map((r) => r.path).sort(), [...paths].sort(), 'the matrix covers every RPC');
});

test.serial('no credentials and a wrong key: UNAUTHENTICATED on every RPC, saying what to send and never echoing the key', async (t) => {
  for (const [name, rpc] of Object.entries(RPCS)) {
    const f = await fixture();
    const none = await codeOf(rpc.call(anonymous, f));
    t.is(none.code, status.UNAUTHENTICATED, `${name} without credentials: ${none.details}`);
    t.regex(none.details, /needs credentials.*Bearer/, name);
    const wrong = await codeOf(rpc.call(wrongKey, f));
    t.is(wrong.code, status.UNAUTHENTICATED, `${name} with a wrong key: ${wrong.details}`);
    t.regex(wrong.details, /API key is not valid/, name);
    t.false(wrong.details.includes(s.keys['writer']!.slice(0, 20)), `${name} does not echo the key`);
  }
});

test.serial('a principal without the permission: PERMISSION_DENIED naming the permission; with it: OK', async (t) => {
  for (const [name, rpc] of Object.entries(RPCS)) {
    const permission = PERMISSION_OF.get(rpc.path)!;
    for (const who of ['writer', 'validator', 'reader', 'operator', 'auditor']) {
      const f = await fixture();
      const got = await codeOf(rpc.call(as[who]!, f));
      if (ALLOWED[permission]!.includes(who)) {
        // Past the permission check, Checkpoint on PostgreSQL answers that it has no WAL of its own to checkpoint.
        const fileOnly = (name === 'Checkpoint' && s.app.storage.wal === undefined) || (['Backup', 'IntegrityCheck'].includes(name) && s.app.storage.files === undefined);
        const expected = fileOnly ? status.FAILED_PRECONDITION : status.OK;
        t.is(got.code, expected, `${who} may call ${name}: ${got.details}`);
      } else {
        t.is(got.code, status.PERMISSION_DENIED, `${who} may not call ${name} (${permission}): got ${status[got.code]} ${got.details}`);
        t.is(got.details, `principal ${who} lacks the permission ${permission}, which ${name} needs`);
      }
    }
  }
});

test.serial('another backend\'s session: NOT_FOUND by id, not found by token, PERMISSION_DENIED to create or filter for its server_id', async (t) => {
  const theirs = await fixture('api-1');
  const mine = await fixture('web-1');
  const notFound = `session ${theirs.id} not found (never created, expired, or revoked)`;
  for (const [name, call] of [
    ['GetSession', () => as['writer']!.getSession(theirs.id)],
    ['TouchSession', () => as['writer']!.touchSession(theirs.id)],
    ['UpdateSession', () => as['writer']!.updateSession({ id: theirs.id, attributes: { k: 'v' }, merge: true })],
    ['RotateSessionToken', () => as['writer']!.rotateSessionToken(theirs.id)],
    ['DeleteSession', () => as['writer']!.deleteSession(theirs.id)],
  ] as const) {
    const got = await codeOf(call());
    t.is(got.code, status.NOT_FOUND, `${name}: ${got.details}`);
    t.is(got.details, notFound, `${name} answers exactly as for a missing session`);
  }
  // allow_missing: the same silence as for a session that does not exist.
  await as['writer']!.deleteSession(theirs.id, true);
  t.like(await as['writer']!.validateSession(theirs.token), { valid: false, reason: 1 });
  const v = as['validator']!.openValidator();
  t.like(await v.validate(theirs.token), { valid: false, reason: 1, errorCode: 0 });
  t.like(await v.validate(mine.token), { valid: true });
  v.close();
  for (const [name, call] of [
    ['CreateSession', () => as['writer']!.createSession({ serverId: 'api-1' })],
    ['ListSessions', () => as['writer']!.listSessions({ serverId: 'api-1' })],
    ['RevokeSessions', () => as['writer']!.revokeSessions({ serverId: 'api-1' })],
  ] as const) {
    const got = await codeOf(call());
    t.is(got.code, status.PERMISSION_DENIED, `${name}: ${got.details}`);
    t.is(got.details, 'principal writer may not act for server_id "api-1"');
  }
  // A pattern is a prefix, not a substring: "web-*" does not reach "xweb-1".
  t.is((await codeOf(as['writer']!.createSession({ serverId: 'xweb-1' }))).code, status.PERMISSION_DENIED);
  t.is((await codeOf(as['writer']!.createSession({ serverId: 'web-' }))).code, status.OK, 'the bare prefix matches "web-*"');
  t.is((await codeOf(as['reader']!.getSession(mine.id))).code, status.OK, 'an exact server_id matches');
  // Their session is untouched by all of it.
  const still = await as['other']!.getSession(theirs.id);
  t.is(still.session?.etag, theirs.etag);
  t.true((await as['other']!.validateSession(theirs.token)).valid);
});

test.serial('lists and revokes without a server_id are confined to the caller\'s server_ids', async (t) => {
  const subject = `shared-${Date.now()}`;
  const web1 = await as['writer']!.createSession({ serverId: 'web-1', subject });
  const web2 = await as['writer']!.createSession({ serverId: 'web-2', subject });
  const api = await as['other']!.createSession({ serverId: 'api-1', subject });
  const ids = async (c: SessiondClient) => {
    const out: string[] = [];
    for await (const x of c.listAllSessions({ subject, pageSize: 1 })) out.push(x.id);
    return out.sort();
  };
  t.deepEqual(await ids(as['writer']!), [web1.session!.id, web2.session!.id].sort());
  t.deepEqual(await ids(as['reader']!), [web1.session!.id]);
  t.deepEqual(await ids(as['other']!), [api.session!.id]);
  // Revoking "every session of the subject" revokes only the caller's.
  t.is((await as['writer']!.revokeSessions({ subject })).revokedCount, 2);
  t.true((await as['other']!.validateSession(api.token)).valid, 'the other backend\'s session of the same subject lives on');
  t.false((await as['writer']!.validateSession(web1.token)).valid);
});

test.serial('a key removed from the file stops working after the reload, without a restart; the others go on', async (t) => {
  t.is(t0Retired.code, status.OK, 'the retired key worked before');
  const { renameSync } = await import('node:fs');
  renameSync(`${s.dir}/next.yaml`, s.principalsFile!);
  // The file is watched by stat once a second.
  await waitFor(() => s.logs.some((l) => l['msg'] === 'principals reloaded'), 'the reload', 10_000);
  for (const [name, rpc] of Object.entries(RPCS)) {
    const got = await codeOf(rpc.call(retired, await fixture()));
    t.is(got.code, status.UNAUTHENTICATED, `${name} with the removed key: ${got.details}`);
  }
  t.is((await codeOf(as['operator']!.getStorageStatus())).code, status.OK);
  t.is((await codeOf(as['writer']!.createSession({ serverId: 'web-1' }))).code, status.OK);
  t.true(s.logs.some((l) => l['msg'] === 'principals reloaded' && l['reason'] === 'file changed'));
});

test.serial('health and reflection need no credentials', async (t: ExecutionContext) => {
  t.is((await anonymous.health('')).status, 1);
  t.is((await anonymous.health('sessions.v1.SessionService')).status, 1);
});
