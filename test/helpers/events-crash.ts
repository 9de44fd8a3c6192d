import type { ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { SessionEventType, type SessionEvent } from '../../generated/sessions/v1/session_service';
import { SessiondClient } from '../../src/client/client';
import { freePort } from './postgres';
import { spawnServer, type ServerProcess } from './process';

/*
 * The outbox under a crash: a watcher follows the log while writers make
 * every kind of change, some refused (a stale etag, the subject limit); the
 * server is SIGKILLed mid-load and started again on the same storage and
 * port, and the watcher resumes by itself after the last sequence it had.
 * Every acknowledged change has its event, a refused one none, and no
 * sequence comes twice or is skipped.
 */

type Kind = 'CREATED' | 'UPDATED' | 'ROTATED' | 'REVOKED';

interface Tally {
  /** Per session id and kind: how many such changes were acknowledged, and how many had no answer (the crash). */
  acked: Map<string, number>;
  unknown: Map<string, number>;
  refusedUpdates: Set<string>;
  refusedCreates: number;
  unknownCreates: number;
}

const key = (kind: Kind, id: string) => `${kind} ${id}`;
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

async function writer(client: SessiondClient, n: number, tally: Tally, running: () => boolean): Promise<void> {
  const mine: { id: string; etag: string }[] = [];
  // A fourth create for one subject, past the limit of 3: a refusal every run has, however slow the backend.
  for (let i = 0; i < 4 && running(); i++) {
    try {
      const c = await client.createSession({ serverId: 'web', subject: `full-${n}` });
      bump(tally.acked, key('CREATED', c.session!.id));
    } catch (err) {
      if ((err as ServiceError).code === status.RESOURCE_EXHAUSTED) tally.refusedCreates++;
      else tally.unknownCreates++;
    }
  }
  for (let i = 0; running(); i++) {
    const subject = `user-${n}-${i % 4}`;
    const op = i % 6;
    const target = mine[i % Math.max(1, mine.length)];
    try {
      if (op <= 1 || !target) {
        const c = await client.createSession({ serverId: 'web', subject });
        mine.push({ id: c.session!.id, etag: c.session!.etag });
        bump(tally.acked, key('CREATED', c.session!.id));
      } else if (op === 2) {
        const u = await client.updateSession({ id: target.id, attributes: { i: String(i) }, etag: target.etag });
        target.etag = u.session!.etag;
        bump(tally.acked, key('UPDATED', target.id));
      } else if (op === 3) {
        // A stale etag: refused, so no event.
        await client.updateSession({ id: target.id, attributes: { stale: 'yes' }, etag: 'stale-etag' });
      } else if (op === 4) {
        await client.rotateSessionToken(target.id);
        bump(tally.acked, key('ROTATED', target.id));
      } else {
        await client.deleteSession(target.id);
        mine.splice(mine.indexOf(target), 1);
        bump(tally.acked, key('REVOKED', target.id));
      }
    } catch (err) {
      const code = (err as ServiceError).code;
      if (code === status.FAILED_PRECONDITION && op === 3) tally.refusedUpdates.add(target!.id);
      else if (code === status.RESOURCE_EXHAUSTED && (op <= 1 || !target)) tally.refusedCreates++;
      else if (code === status.NOT_FOUND) mine.splice(mine.indexOf(target!), 1);
      else if (op <= 1 || !target) tally.unknownCreates++;
      else bump(tally.unknown, key((['UPDATED', 'UPDATED', 'UPDATED', 'UPDATED', 'ROTATED', 'REVOKED'] as const)[op]!, target!.id));
      if (!running()) return;
    }
  }
}

/** Runs the scenario with `env` (the storage: SQLite by default, or SESSIOND_STORAGE=postgres and its URL). */
export async function eventsSurviveSigkill(t: ExecutionContext, env: Record<string, string>): Promise<void> {
  const port = await freePort();
  const serverEnv = { ...env, SESSIOND_LISTEN: `127.0.0.1:${port}`, SESSIOND_MAX_SESSIONS_PER_SUBJECT: '3', SESSIOND_SESSION_LIMIT_POLICY: 'refuse' };
  let srv: ServerProcess = await spawnServer(serverEnv, [], 30_000);
  t.teardown(() => void srv.proc.kill('SIGKILL'));
  const client = new SessiondClient(srv.address, { defaultDeadlineMs: 5_000 });
  t.teardown(() => client.close());

  const received: SessionEvent[] = [];
  const watcher = client.watch({ afterSequence: (await client.listSessions({})).sequence, initialBackoffMs: 50, maxBackoffMs: 250 });
  t.teardown(() => watcher.close());
  const following = (async () => {
    for await (const e of watcher) received.push(e);
  })();

  const tally: Tally = { acked: new Map(), unknown: new Map(), refusedUpdates: new Set(), refusedCreates: 0, unknownCreates: 0 };
  let running = true;
  const load = Promise.all(Array.from({ length: 8 }, (_, n) => writer(client, n, tally, () => running)));
  await new Promise((resolve) => setTimeout(resolve, 1500));
  srv.proc.kill('SIGKILL');
  await srv.exited;
  running = false;
  await load;
  const seenBeforeRestart = received.length;

  srv = await spawnServer(serverEnv, [], 30_000);
  // The channel may still be in its reconnect backoff: the first calls can fail fast.
  let head: number | undefined;
  while (head === undefined) {
    head = await client.listSessions({}).then((p) => p.sequence, () => undefined);
    if (head === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // Changes after the restart, which the resumed watch must deliver too.
  for (let i = 0; i < 20; i++) {
    const c = await client.createSession({ serverId: 'web', subject: `after-${i}` });
    bump(tally.acked, key('CREATED', c.session!.id));
  }
  head = (await client.listSessions({})).sequence;
  const deadline = Date.now() + 20_000;
  while ((received.at(-1)?.sequence ?? 0) < head && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  watcher.close();
  await following;

  t.true(seenBeforeRestart > 0 && received.length > seenBeforeRestart, `events before (${seenBeforeRestart}) and after (${received.length - seenBeforeRestart}) the crash`);
  const first = received[0]!.sequence;
  t.deepEqual(received.map((e) => e.sequence), Array.from({ length: received.length }, (_, i) => first + i), 'every sequence once, none skipped, up to the head');
  t.is(received.at(-1)!.sequence, head);
  const got = new Map<string, number>();
  for (const e of received) bump(got, key(SessionEventType[e.type].replace('SESSION_EVENT_TYPE_', '') as Kind, e.sessionId));
  for (const [k, n] of tally.acked) {
    const have = got.get(k) ?? 0;
    t.true(have >= n && have <= n + (tally.unknown.get(k) ?? 0), `${k}: ${n} acknowledged, ${tally.unknown.get(k) ?? 0} unanswered, ${have} events`);
  }
  for (const [k, n] of got) {
    const allowed = (tally.acked.get(k) ?? 0) + (tally.unknown.get(k) ?? 0) + (k.startsWith('CREATED') ? 1 : 0);
    t.true(n <= allowed, `${k}: ${n} events for ${allowed} possible changes`);
  }
  const creates = [...got.keys()].filter((k) => k.startsWith('CREATED')).length;
  const ackedCreates = [...tally.acked.keys()].filter((k) => k.startsWith('CREATED')).length;
  t.true(creates >= ackedCreates && creates <= ackedCreates + tally.unknownCreates, `${creates} CREATED events, ${ackedCreates} acknowledged creates, ${tally.unknownCreates} unanswered`);
  t.true(tally.refusedCreates > 0 && tally.refusedUpdates.size > 0, `refusals happened (${tally.refusedCreates} creates, ${tally.refusedUpdates.size} updates)`);
  t.log(`${received.length} events, ${seenBeforeRestart} before the SIGKILL; ${ackedCreates} creates acknowledged, ${tally.refusedCreates} refused, ${tally.unknownCreates} unanswered`);
}
