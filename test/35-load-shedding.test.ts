import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { SessiondClient } from '../src/client/client';
import { OverloadedError } from '../src/domain/errors';
import { GroupCommitter } from '../src/storage/sqlite/group-commit';
import { parseExposition } from './helpers/prometheus';
import { startTestServer, tempDir, type TestServer } from './helpers/server';
import { waitFor } from './helpers/wait';

/*
 * A bounded write queue (--max-pending-writes): once that many writes wait to
 * be committed, a write is refused at once with UNAVAILABLE and is never run,
 * so a flood is shed instead of piling up; what was acknowledged is kept.
 */

const SHED = /too many writes are waiting: (\d+) already wait to be committed \(max-pending-writes (\d+)\); the write was not applied, retry with backoff/;

test('the group committer refuses past maxPending at once, without running the unit, and reports each refusal', async (t) => {
  const dir = tempDir('sessiond-shed-');
  const db = new Database(join(dir, 'db.sqlite'));
  t.teardown(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  db.exec('CREATE TABLE t (v INTEGER)');
  let shed = 0;
  const writes = new GroupCommitter(db, { busyTimeoutMs: 1000, maxPending: 3, onShed: () => shed++ });
  const ran: number[] = [];
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const calls = [1, 2, 3, 4, 5].map((v) => writes.run(() => {
    ran.push(v);
    return insert.run(v).changes;
  }).then(() => 'ok', (err: unknown) => err));
  t.is(writes.pending, 3, 'the queue holds the limit, no more');
  t.is(shed, 2);
  const answers = await Promise.all(calls);
  t.deepEqual(answers.slice(0, 3), ['ok', 'ok', 'ok']);
  for (const refused of answers.slice(3)) {
    t.true(refused instanceof OverloadedError);
    t.is((refused as OverloadedError).kind, 'unavailable');
    t.regex((refused as Error).message, SHED);
    t.is(SHED.exec((refused as Error).message)![1], '3', 'says how many wait');
  }
  t.deepEqual(ran, [1, 2, 3], 'the refused units never ran');
  t.is((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n, 3);
  // Once the queue has drained, writes are taken again.
  t.is(await writes.run(() => insert.run(6).changes), 1);
  await writes.close();
});

type Answer = { ok: true; id: string } | { ok: false; code: number; details: string };

const create = (client: SessiondClient, subject: string): Promise<Answer> =>
  client.createSession({ serverId: 'flood', subject }).then(
    (r) => ({ ok: true, id: r.session!.id }),
    (e: ServiceError) => ({ ok: false, code: e.code, details: e.details }),
  );

async function shedCount(s: TestServer): Promise<number> {
  return parseExposition(await s.app.metrics.registry.metrics()).find((m) => m.name === 'sessiond_writes_shed_total')?.value ?? 0;
}

/** Every acknowledged create is stored after a restart on the same folder, and nothing else is. */
async function checkAfterRestart(t: ExecutionContext, dir: string, acked: string[]): Promise<void> {
  const again = await startTestServer({ dir });
  t.teardown(() => again.close());
  const stored = new Set<string>();
  for await (const session of again.client.listAllSessions({ serverId: 'flood', subject: '' })) stored.add(session.id);
  t.is(stored.size, acked.length, 'no refused create was applied, no acknowledged one was lost');
  t.deepEqual(acked.filter((id) => !stored.has(id)), []);
}

test('writes queued behind a lock held elsewhere: exactly max-pending-writes wait, the rest are refused with UNAVAILABLE at once, and the waiting ones commit once the lock goes', async (t) => {
  const dir = tempDir('sessiond-shed-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const s = await startTestServer({ dir, env: { SESSIOND_MAX_PENDING_WRITES: '8', SESSIOND_BUSY_TIMEOUT: '60s' } });
  let open = true;
  t.teardown(() => (open ? s.close() : undefined));
  // Another connection holds the write lock, so nothing the server queues can commit meanwhile.
  const other = new Database(s.dbPath);
  other.exec('BEGIN IMMEDIATE');
  const answers: Answer[] = [];
  const all = Array.from({ length: 40 }, (_, i) => create(s.client, `user-${i}`).then((a) => (answers.push(a), a)));
  await waitFor(() => answers.length === 32, 'the 32 writes over the limit to be refused');
  t.is(s.app.sqlite!.writes.pending, 8, 'the queue holds exactly the limit');
  for (const a of answers) {
    t.false(a.ok);
    if (a.ok) continue;
    t.is(a.code, status.UNAVAILABLE);
    t.regex(a.details, SHED);
    t.deepEqual(SHED.exec(a.details)!.slice(1), ['8', '8']);
  }
  t.is(await shedCount(s), 32, 'each refusal is counted');
  other.exec('ROLLBACK');
  other.close();
  const settled = await Promise.all(all);
  const acked = settled.flatMap((a) => (a.ok ? [a.id] : []));
  t.is(acked.length, 8, 'the waiting writes committed once the lock was released');
  await s.close();
  open = false;
  await checkAfterRestart(t, dir, acked);
});

test('a flood of concurrent creates: the queue never holds more than the limit, some are refused with UNAVAILABLE, every other is acknowledged and kept across a restart', async (t) => {
  const LIMIT = 4;
  const dir = tempDir('sessiond-shed-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const s = await startTestServer({
    dir,
    env: { SESSIOND_MAX_PENDING_WRITES: String(LIMIT), SESSIOND_MAX_CONCURRENT_STREAMS: '1000' },
  });
  let open = true;
  t.teardown(() => (open ? s.close() : undefined));
  // Sampled on every loop turn: each sample runs before that turn's flush
  // (both are setImmediate callbacks, the sampler queued first), so it sees
  // everything the turn's calls queued.
  let maxPending = 0;
  let samples = 0;
  let sampling = true;
  const sample = () => {
    maxPending = Math.max(maxPending, s.app.sqlite!.writes.pending);
    samples++;
    if (sampling) setImmediate(sample);
  };
  setImmediate(sample);
  const answers: Answer[] = [];
  // Waves until some are shed: how many arrive in one turn depends on the machine.
  for (let wave = 0; wave < 20 && !answers.some((a) => !a.ok); wave++) {
    answers.push(...(await Promise.all(Array.from({ length: 400 }, (_, i) => create(s.client, `w${wave}-${i}`)))));
  }
  sampling = false;
  t.true(samples > 0);
  t.true(maxPending <= LIMIT, `the queue held ${maxPending} writes, over the limit of ${LIMIT}`);
  const refused = answers.filter((a): a is Extract<Answer, { ok: false }> => !a.ok);
  t.true(refused.length > 0, 'some writes were shed');
  for (const a of refused) {
    t.is(a.code, status.UNAVAILABLE, a.details);
    t.regex(a.details, SHED);
  }
  t.is(await shedCount(s), refused.length);
  const acked = answers.flatMap((a) => (a.ok ? [a.id] : []));
  t.true(acked.length > 0);
  await s.close();
  open = false;
  await checkAfterRestart(t, dir, acked);
});
