import test from 'ava';
import { FailedPreconditionError, SessionLimitError, UniqueViolationError } from '../src/domain/errors';
import type { SessionRecord } from '../src/domain/session';
import type { SessionEvent } from '../src/domain/session-events';
import { DEFAULT_POSTGRES_OPTIONS, type PostgresOptions } from '../src/storage/options';
import { PostgresStorage } from '../src/storage/postgres/postgres-storage';
import { databasesForTests } from './helpers/postgres-databases';
import { eventsSurviveSigkill } from './helpers/events-crash';
import { hashOf, record } from './helpers/repository-contract';

/*
 * The PostgreSQL outbox under real concurrency: two storages (two pools, as
 * two replicas) on one database. Sequences must follow commit order, or a
 * reader that polls after the last sequence it saw skips an event that
 * committed later with a lower number. And what --session-events off leaves
 * behind is marked pruned when events come back on.
 */

const newDatabase = databasesForTests(test);

const BASE = Date.UTC(2026, 0, 1);
const HOUR = 3_600_000;

async function openStorage(url: string, over: Partial<PostgresOptions> = {}): Promise<PostgresStorage> {
  return PostgresStorage.open({ ...DEFAULT_POSTGRES_OPTIONS, poolSize: 8, url, ...over });
}

const live = (over: Partial<SessionRecord> = {}) => record({ createTime: BASE - HOUR, expireTime: BASE + HOUR, idleExpireTime: BASE + HOUR, ...over });

test('events written by two replicas at once reach a polling reader in commit order: none skipped, one per acknowledged write, none for a failed one', async (t) => {
  const url = await newDatabase();
  const replicas = [await openStorage(url), await openStorage(url)];
  const reader = await openStorage(url, { poolSize: 2 });
  t.teardown(() => Promise.all([...replicas, reader].map((s) => s.close())));
  const [first] = replicas.map((r) => r.repository);

  // What the writes act on, made before they start: their events are expected too.
  const expected = new Map<string, number>();
  const expect = (type: SessionEvent['type'], id: string, cause: SessionEvent['cause'] = '') => {
    const key = `${type}/${id}/${cause}`;
    expected.set(key, (expected.get(key) ?? 0) + 1);
  };
  const targets = Array.from({ length: 20 }, () => live({ subject: 'target' }));
  const expired = Array.from({ length: 60 }, (_, i) => record({
    subject: 'expired', createTime: BASE - 3 * HOUR,
    // Half end by the lifetime, half by the idle window.
    expireTime: BASE - (i % 2 ? 2 : 1) * HOUR, idleExpireTime: BASE - (i % 2 ? 1 : 2) * HOUR,
  }));
  const refused = live({ subject: 'refused' });
  for (const s of [...targets, ...expired, refused]) {
    await first!.insert(s, hashOf(s.id));
    expect('CREATED', s.id);
  }

  let revokedByFilter = 0;
  let purged = 0;
  const failures: string[] = [];
  const unexpected: unknown[] = [];
  const pick = <T>(xs: readonly T[], k: number): T => xs[k % xs.length]!;

  /** One write of kind k % 10, on replica r; resolves once it is answered, recording what it should have appended. */
  async function write(r: number, k: number): Promise<void> {
    const repo = replicas[r]!.repository;
    const mine = `r${r}-${k}`;
    try {
      switch (k % 10) {
        case 0:
        case 1: {
          const s = live({ subject: `user-${k % 7}` });
          await repo.insert(s, hashOf(s.id));
          expect('CREATED', s.id);
          break;
        }
        case 2: {
          const s = live({ subject: `limited-${k % 3}` });
          const evicted = await repo.insert(s, hashOf(s.id), undefined, { max: 3, evict: true, now: BASE });
          for (const id of evicted) expect('REVOKED', id, 'limit');
          expect('CREATED', s.id);
          break;
        }
        case 3: {
          const target = pick(targets, k);
          await repo.modify(target.id, (c) => ({ next: { ...c, attributes: { k: mine }, version: c.version + 1 }, event: { type: 'UPDATED', cause: '', time: BASE } }));
          expect('UPDATED', target.id);
          break;
        }
        case 4: {
          const target = pick(targets, k + 1);
          await repo.modify(target.id, (c) => ({ next: { ...c, tokenRotateTime: BASE }, tokenHash: hashOf(mine), event: { type: 'ROTATED', cause: '', time: BASE } }), { durable: true });
          expect('ROTATED', target.id);
          break;
        }
        case 5: {
          const n = await repo.revokeMatching({ serverId: '', subject: `user-${k % 7}` }, BASE, 2);
          revokedByFilter += n;
          break;
        }
        case 6: {
          const s = live({ subject: `deleted-${mine}` });
          await repo.insert(s, hashOf(s.id));
          expect('CREATED', s.id);
          await repo.modify(s.id, (c) => ({ next: { ...c, revokeTime: BASE }, event: { type: 'REVOKED', cause: 'delete', time: BASE } }), { durable: true });
          expect('REVOKED', s.id, 'delete');
          break;
        }
        case 7: {
          // Only the sessions that expired long before BASE: revoked ones are dead from BASE on.
          const n = await repo.purgeBatch(BASE - HOUR / 2, 2);
          purged += n;
          break;
        }
        case 8: {
          // Refused or failed writes: each must leave no event.
          const kind = Math.floor(k / 10) % 3;
          if (kind === 0) {
            await t.throwsAsync(repo.insert(live({ id: pick(targets, k).id }), hashOf(`dup-${mine}`)), { instanceOf: UniqueViolationError });
          } else if (kind === 1) {
            const s = live({ subject: 'refused' });
            await t.throwsAsync(repo.insert(s, hashOf(s.id), undefined, { max: 1, evict: false, now: BASE }), { instanceOf: SessionLimitError });
          } else {
            await t.throwsAsync(repo.modify(pick(targets, k).id, () => {
              throw new FailedPreconditionError('stale etag');
            }), { instanceOf: FailedPreconditionError });
          }
          failures.push(mine);
          break;
        }
        default:
          // A touch makes no event.
          await repo.modify(pick(targets, k).id, (c) => ({ next: { ...c, lastActiveTime: BASE } }));
      }
    } catch (err) {
      unexpected.push(err);
    }
  }

  // The reader polls after the last sequence it received, as a watch does.
  const received: SessionEvent[] = [];
  let writing = true;
  const polling = (async () => {
    let after = 0;
    for (;;) {
      const done = !writing;
      const page = await reader.repository.readEvents(after, 1000);
      for (const e of page.events) {
        t.true(e.sequence > after, `sequence ${e.sequence} after ${after}`);
        received.push(e);
        after = e.sequence;
      }
      if (done && page.events.length === 0) return;
    }
  })();

  const PER_REPLICA = 300;
  const IN_FLIGHT = 16;
  await Promise.all(replicas.map(async (_, r) => {
    let next = 0;
    await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
      while (next < PER_REPLICA) await write(r, next++);
    }));
  }));
  writing = false;
  await polling;

  t.deepEqual(unexpected.map(String), [], 'no write failed unexpectedly (a lock cycle would be a deadlock here)');
  t.is(failures.length, 2 * (PER_REPLICA / 10));
  const final = await reader.repository.readEvents(0, 100_000);
  // An event numbered below one the reader had already passed, committed later, is one it never gets.
  const seen = new Set(received.map((e) => e.sequence));
  t.deepEqual(final.events.filter((e) => !seen.has(e.sequence)).map((e) => e.sequence), [], 'the reader skipped no event');
  t.deepEqual(received, final.events);
  // No gap in the numbers, and the head is the last of them.
  t.deepEqual(final.events.map((e) => e.sequence), Array.from({ length: final.events.length }, (_, i) => i + 1));
  t.is(final.head, final.events.at(-1)!.sequence);
  t.is(final.prunedThrough, 0);

  // One event per acknowledged write, and none for the failed ones.
  const byFilter = received.filter((e) => e.type === 'REVOKED' && e.cause === 'revoke');
  const expiries = received.filter((e) => e.type === 'EXPIRED');
  const rest = new Map<string, number>();
  for (const e of received) {
    if (byFilter.includes(e) || expiries.includes(e)) continue;
    const key = `${e.type}/${e.sessionId}/${e.cause}`;
    rest.set(key, (rest.get(key) ?? 0) + 1);
  }
  t.deepEqual([...rest].sort(), [...expected].sort());
  t.is(byFilter.length, revokedByFilter);
  t.is(new Set(byFilter.map((e) => e.sessionId)).size, byFilter.length, 'each session revoked by a filter once');
  t.true(revokedByFilter > 0 && purged > 0, `revoked ${revokedByFilter}, purged ${purged}`);
  t.is(expiries.length, purged);
  const expiredIds = new Map(expired.map((s) => [s.id, s.expireTime <= s.idleExpireTime ? 'ttl' : 'idle']));
  t.true(expiries.every((e) => expiredIds.get(e.sessionId) === e.cause), 'EXPIRED only for sessions that expired, by the deadline that passed first');
  t.is(new Set(expiries.map((e) => e.sessionId)).size, expiries.length);
});

test('events off, then on again: what the off run changed is marked pruned, so a resume from before it is out of range', async (t) => {
  const url = await newDatabase();
  const before = live();
  let storage = await openStorage(url);
  await storage.repository.insert(before, hashOf(before.id));
  const head = (await storage.repository.readEvents(0, 10)).head;
  t.is(head, 1);
  await storage.close();

  storage = await openStorage(url, { sessionEvents: false });
  const during = live();
  await storage.repository.insert(during, hashOf(during.id));
  const off = await storage.repository.readEvents(0, 10);
  t.deepEqual([off.events.map((e) => e.sessionId), off.head, off.prunedThrough], [[before.id], 1, 0], 'off: nothing appended, the counter untouched');
  await storage.close();

  storage = await openStorage(url);
  t.teardown(() => storage.close());
  let page = await storage.repository.readEvents(0, 10);
  t.deepEqual(page, { events: [], head: head + 1, prunedThrough: head + 1 }, 'one sequence burned: a consumer at the old head is behind the mark too');
  t.is((await storage.repository.list({ serverId: '', subject: '' }, 0, 10, BASE)).sequence, head + 1, 'a list answers the sequence to watch from');

  const after = live();
  await storage.repository.insert(after, hashOf(after.id));
  page = await storage.repository.readEvents(0, 10);
  t.deepEqual(page.events.map((e) => [e.sequence, e.sessionId]), [[head + 2, after.id]]);
  t.is(page.prunedThrough, head + 1);

  // Opening on again (another replica, a restart) burns nothing more.
  const second = await openStorage(url);
  t.deepEqual(await second.repository.readEvents(0, 10), page);
  await second.close();
});

test('a replica SIGKILLed under write load: every acknowledged change has its event, a refused one none, and the watcher resumes without a gap', async (t) => {
  await eventsSurviveSigkill(t, { SESSIOND_STORAGE: 'postgres', SESSIOND_DATABASE_URL: await newDatabase(), SESSIOND_DATABASE_POOL_SIZE: '4' });
});
