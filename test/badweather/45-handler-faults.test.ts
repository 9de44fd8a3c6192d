import test, { type ExecutionContext } from 'ava';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SessionServiceClient, type ValidateSessionStreamResponse } from '../../generated/sessions/v1/session_service';
import { ServingStatus, SessiondClient } from '../../src/client/client';
import type { EventFeed } from '../../src/domain/event-feed';
import type { SessionManager } from '../../src/domain/session-manager';
import { createLogger } from '../../src/server/log';
import { Authorizer } from '../../src/transport/authorize';
import { Callers } from '../../src/transport/callers';
import { SafeDecodingServer } from '../../src/transport/request-decoding';
import { bind } from '../../src/transport/server';
import { sessionHandlers, sessionService } from '../../src/transport/session-handlers';
import { OpenStreams } from '../../src/transport/open-streams';
import { childServer, quietServer } from '../helpers/badweather';

/*
 * A fault anywhere in a handler (a throw, a rejected promise)
 * becomes a status: INTERNAL with a generic message, the cause in the server
 * log and never in the reply; never an unhandled rejection, never a crash;
 * and the server keeps serving what it can. Faults come through real seams:
 * rows damaged by another connection, the storage closed under a running
 * server, a domain object that misbehaves, and, for the process-level safety
 * nets, a bug injected into a real server process.
 */

const GENERIC = 'internal error; the server log has the details';

/** Collects unhandled rejections in this (test) process while `fn` runs. */
async function noUnhandledRejections(t: ExecutionContext, fn: () => Promise<void>): Promise<void> {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => seen.push(reason);
  process.on('unhandledRejection', listener);
  try {
    await fn();
    // Let stray promise chains settle before judging. A chain nobody awaits
    // sends no signal when it ends, so this one wait stays a wait.
    await new Promise((r) => setTimeout(r, 100));
  } finally {
    process.off('unhandledRejection', listener);
  }
  t.deepEqual(seen.map(String), [], 'no unhandled rejection');
}

async function codeOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await p;
    return { code: status.OK, details: '' };
  } catch (err) {
    return { code: (err as ServiceError).code, details: (err as ServiceError).details };
  }
}

function assertGenericInternal(t: ExecutionContext, label: string, r: { code: number; details: string }): void {
  t.is(r.code, status.INTERNAL, `${label}: ${status[r.code]} ${r.details}`);
  t.is(r.details, GENERIC, `${label}: nothing of the cause in the reply`);
}

test('rows damaged by another connection: INTERNAL with a generic message, the cause logged, the stream and the server go on', async (t) => {
  const s = await quietServer();
  t.teardown(() => s.close());
  const healthy = await s.client.createSession({ serverId: 'web-1', subject: 'healthy' });
  const damaged = await Promise.all(['time', 'json', 'array', 'number'].map((k) => s.client.createSession({ serverId: 'web-1', subject: `damaged-${k}` })));
  const db = new Database(s.dbPath);
  const [time, json, array, number] = damaged.map((d) => d.session!.id) as [string, string, string, string];
  // A time no Date can hold; attributes that are not JSON, not an object, not strings.
  db.prepare('UPDATE sessions SET expire_time = 1e17, dead_at = 1e17 WHERE id = ?').run(time);
  db.prepare("UPDATE sessions SET attributes = '{not json' WHERE id = ?").run(json);
  db.prepare("UPDATE sessions SET attributes = '[1,2]' WHERE id = ?").run(array);
  db.prepare("UPDATE sessions SET attributes = '{\"a\":1}' WHERE id = ?").run(number);
  db.close();

  await noUnhandledRejections(t, async () => {
    for (const d of damaged) {
      const id = d.session!.id;
      const label = d.session!.subject;
      assertGenericInternal(t, `${label} GetSession`, await codeOf(s.client.getSession(id)));
      assertGenericInternal(t, `${label} ValidateSession`, await codeOf(s.client.validateSession(d.token)));
      assertGenericInternal(t, `${label} ValidateSession touch`, await codeOf(s.client.validateSession(d.token, true)));
      assertGenericInternal(t, `${label} TouchSession`, await codeOf(s.client.touchSession(id)));
      assertGenericInternal(t, `${label} UpdateSession`, await codeOf(s.client.updateSession({ id, attributes: { x: '1' } })));
      assertGenericInternal(t, `${label} RotateSessionToken`, await codeOf(s.client.rotateSessionToken(id)));
      assertGenericInternal(t, `${label} DeleteSession`, await codeOf(s.client.deleteSession(id)));
    }
    assertGenericInternal(t, 'ListSessions over damaged rows', await codeOf(s.client.listSessions({ serverId: 'web-1' })));

    // One validation stream carries damaged and healthy tokens alike: each damaged one gets an error answer, the stream goes on.
    const validator = s.client.openValidator();
    const answers = await Promise.all([healthy.token, ...damaged.map((d) => d.token), healthy.token].map((tok) => validator.validate(tok)));
    validator.close();
    t.true(answers[0]!.valid);
    t.true(answers[answers.length - 1]!.valid, 'the stream outlived the damaged rows');
    for (const a of answers.slice(1, -1)) {
      t.is(a.errorCode, status.INTERNAL);
      t.is(a.errorMessage, GENERIC);
    }

    // What can be served still is.
    t.is((await s.client.getSession(healthy.session!.id)).session?.subject, 'healthy');
    t.true((await s.client.validateSession(healthy.token)).valid);
    t.is((await s.client.listSessions({ subject: 'healthy' })).sessions.length, 1);
    t.is((await s.client.getStorageStatus()).liveSessions, 5);
    t.is((await s.client.health()).status, ServingStatus.SERVING);
  });

  // The log has each cause, naming the row and what is wrong with it.
  const failures = s.logs.filter((l) => l['msg'] === 'handler failed');
  t.true(failures.length >= damaged.length * 7);
  const causes = JSON.stringify(failures);
  for (const [id, what] of [[time, 'expire_time'], [json, 'not JSON'], [array, 'not an object of strings'], [number, 'not an object of strings']] as const) {
    t.true(causes.includes(`stored session ${id}`) && causes.includes(what), `the log names ${id} and "${what}"`);
  }
});

test('storage closed under a running server: every call answers INTERNAL, health says NOT_SERVING, nothing crashes', async (t) => {
  const s = await quietServer({ SESSIOND_HEALTH_PROBE_INTERVAL: '100ms' });
  t.teardown(() => s.close());
  const a = await s.client.createSession({ serverId: 'web-1' });
  await s.app.storage.close();

  await noUnhandledRejections(t, async () => {
    const id = a.session!.id;
    const calls: [string, Promise<unknown>][] = [
      ['CreateSession', s.client.createSession({ serverId: 'web-1' })],
      ['GetSession', s.client.getSession(id)],
      ['ValidateSession', s.client.validateSession(a.token)],
      ['TouchSession', s.client.touchSession(id)],
      ['UpdateSession', s.client.updateSession({ id, attributes: { k: 'v' } })],
      ['RotateSessionToken', s.client.rotateSessionToken(id)],
      ['DeleteSession', s.client.deleteSession(id)],
      ['ListSessions', s.client.listSessions({})],
      ['RevokeSessions', s.client.revokeSessions({ subject: 'x' })],
      ['GetStorageStatus', s.client.getStorageStatus()],
      ['PurgeExpiredSessions', s.client.purgeExpiredSessions({})],
    ];
    // Awaited in order, but all sent at once: each settles with a status.
    const results = await Promise.all(calls.map(([name, p]) => codeOf(p).then((r) => [name, r] as const)));
    for (const [name, r] of results) assertGenericInternal(t, name, r);
    const checkpoint = await codeOf(s.client.checkpoint({ mode: 4 }));
    t.true(checkpoint.code === status.INTERNAL || checkpoint.code === status.FAILED_PRECONDITION, `Checkpoint: ${status[checkpoint.code]}`);

    const validator = s.client.openValidator();
    const streamed = await validator.validate(a.token);
    validator.close();
    t.is(streamed.errorCode, status.INTERNAL);
    t.is(streamed.errorMessage, GENERIC);

    // The server is still there, and honest about its storage once its health probe has run.
    await s.probes(2);
    const h = await s.client.health();
    t.is(h.status, ServingStatus.NOT_SERVING);
    t.is(h.metadata.get('x-sessiond-not-serving-reason')[0], 'database is closed');
  });
  t.false(JSON.stringify(s.logs).includes('unhandled'));
});

test('a domain object that throws anything, anywhere, still answers every call with a status', async (t) => {
  const fault = (what: string) => {
    // Not Errors, on purpose: strings, undefined, plain objects must be handled as well.
    if (what === 'string') throw 'a string';
    if (what === 'undefined') throw undefined;
    throw { not: 'an error' };
  };
  const stub = {
    create: () => Promise.reject(new RangeError('deep inside create')),
    get: () => fault('string'),
    // Sync throw, a rejection with undefined, and a "valid" answer without a session (sessionToProto throws).
    validate: (_caller: unknown, token: string) => (token === 'sync' ? fault('object') : token === 'reject' ? Promise.reject(undefined) : { valid: true, session: undefined }),
    touch: () => Promise.reject(null),
    update: async () => fault('undefined'),
    rotateToken: () => fault('object'),
    delete: () => Promise.reject(new Error('SQLITE_IOERR: disk I/O error at /var/lib/secret/path')),
    list: () => ({ sessions: [undefined], nextPageToken: '' }),
    revokeMatching: () => Promise.resolve(undefined),
    inSnapshot: (reads: () => unknown) => reads(),
  } as unknown as SessionManager;
  const logs: string[] = [];
  const log = createLogger('debug', (l) => void logs.push(l));
  const server = new SafeDecodingServer();
  // No principals: the loopback client is served as in protected mode.
  // A feed whose storage faults: its first read throws a non-Error, the next an Error with a path in it.
  let feedReads = 0;
  const feed = {
    start: () => (feedReads++ === 0 ? Promise.reject(null) : Promise.resolve(0)),
    next: () => Promise.reject(new Error('SQLITE_IOERR: disk I/O error at /var/lib/secret/path')),
  } as unknown as EventFeed;
  const settings = { stallTimeoutMs: 1000, progressIntervalMs: 1000, maxStreams: 10 };
  server.addService(sessionService, sessionHandlers(stub, new Authorizer(new Callers({ allowUnauthenticated: false }), log), log, new OpenStreams(), { feed, settings }));
  const port = await bind(server, '127.0.0.1:0');
  t.teardown(() => server.forceShutdown());
  const client = new SessiondClient(`127.0.0.1:${port}`, { defaultDeadlineMs: 5000 });
  t.teardown(() => client.close());

  await noUnhandledRejections(t, async () => {
    const id = 'AAAAAAAAAAAAAAAAAAAAAA';
    for (const [name, p] of [
      ['CreateSession', client.createSession({ serverId: 'x' })],
      ['GetSession', client.getSession(id)],
      ['ValidateSession sync', client.validateSession('sync')],
      ['ValidateSession reject', client.validateSession('reject')],
      ['ValidateSession no session', client.validateSession('valid-but-empty')],
      ['TouchSession', client.touchSession(id)],
      ['UpdateSession', client.updateSession({ id })],
      ['RotateSessionToken', client.rotateSessionToken(id)],
      ['DeleteSession', client.deleteSession(id)],
      ['ListSessions', client.listSessions({})],
    ] as const) {
      assertGenericInternal(t, name, await codeOf(p));
    }
    for (const name of ['WatchSessionEvents start', 'WatchSessionEvents read']) {
      const events = new SessionServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
      const watch = events.watchSessionEvents({ serverId: '', subject: '', afterSequence: undefined, progressEvents: false });
      assertGenericInternal(t, name, await new Promise<{ code: number; details: string }>((resolve) => {
        watch.on('data', () => undefined);
        watch.on('error', (e: { code: number; details: string }) => resolve(e));
      }));
      events.close();
    }
    const revoked = await codeOf(client.revokeSessions({ subject: 'x' }));
    t.not(revoked.code, status.UNKNOWN, 'a missing count is not UNKNOWN');

    const raw = new SessionServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const call = raw.validateSessionStream(new Metadata());
    const answers: ValidateSessionStreamResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on('data', (r: ValidateSessionStreamResponse) => answers.push(r));
      call.on('end', resolve);
      call.on('error', reject);
    });
    ['sync', 'reject', 'valid-but-empty'].forEach((token, i) => call.write({ correlationId: i + 1, token, touch: false, items: [] }));
    // The same three as one batch, then a second batch: each item answered on its own.
    const items = ['sync', 'reject', 'valid-but-empty'].map((token, i) => ({ correlationId: i + 11, token, touch: false }));
    call.write({ correlationId: 0, token: '', touch: false, items });
    call.write({ correlationId: 0, token: '', touch: false, items: [{ correlationId: 21, token: 'sync', touch: true }] });
    call.end();
    await done;
    raw.close();
    const singles = answers.filter((a) => a.answers.length === 0);
    const batched = answers.flatMap((a) => a.answers);
    t.is(singles.length, 3, 'every request answered, the stream ended normally');
    t.deepEqual(batched.map((a) => a.correlationId).sort(), [11, 12, 13, 21]);
    for (const a of [...singles, ...batched]) {
      t.is(a.errorCode, status.INTERNAL);
      t.is(a.errorMessage, GENERIC);
    }
  });
  t.true(logs.some((l) => l.includes('SQLITE_IOERR')), 'the cause is in the log');
});

/** Dies the way a bug would, in a real server process: the fault injector is preloaded, SIGUSR2 fires it. */
const ENTRY = ['--import', 'tsx', '--import', join(__dirname, '..', 'helpers', 'fault-injector.ts'), 'src/main.ts'];

async function waitForLog(stderr: () => string, needle: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!stderr().includes(needle)) {
    if (Date.now() > deadline) throw new Error(`no "${needle}" in the log:\n${stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('process: an unhandled rejection is logged with its cause, and the server keeps serving', async (t) => {
  const { srv, client, alive } = await childServer(t, { TEST_FAULT_INJECTION: 'rejection' }, { entry: ENTRY });
  const before = await client.createSession({ serverId: 'web-1' });
  srv.proc.kill('SIGUSR2');
  await waitForLog(srv.stderr, 'unhandled promise rejection');
  t.regex(srv.stderr(), /injected: a promise that nobody handles/, 'the cause is logged');
  t.true(alive());
  t.is((await client.health()).status, ServingStatus.SERVING);
  t.is((await client.getSession(before.session!.id)).session?.id, before.session!.id);
  t.truthy((await client.createSession({ serverId: 'web-1' })).token);
});

test('process: an uncaught exception is logged, then the server shuts down in order and exits 1', async (t) => {
  const { srv, client, dbPath } = await childServer(t, { TEST_FAULT_INJECTION: 'exception' }, { entry: ENTRY });
  const kept = await client.createSession({ serverId: 'web-1', subject: 'kept' });
  srv.proc.kill('SIGUSR2');
  t.is(await srv.exited, 1);
  const log = srv.stderr();
  t.regex(log, /uncaught exception \(a bug\); shutting down/);
  t.regex(log, /injected: a throw from a callback/);
  const steps = ['shutdown: health NOT_SERVING', 'shutdown: draining in-flight calls', 'shutdown: database closed'];
  const at = steps.map((step) => log.indexOf(step));
  t.true(at.every((i, n) => i >= 0 && (n === 0 || i > at[n - 1]!)), `shutdown steps in order: ${JSON.stringify(at)}`);
  t.true(!existsSync(`${dbPath}-wal`) || statSync(`${dbPath}-wal`).size === 0, 'the final TRUNCATE checkpoint ran');
  const db = new Database(dbPath, { readonly: true });
  t.is((db.prepare('SELECT subject FROM sessions WHERE id = ?').get(kept.session!.id) as { subject: string }).subject, 'kept');
  db.close();
});
