import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { InvalidReason } from '../../generated/sessions/v1/session_service';
import { ServingStatus, type PerCall, type SessiondClient } from '../../src/client/client';
import { childServer, StoreWatcher } from '../helpers/badweather';

/*
 * Calls that the client gives up on, by a 1 ms deadline or by
 * cancelling, many at once. Whatever the server had done by then, it did
 * whole: after the dust settles each session is either complete or absent,
 * each update either applied with its etag or not at all; and a retried
 * CreateSession with the same request_id never creates a second session.
 */

type Storm = 'deadline' | 'cancel';

/** Per-call options that make the client give up: a 1 ms deadline, or a cancel within a few ms. */
function givingUp(storm: Storm, i: number): PerCall {
  if (storm === 'deadline') return { deadlineMs: 1 };
  const abort = new AbortController();
  // Spread the cancels: before the call is sent, while it is in flight, after.
  if (i % 4 === 0) queueMicrotask(() => abort.abort());
  else if (i % 4 === 1) setImmediate(() => abort.abort());
  else setTimeout(() => abort.abort(), i % 5);
  return { deadlineMs: 10_000, signal: abort.signal };
}

const GAVE_UP: Record<Storm, number> = { deadline: status.DEADLINE_EXCEEDED, cancel: status.CANCELLED };

/** Runs `n` calls in waves of `width` at once: a storm, but one the server sees part of before the client gives up. */
async function waves<T>(n: number, width: number, call: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i += width) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(width, n - i) }, (_, j) => call(i + j)))));
  }
  return out;
}

async function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; code: number; details: string }> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    return { ok: false, code: (err as ServiceError).code, details: (err as ServiceError).details };
  }
}

/**
 * Waits until the server has dealt with everything sent before: calls share
 * one HTTP/2 connection, so they reach the server in order, and the group
 * committer commits in arrival order, so once a later write is answered every
 * earlier write has committed or failed.
 */
async function settle(client: SessiondClient): Promise<void> {
  const barrier = await client.createSession({ serverId: 'barrier' });
  await client.deleteSession(barrier.session!.id);
}

function countCodes(t: ExecutionContext, storm: Storm, results: { ok: boolean; code?: number; details?: string }[]): void {
  const codes = new Map<string, number>();
  for (const r of results) {
    const name = r.ok ? 'OK' : status[r.code!]!;
    codes.set(name, (codes.get(name) ?? 0) + 1);
    if (!r.ok) t.is(r.code, GAVE_UP[storm], `only OK or ${status[GAVE_UP[storm]]}: got ${status[r.code!]} ${r.details}`);
  }
  t.true((codes.get(status[GAVE_UP[storm]]!) ?? 0) > 0, `the client gave up at least once: ${JSON.stringify([...codes])}`);
  t.log(JSON.stringify(Object.fromEntries(codes)));
}

// Serial: four storms at once on two cores would measure the machine, not the server.
for (const storm of ['deadline', 'cancel'] as const) {
  test.serial(`${storm}: creates given up on are whole or absent, and a retry with the same request_id creates no duplicate`, async (t) => {
    const { client, dbPath, alive, srv } = await childServer(t);
    const N = 300;
    const request = (i: number) => ({
      serverId: 'storm', subject: `u-${i}`, requestId: `req-${i}`, attributes: { i: String(i), pad: 'x'.repeat(200) },
      ip: '198.51.100.7', userAgent: `ua-${i}`, ttl: { seconds: 3600, nanos: 0 }, idleTimeout: { seconds: 600, nanos: 0 },
    });
    const first = await waves(N, 6, (i) => outcome(client.createSession(request(i), givingUp(storm, i))));
    countCodes(t, storm, first);
    await settle(client);

    // What is stored, seen from a connection of our own: whole rows, at most one per request_id.
    const watcher = new StoreWatcher(dbPath);
    t.teardown(() => watcher.close());
    const stored = watcher.count("server_id = 'storm'");
    t.is(watcher.count("server_id = 'storm' AND subject = 'u-' || substr(request_id, 5) AND user_agent = 'ua-' || substr(request_id, 5) AND json_extract(attributes, '$.i') = substr(request_id, 5) AND length(json_extract(attributes, '$.pad')) = 200 AND ip = '198.51.100.7' AND expire_time - create_time = 3600000 AND idle_timeout_ms = 600000"), stored, 'every stored row is complete');
    const unacknowledged = first.filter((f, i) => !f.ok && watcher.count("server_id = 'storm' AND request_id = ?", `req-${i}`) === 1).length;
    t.log(`${stored} of ${N} creates were stored before the retries; ${unacknowledged} of them stored although the client gave up`);

    // Retry all of them, patiently.
    const retried = await Promise.all(Array.from({ length: N }, (_, i) => client.createSession(request(i))));
    await waves(N, 25, async (i) => {
      const r = retried[i]!;
      const f = first[i]!;
      if (f.ok) {
        t.is(r.session?.id, f.value.session?.id, `req-${i}: the retry answers the first session`);
        t.is(r.token, f.value.token, `req-${i}: with its token`);
      }
      const [v, got] = await Promise.all([client.validateSession(r.token), client.getSession(r.session!.id)]);
      t.true(v.valid, `req-${i}: the token validates`);
      t.is(v.session?.id, r.session?.id);
      t.like(got.session, { serverId: 'storm', subject: `u-${i}`, ip: '198.51.100.7', userAgent: `ua-${i}`, attributes: { i: String(i), pad: 'x'.repeat(200) } });
      t.is(got.session!.expireTime!.getTime() - got.session!.createTime!.getTime(), 3_600_000);
    });
    t.is(watcher.count("server_id = 'storm'"), N, 'exactly one session per request_id');
    t.is(watcher.row<{ n: number }>("SELECT count(DISTINCT request_id) AS n FROM sessions WHERE server_id = 'storm'").n, N);
    const listed: string[] = [];
    for await (const x of client.listAllSessions({ serverId: 'storm', pageSize: 1000 })) listed.push(x.subject);
    t.is(listed.length, N);
    t.is(new Set(listed).size, N, 'no subject twice');
    t.is((await client.health()).status, ServingStatus.SERVING);
    t.true(alive());
    t.notRegex(srv.stderr(), /handler failed|unhandled/i);
  });

  test.serial(`${storm}: updates, rotations and deletes given up on are all-or-nothing`, async (t) => {
    const { client, dbPath, alive, srv } = await childServer(t);
    const M = 20;
    const K = 15;
    const sessions = await Promise.all(Array.from({ length: M }, (_, i) => client.createSession({ serverId: 'storm', subject: `s-${i}`, attributes: { gen: '0', a: '0', b: '0', c: '0' } })));
    const calls: (() => Promise<{ ok: boolean; code?: number }>)[] = [];
    for (let k = 1; k <= K; k++) {
      for (let i = 0; i < M; i++) {
        const id = sessions[i]!.session!.id;
        const g = String(k);
        const n = k * M + i;
        // Every update sets all four keys to one generation: a torn write would mix generations.
        calls.push(() => outcome(client.updateSession({ id, attributes: { gen: g, a: g, b: g, c: g }, merge: k % 2 === 0 }, givingUp(storm, n))));
        if (i % 4 === 1 && k % 5 === 0) calls.push(() => outcome(client.rotateSessionToken(id, givingUp(storm, n + 1))));
        if (i % 4 === 3 && k === K) calls.push(() => outcome(client.deleteSession(id, false, givingUp(storm, n + 2))));
      }
    }
    countCodes(t, storm, await waves(calls.length, 5, (j) => calls[j]!()));
    await settle(client);

    const watcher = new StoreWatcher(dbPath);
    t.teardown(() => watcher.close());
    const applied = watcher.row<{ n: number }>("SELECT sum(version - 1) AS n FROM sessions WHERE server_id = 'storm'").n;
    t.log(`${applied} of ${M * K} updates applied`);
    for (let i = 0; i < M; i++) {
      const { session, token } = sessions[i]!;
      const id = session!.id;
      const row = watcher.row<{ version: number; attributes: string; revoke_time: number | null }>('SELECT version, attributes, revoke_time FROM sessions WHERE id = ?', id);
      const attrs = JSON.parse(row.attributes) as Record<string, string>;
      t.deepEqual(Object.keys(attrs).sort(), ['a', 'b', 'c', 'gen']);
      t.true(attrs['a'] === attrs['gen'] && attrs['b'] === attrs['gen'] && attrs['c'] === attrs['gen'], `${id}: one generation, not a mix: ${row.attributes}`);
      t.true(row.version >= 1 && row.version <= K + 1);
      const v = await client.validateSession(token);
      if (row.revoke_time !== null) {
        await t.throwsAsync(client.getSession(id), { any: true, message: /not found/ });
        t.false(v.valid);
        t.true(v.reason === InvalidReason.INVALID_REASON_REVOKED || v.reason === InvalidReason.INVALID_REASON_NOT_FOUND);
        continue;
      }
      const got = (await client.getSession(id)).session!;
      t.deepEqual(got.attributes, attrs, 'the server reads what is stored');
      t.is(got.etag, `"${row.version}"`, 'the etag is the stored version');
      // The etag works as a guard: the current one applies, the one before is stale.
      const next = await client.updateSession({ id, attributes: { gen: 'x', a: 'x', b: 'x', c: 'x' }, etag: got.etag });
      t.is(next.session?.etag, `"${row.version + 1}"`);
      const stale = await outcome(client.updateSession({ id, attributes: {}, etag: got.etag }));
      t.false(stale.ok);
      if (!stale.ok) t.is(stale.code, status.FAILED_PRECONDITION);
      // The original token still works unless a rotation went through; either way the session is intact.
      if (!v.valid) t.is(v.reason, InvalidReason.INVALID_REASON_NOT_FOUND, 'rotated away, not half-rotated');
      else t.is(v.session?.id, id);
    }
    t.is((await client.health()).status, ServingStatus.SERVING);
    t.true(alive());
    t.notRegex(srv.stderr(), /handler failed|unhandled/i);
  });
}
