import test, { type ExecutionContext } from 'ava';
import { FailedPreconditionError, SessionLimitError, UniqueViolationError } from '../../src/domain/errors';
import type { SessionEvent } from '../../src/domain/session-events';
import type { SessionRepository } from '../../src/domain/session-repository';
import { hashOf, record, type OpenedRepository } from './repository-contract';

/*
 * The outbox part of the SessionRepository contract: which writes append
 * which events, in the same transaction, numbered in commit order; reads
 * after a sequence; retention. For every implementation, as
 * repository-contract.ts. `open(false)` opens with --session-events off.
 */

const T0 = Date.UTC(2026, 0, 1);
const MINUTE = 60_000;

type Brief = [SessionEvent['type'], string, SessionEvent['cause']];

async function eventsAfter(repo: SessionRepository, after = 0): Promise<SessionEvent[]> {
  return (await repo.readEvents(after, 10_000)).events;
}

const brief = (events: SessionEvent[]): Brief[] => events.map((e) => [e.type, e.sessionId, e.cause]);

function assertIncreasing(t: ExecutionContext, events: SessionEvent[]): void {
  for (let i = 1; i < events.length; i++) t.true(events[i]!.sequence > events[i - 1]!.sequence, `sequence ${events[i]!.sequence} after ${events[i - 1]!.sequence}`);
}

export function eventLogContract(name: string, open: (sessionEvents?: boolean) => OpenedRepository | Promise<OpenedRepository>): void {
  const it = (title: string, fn: (t: ExecutionContext, repo: SessionRepository) => Promise<void>, sessionEvents = true) =>
    test(`${name}: events: ${title}`, async (t) => {
      const opened = await open(sessionEvents);
      t.teardown(async () => {
        await opened.close();
      });
      await fn(t, opened.repo);
    });

  it('an empty log: no events, head 0, nothing pruned; a list reads sequence 0', async (t, repo) => {
    t.deepEqual(await repo.readEvents(0, 10), { events: [], head: 0, prunedThrough: 0 });
    t.is((await repo.list({ serverId: '', subject: '' }, 0, 10, T0)).sequence, 0);
  });

  it('creates, updates, rotations and deletes append one event each, with the session and the time; touches none', async (t, repo) => {
    const s = record();
    await repo.insert(s, hashOf(s.id));
    await repo.modify(s.id, (c) => ({ next: { ...c, attributes: { a: '1' }, version: c.version + 1 }, event: { type: 'UPDATED', cause: '', time: T0 + 1 } }));
    await repo.modify(s.id, (c) => ({ next: { ...c, lastActiveTime: T0 + 2 } }));
    await repo.modify(s.id, (c) => ({ next: { ...c, tokenRotateTime: T0 + 3 }, tokenHash: hashOf(`${s.id}-2`), event: { type: 'ROTATED', cause: '', time: T0 + 3 } }));
    await repo.modify(s.id, () => null);
    await repo.modify(s.id, (c) => ({ next: { ...c, revokeTime: T0 + 4 }, event: { type: 'REVOKED', cause: 'delete', time: T0 + 4 } }), { durable: true });
    const events = await eventsAfter(repo);
    t.deepEqual(brief(events), [['CREATED', s.id, ''], ['UPDATED', s.id, ''], ['ROTATED', s.id, ''], ['REVOKED', s.id, 'delete']]);
    t.deepEqual(events.map((e) => e.time), [s.createTime, T0 + 1, T0 + 3, T0 + 4]);
    t.true(events.every((e) => e.serverId === s.serverId && e.subject === s.subject));
    assertIncreasing(t, events);
    t.is((await repo.readEvents(0, 1)).head, events[3]!.sequence, 'the head is the last sequence');
  });

  it('a write that fails or is refused appends nothing', async (t, repo) => {
    const s = record({ subject: 'bob' });
    await repo.insert(s, hashOf(s.id));
    const before = await eventsAfter(repo);
    await t.throwsAsync(repo.insert(record({ id: s.id }), hashOf('other')), { instanceOf: UniqueViolationError });
    await t.throwsAsync(repo.modify(s.id, () => {
      throw new FailedPreconditionError('stale etag');
    }), { instanceOf: FailedPreconditionError });
    await t.throwsAsync(repo.insert(record({ subject: 'bob' }), hashOf('third'), undefined, { max: 1, evict: false, now: T0 }), { instanceOf: SessionLimitError });
    t.deepEqual(await eventsAfter(repo), before);
  });

  it('revokeMatching appends REVOKED (revoke) for each session it revoked, none for the one kept or already dead', async (t, repo) => {
    const keep = record({ subject: 'carol' });
    const a = record({ subject: 'carol' });
    const b = record({ subject: 'carol' });
    const dead = record({ subject: 'carol', revokeTime: T0 - MINUTE });
    const other = record({ subject: 'dave' });
    for (const s of [keep, a, b, dead, other]) await repo.insert(s, hashOf(s.id));
    const head = (await repo.readEvents(0, 1)).head;
    t.is(await repo.revokeMatching({ serverId: '', subject: 'carol', exceptId: keep.id }, T0, 100), 2);
    const events = await eventsAfter(repo, head);
    t.deepEqual(brief(events).sort(), [['REVOKED', a.id, 'revoke'], ['REVOKED', b.id, 'revoke']].sort() as Brief[]);
    t.true(events.every((e) => e.time === T0 && e.subject === 'carol'));
  });

  it('an eviction for the subject limit appends REVOKED (limit) for each evicted, then CREATED', async (t, repo) => {
    const old1 = record({ subject: 'erin' });
    const old2 = record({ subject: 'erin' });
    await repo.insert(old1, hashOf(old1.id));
    await repo.insert(old2, hashOf(old2.id));
    const head = (await repo.readEvents(0, 1)).head;
    const s = record({ subject: 'erin' });
    t.deepEqual(await repo.insert(s, hashOf(s.id), undefined, { max: 1, evict: true, now: T0 }), [old1.id, old2.id]);
    t.deepEqual(brief(await eventsAfter(repo, head)), [['REVOKED', old1.id, 'limit'], ['REVOKED', old2.id, 'limit'], ['CREATED', s.id, '']]);
  });

  it('a purge appends EXPIRED (ttl or idle) for sessions that expired, none for revoked ones', async (t, repo) => {
    const ttl = record({ expireTime: T0 + MINUTE, idleExpireTime: T0 + 2 * MINUTE });
    const idle = record({ expireTime: T0 + 5 * MINUTE, idleExpireTime: T0 + MINUTE });
    const revoked = record({ revokeTime: T0 });
    const live = record({ expireTime: T0 + 60 * MINUTE, idleExpireTime: T0 + 60 * MINUTE });
    for (const s of [ttl, idle, revoked, live]) await repo.insert(s, hashOf(s.id));
    const head = (await repo.readEvents(0, 1)).head;
    const now = T0 + 10 * MINUTE;
    t.is(await repo.purgeBatch(now, 100), 3);
    const events = await eventsAfter(repo, head);
    t.deepEqual(brief(events).sort(), [['EXPIRED', idle.id, 'idle'], ['EXPIRED', ttl.id, 'ttl']].sort() as Brief[]);
    t.true(events.every((e) => e.time === now));
  });

  it('readEvents pages after a sequence, in order, and a list reads the head in its snapshot', async (t, repo) => {
    const made = [];
    for (let i = 0; i < 7; i++) {
      const s = record({ subject: `page-${i}` });
      await repo.insert(s, hashOf(s.id));
      made.push(s.id);
    }
    const all = await eventsAfter(repo);
    t.deepEqual(all.map((e) => e.sessionId), made);
    const page = await repo.readEvents(all[2]!.sequence, 3);
    t.deepEqual(page.events.map((e) => e.sessionId), made.slice(3, 6));
    t.is(page.head, all[6]!.sequence);
    t.deepEqual((await repo.readEvents(all[6]!.sequence, 3)).events, []);
    t.is((await repo.list({ serverId: '', subject: '' }, 0, 2, T0)).sequence, all[6]!.sequence);
  });

  it('pruneEvents deletes the oldest by count and by age, as one prefix, raises the mark, and sequences go on above it', async (t, repo) => {
    const times = [T0, T0 + 1, T0 + 5, T0 + 2, T0 + 6, T0 + 7];
    for (const time of times) {
      const s = record({ createTime: time });
      await repo.insert(s, hashOf(s.id));
    }
    const all = await eventsAfter(repo);
    // By age: the first two are older than T0 + 2; the third is not, and the fourth, though older, stays behind it.
    t.is(await repo.pruneEvents(T0 + 2, 1000, 100), 2);
    let page = await repo.readEvents(0, 100);
    t.is(page.prunedThrough, all[1]!.sequence);
    t.deepEqual(page.events.map((e) => e.sequence), all.slice(2).map((e) => e.sequence));
    // By count: keep the newest 2; the limit bounds one call.
    t.is(await repo.pruneEvents(0, 2, 1), 1);
    t.is(await repo.pruneEvents(0, 2, 100), 1);
    t.is(await repo.pruneEvents(0, 2, 100), 0);
    page = await repo.readEvents(0, 100);
    t.is(page.prunedThrough, all[3]!.sequence);
    t.deepEqual(page.events.map((e) => e.sequence), all.slice(4).map((e) => e.sequence));
    // Everything: the head stays, and the next event is numbered above it.
    t.is(await repo.pruneEvents(T0 + 100, 0, 100), 2);
    page = await repo.readEvents(0, 100);
    t.deepEqual(page, { events: [], head: all[5]!.sequence, prunedThrough: all[5]!.sequence });
    const s = record();
    await repo.insert(s, hashOf(s.id));
    const [next] = await eventsAfter(repo);
    t.true(next!.sequence > all[5]!.sequence);
  });

  it('with events off, writes append nothing', async (t, repo) => {
    const s = record();
    await repo.insert(s, hashOf(s.id));
    await repo.modify(s.id, (c) => ({ next: { ...c, revokeTime: T0 }, event: { type: 'REVOKED', cause: 'delete', time: T0 } }));
    await repo.purgeBatch(T0 + MINUTE, 100);
    t.deepEqual(await repo.readEvents(0, 10), { events: [], head: 0, prunedThrough: 0 });
  }, false);
}
