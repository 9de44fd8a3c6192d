import test from 'ava';
import { credentials, Metadata, Server, ServerCredentials, status, type ClientReadableStream, type StatusObject } from '@grpc/grpc-js';
import { HealthCheckResponse_ServingStatus as S, HealthClient, type HealthCheckResponse } from '../generated/grpc/health/v1/health';
import { SessiondClient } from '../src/client/client';
import { Health, HEALTH_SERVICES } from '../src/transport/health';
import { rejectsWithCode } from './helpers/grpc';
import { startTestServer, type TestServer } from './helpers/server';

/*
 * grpc.health.v1.Health as docs/api.md states it: Check and Watch for "", the
 * SessionService and the AdminService; NOT_SERVING while starting, while
 * shutting down and when storage is unusable; every Check reply carries the
 * journal mode and the WAL frame count as response metadata.
 */

const SERVICES = ['', 'sessions.v1.SessionService', 'sessions.v1.AdminService'];

function one(md: Metadata, key: string): string | undefined {
  const v = md.get(key);
  return v.length === 0 ? undefined : String(v[0]);
}

function frames(md: Metadata): number {
  const v = one(md, 'x-sessiond-wal-frames');
  if (v === undefined || !/^\d+$/.test(v)) throw new Error(`x-sessiond-wal-frames is ${JSON.stringify(v)}`);
  return Number(v);
}

/** A Watch stream with everything it has received, and promises for what comes next. */
class Watch {
  readonly statuses: S[] = [];
  headers: Metadata | undefined;
  ended = false;
  final: StatusObject | undefined;
  private readonly waiters: (() => void)[] = [];
  readonly done: Promise<StatusObject>;

  constructor(readonly stream: ClientReadableStream<HealthCheckResponse>) {
    stream.on('metadata', (md) => (this.headers = md));
    stream.on('data', (r: HealthCheckResponse) => {
      this.statuses.push(r.status);
      this.wake();
    });
    stream.on('error', () => undefined); // the status event carries the outcome
    this.done = new Promise((resolve) =>
      stream.on('status', (s: StatusObject) => {
        this.final = s;
        this.ended = true;
        this.wake();
        resolve(s);
      }),
    );
  }

  /** Resolves once `pred` holds, rejects after `ms`. */
  until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; statuses ${JSON.stringify(this.statuses)}`)), ms);
      const check = () => {
        if (pred()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      check();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

function openWatch(address: string, service: string): { client: HealthClient; watch: Watch } {
  const client = new HealthClient(address, credentials.createInsecure());
  return { client, watch: new Watch(client.watch({ service })) };
}

async function withServer(env: Record<string, string>, fn: (s: TestServer) => Promise<void>): Promise<void> {
  const s = await startTestServer({ env });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

test('Check answers SERVING for "", SessionService and AdminService, with the storage metadata', async (t) => {
  await withServer({}, async (s) => {
    t.deepEqual([...HEALTH_SERVICES], SERVICES, 'the service names the API fixes');
    for (const service of SERVICES) {
      const { status: st, metadata } = await s.client.health(service);
      t.is(st, S.SERVING, `Check(${JSON.stringify(service)})`);
      t.is(one(metadata, 'x-sessiond-journal-mode'), 'wal', `journal mode on Check(${JSON.stringify(service)})`);
      t.true(frames(metadata) >= 0);
      t.regex(one(metadata, 'x-sessiond-wal-bytes') ?? '', /^\d+$/);
      t.is(one(metadata, 'x-sessiond-not-serving-reason'), undefined, 'no reason while serving');
    }
  });
});

test('Check for an unknown service is NOT_FOUND', async (t) => {
  await withServer({}, async (s) => {
    await rejectsWithCode(t, s.client.health('sessions.v1.NoSuchService'), status.NOT_FOUND);
    await rejectsWithCode(t, s.client.health('grpc.health.v1.Health'), status.NOT_FOUND);
  });
});

test('the WAL frame count in Check metadata grows with writes and drops to 0 after a TRUNCATE checkpoint', async (t) => {
  // No background checkpoint in the way: autocheckpoint off for this test.
  await withServer({ SESSIOND_WAL_AUTOCHECKPOINT: '0' }, async (s) => {
    const before = frames((await s.client.health('')).metadata);
    for (let i = 0; i < 20; i++) await s.client.createSession({ serverId: 'web-1', subject: `user-${i}` });
    const { metadata } = await s.client.health('sessions.v1.SessionService');
    const after = frames(metadata);
    t.true(after >= before + 20, `frames ${before} -> ${after} after 20 committed inserts`);
    t.true(Number(one(metadata, 'x-sessiond-wal-bytes')) > 0);

    const cp = await s.client.checkpoint({ mode: 4 /* CHECKPOINT_MODE_TRUNCATE */ });
    t.false(cp.busy);
    const truncated = (await s.client.health('')).metadata;
    t.is(frames(truncated), 0, 'frames after TRUNCATE');
    t.is(one(truncated, 'x-sessiond-wal-bytes'), '0');
  });
});

test('Watch streams the current status first, then NOT_SERVING at shutdown, then ends; shutdown does not wait for watchers', async (t) => {
  // A long drain deadline: if open Watch streams held the drain, shutdown would take 30 s.
  const s = await startTestServer({ env: { SESSIOND_DRAIN_TIMEOUT: '30s' } });
  const watches = SERVICES.map((service) => openWatch(s.address, service));
  const unknown = openWatch(s.address, 'sessions.v1.NoSuchService');
  try {
    for (const { watch } of watches) await watch.until(() => watch.statuses.length >= 1, 'the first Watch message');
    await unknown.watch.until(() => unknown.watch.statuses.length >= 1, 'the first Watch message (unknown service)');
    for (const { watch } of watches) {
      t.deepEqual(watch.statuses, [S.SERVING], 'current status first');
      t.is(one(watch.headers!, 'x-sessiond-journal-mode'), 'wal', 'Watch carries the storage metadata too');
    }
    t.deepEqual(unknown.watch.statuses, [S.SERVICE_UNKNOWN]);

    const started = Date.now();
    await s.app.shutdown('test');
    const took = Date.now() - started;
    t.true(took < 5_000, `shutdown took ${took} ms with three Watch streams open`);
    t.false(s.logs.some((l) => /drain deadline passed/.test(String(l['msg']))), 'the drain finished on its own');

    for (const { watch } of watches) {
      const final = await watch.done;
      t.deepEqual(watch.statuses, [S.SERVING, S.NOT_SERVING], 'NOT_SERVING is sent before the stream ends');
      t.is(final.code, status.OK, `the stream ends cleanly, not ${status[final.code]}`);
    }
    const finalUnknown = await unknown.watch.done;
    t.is(finalUnknown.code, status.OK, 'a Watch of an unknown service is ended too');
    t.is(s.app.health.status, 'NOT_SERVING');
    t.is(s.app.health.reason, 'stopping');
    // The listener is gone: a Check after shutdown is refused by the transport, not answered SERVING.
    await rejectsWithCode(t, s.client.health('', { deadlineMs: 3000 }), status.UNAVAILABLE);
  } finally {
    for (const { client } of [...watches, unknown]) client.close();
    await s.close();
  }
});

test('Check while stopping says NOT_SERVING with the reason', async (t) => {
  // shutdown() sets the phase and closes the listener in the same tick, so no
  // Check can arrive over the network during a real shutdown (the test above
  // sees NOT_SERVING through an already-open Watch instead). Here the phase
  // alone is set, as shutdown's first step does, and Check is asked over gRPC.
  await withServer({}, async (s) => {
    const { watch, client } = openWatch(s.address, 'sessions.v1.SessionService');
    try {
      await watch.until(() => watch.statuses.length === 1, 'the first Watch message');
      s.app.health.setPhase('stopping');
      for (const service of SERVICES) {
        const { status: st, metadata } = await s.client.health(service);
        t.is(st, S.NOT_SERVING, `Check(${JSON.stringify(service)}) while stopping`);
        t.is(one(metadata, 'x-sessiond-not-serving-reason'), 'stopping');
        t.is(one(metadata, 'x-sessiond-journal-mode'), 'wal');
      }
      await watch.until(() => watch.statuses.length === 2, 'NOT_SERVING on the Watch');
      s.app.health.setPhase('serving');
      t.is((await s.client.health('')).status, S.SERVING);
      await watch.until(() => watch.statuses.length === 3, 'SERVING again on the Watch');
      t.deepEqual(watch.statuses, [S.SERVING, S.NOT_SERVING, S.SERVING]);
    } finally {
      client.close();
    }
  });
});

test('NOT_SERVING while starting: the Health service answers before the phase is serving', async (t) => {
  // startApp binds before it sets the phase to serving, with nothing awaited in
  // between, so a real start-up cannot be caught from outside; this is the same
  // Health class on a real gRPC server, before setPhase('serving').
  const health = new Health(() => ({ backend: 'sqlite', wal: { journalMode: 'wal', walFrames: 7, walBytes: 4096 } }));
  const server = new Server();
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const client = new SessiondClient(`127.0.0.1:${port}`, { defaultDeadlineMs: 5000 });
  try {
    t.is(health.status, 'NOT_SERVING');
    for (const service of SERVICES) {
      const { status: st, metadata } = await client.health(service);
      t.is(st, S.NOT_SERVING, `Check(${JSON.stringify(service)}) while starting`);
      t.is(one(metadata, 'x-sessiond-not-serving-reason'), 'starting');
      t.is(one(metadata, 'x-sessiond-wal-frames'), '7');
    }
    health.setPhase('serving');
    t.is((await client.health('')).status, S.SERVING);
    // A storage problem wins over the phase.
    health.setStorageProblem('journal_mode is delete, configured wal');
    const r = await client.health('sessions.v1.AdminService');
    t.is(r.status, S.NOT_SERVING);
    t.is(one(r.metadata, 'x-sessiond-not-serving-reason'), 'journal_mode is delete, configured wal');
    health.setStorageProblem(undefined);
    t.is((await client.health('')).status, S.SERVING);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test('storage unusable (the database connection closed under the server): the probe turns health NOT_SERVING with the reason', async (t) => {
  // A real fault the probe must notice by itself: the connection is closed
  // behind the server's back (chmod is no obstacle for root, and another
  // connection cannot switch a WAL database out of WAL while ours is open).
  await withServer({ SESSIOND_HEALTH_PROBE_INTERVAL: '100ms' }, async (s) => {
    const { watch, client } = openWatch(s.address, '');
    try {
      await watch.until(() => watch.statuses.length === 1, 'the first Watch message');
      t.deepEqual(watch.statuses, [S.SERVING]);
      await s.app.storage.close();
      await watch.until(() => watch.statuses.includes(S.NOT_SERVING), 'NOT_SERVING from the storage probe', 5_000);
      for (const service of SERVICES) {
        const { status: st, metadata } = await s.client.health(service);
        t.is(st, S.NOT_SERVING, `Check(${JSON.stringify(service)}) with storage closed`);
        t.is(one(metadata, 'x-sessiond-not-serving-reason'), 'database is closed');
        t.is(one(metadata, 'x-sessiond-journal-mode'), 'unknown', 'the journal mode cannot be read from a closed connection');
      }
      t.true(
        s.logs.some((l) => l['msg'] === 'storage unusable; health is NOT_SERVING' && l['problem'] === 'database is closed'),
        'the transition is logged with the problem',
      );
      // Session calls fail cleanly (a status, not a crash or a hang).
      const err = await t.throwsAsync(s.client.createSession({ serverId: 'web-1' }));
      t.true(typeof (err as { code?: unknown } | undefined)?.code === 'number');
    } finally {
      client.close();
    }
  });
});
