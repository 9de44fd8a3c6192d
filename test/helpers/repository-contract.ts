import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { DomainError, FailedPreconditionError, SessionLimitError, UniqueViolationError } from '../../src/domain/errors';
import { deadAt, sessionState, type SessionRecord } from '../../src/domain/session';
import type { SessionFilter, SessionRepository } from '../../src/domain/session-repository';

/*
 * The SessionRepository contract (src/domain/session-repository.ts) as ava
 * tests, for every implementation. Each test gets a fresh, empty repository
 * from `open` and closes it at the end. Records are built by hand, so the
 * suite depends on nothing but the interface and the domain's definition of
 * "live" (sessionState / deadAt).
 *
 * The contract calls list's cursor opaque; like SessionManager (an empty page
 * token decodes to 0), the suite starts every listing at cursor 0.
 */

/** A fixed instant: every test moves time by hand from here. */
const T0 = Date.UTC(2026, 0, 1);
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

export interface OpenedRepository {
  repo: SessionRepository;
  /** May be async (an implementation may flush or checkpoint on close); the suite awaits it. */
  close(): void | Promise<unknown>;
}

export function hashOf(label: string): Buffer {
  return createHash('sha256').update(`token:${label}`).digest();
}

let seq = 0;

/**
 * A live session (at T0) with every field distinct, so that a swapped column
 * shows up in a deepEqual. `over` replaces fields.
 */
export function record(over: Partial<SessionRecord> = {}): SessionRecord {
  const n = ++seq;
  return {
    id: `sess-${n.toString().padStart(5, '0')}-${Math.random().toString(36).slice(2, 8)}`,
    serverId: 'srv-a',
    subject: 'alice',
    attributes: { role: 'admin', n: String(n) },
    ip: '203.0.113.7',
    userAgent: `agent/${n}`,
    createTime: T0 - 10 * MINUTE,
    updateTime: T0 - 9 * MINUTE,
    expireTime: T0 + 24 * HOUR,
    idleExpireTime: T0 + 30 * MINUTE,
    lastActiveTime: T0 - 8 * MINUTE,
    idleTimeoutMs: 30 * MINUTE + n,
    tokenRotateTime: T0 - 7 * MINUTE,
    revokeTime: null,
    version: n,
    ...over,
  };
}

/** Expired (absolute) at T0 - 1 min. */
const expired = (over: Partial<SessionRecord> = {}) => record({ expireTime: T0 - MINUTE, idleExpireTime: T0 - MINUTE, ...over });
/** Idle-timed-out at T0 - 1 min. */
const idle = (over: Partial<SessionRecord> = {}) => record({ idleExpireTime: T0 - MINUTE, ...over });
/** Revoked at T0 - 1 min. */
const revoked = (over: Partial<SessionRecord> = {}) => record({ revokeTime: T0 - MINUTE, ...over });

const ANY: SessionFilter = { serverId: '', subject: '' };

async function insertAll(repo: SessionRepository, records: SessionRecord[]): Promise<void> {
  for (const r of records) await repo.insert(r, hashOf(r.id));
}

/** Every page of `list`, with the cursors seen, checking that no page exceeds `limit`. */
async function listAll(t: ExecutionContext, repo: SessionRepository, filter: SessionFilter, limit: number, now: number) {
  const ids: string[] = [];
  const pageSizes: number[] = [];
  let cursor = 0;
  for (let guard = 0; guard < 1000; guard++) {
    const page = (await repo.list(filter, cursor, limit, now));
    t.true(page.sessions.length <= limit, `a page holds at most ${limit}`);
    pageSizes.push(page.sessions.length);
    ids.push(...page.sessions.map((s) => s.id));
    if (page.nextCursor === undefined) return { ids, pageSizes };
    t.true(page.sessions.length > 0, 'a page with a next cursor is not empty');
    cursor = page.nextCursor;
  }
  throw new Error('list never reached its last page');
}

async function expectUnique(t: ExecutionContext, fn: () => Promise<unknown>): Promise<void> {
  await t.throwsAsync(fn, { instanceOf: UniqueViolationError });
}

export function repositoryContract(name: string, open: () => OpenedRepository | Promise<OpenedRepository>): void {
  const it = (title: string, fn: (t: ExecutionContext, repo: SessionRepository) => Promise<void>) =>
    test(`${name}: ${title}`, async (t) => {
      const opened = await open();
      t.teardown(async () => {
        await opened.close();
      });
      await fn(t, opened.repo);
    });

  // ---------------------------------------------------------------- insert, findById, findByTokenHash

  it('insert then findById and findByTokenHash return every field as stored', async (t, repo) => {
    const s = record({
      attributes: { role: 'admin', empty: '', 'key with spaces': 'value "quoted" \\ back', unicode: 'żółw 🐢', json: '{"a":[1]}' },
      ip: '2001:db8::1',
      userAgent: 'Mozilla/5.0 (X11; Linux x86_64)',
      subject: '',
    });
    await repo.insert(s, hashOf('round-trip'));
    const byId = (await repo.findById(s.id));
    t.deepEqual(byId, s);
    t.is(byId?.revokeTime, null, 'an unrevoked session reads back null, not undefined or 0');
    t.deepEqual((await repo.findByTokenHash(hashOf('round-trip'))), s);
  });

  it('a session with no attributes and a revoked session round-trip too', async (t, repo) => {
    const bare = record({ attributes: {} });
    const gone = revoked({ revokeTime: T0 - 123 });
    await insertAll(repo, [bare, gone]);
    t.deepEqual((await repo.findById(bare.id))?.attributes, {});
    t.deepEqual((await repo.findById(gone.id)), gone);
    t.is((await repo.findById(gone.id))?.revokeTime, T0 - 123);
  });

  it('lookups of unknown ids and hashes give undefined', async (t, repo) => {
    const s = record();
    await repo.insert(s, hashOf('known'));
    t.is((await repo.findById('no-such-id')), undefined);
    t.is((await repo.findById(s.id.toUpperCase())), undefined, 'ids are compared exactly');
    t.is((await repo.findByTokenHash(hashOf('unknown'))), undefined);
    t.is((await repo.findByTokenHash(hashOf('known').subarray(0, 31))), undefined, 'a hash prefix finds nothing');
  });

  it('findById and findByTokenHash return sessions in any state until purged', async (t, repo) => {
    const dead = [expired(), idle(), revoked()];
    await insertAll(repo, dead);
    for (const s of dead) {
      t.not(sessionState(s, T0), 'live');
      t.deepEqual((await repo.findById(s.id)), s);
      t.deepEqual((await repo.findByTokenHash(hashOf(s.id))), s);
    }
  });

  it('insert with an existing id throws UniqueViolationError and changes nothing', async (t, repo) => {
    const first = record();
    await repo.insert(first, hashOf('first'));
    const clash = record({ id: first.id, subject: 'mallory' });
    await expectUnique(t, () => repo.insert(clash, hashOf('second')));
    t.deepEqual((await repo.findById(first.id)), first);
    t.is((await repo.findByTokenHash(hashOf('second'))), undefined);
    t.deepEqual((await repo.countSessions(T0)), { live: 1, dead: 0 });
  });

  it('insert with an existing token hash throws UniqueViolationError and changes nothing', async (t, repo) => {
    const first = record();
    await repo.insert(first, hashOf('shared'));
    const clash = record();
    await expectUnique(t, () => repo.insert(clash, hashOf('shared')));
    t.is((await repo.findById(clash.id)), undefined);
    t.deepEqual((await repo.findByTokenHash(hashOf('shared'))), first);
    t.deepEqual((await repo.countSessions(T0)), { live: 1, dead: 0 });
  });

  // ---------------------------------------------------------------- insert with a subject limit

  it('insert with a limit evicts the oldest live sessions of that server_id and subject, and only those', async (t, repo) => {
    const dead = revoked({ serverId: 'srv-a', subject: 'alice' });
    const [a1, a2] = [record({ serverId: 'srv-a', subject: 'alice' }), record({ serverId: 'srv-a', subject: 'alice' })];
    const others = [record({ serverId: 'srv-b', subject: 'alice' }), record({ serverId: 'srv-a', subject: 'bob' })];
    await insertAll(repo, [dead, a1, a2, ...others]);
    const a3 = record({ serverId: 'srv-a', subject: 'alice' });
    t.deepEqual(await repo.insert(a3, hashOf(a3.id), undefined, { max: 2, evict: true, now: T0 }), [a1.id], 'a dead session takes no slot');
    t.deepEqual(await repo.findById(a1.id), { ...a1, revokeTime: T0 });
    for (const s of [dead, a2, a3, ...others]) t.deepEqual(await repo.findById(s.id), s);
    // A lower limit evicts as many as it takes, oldest first.
    const a4 = record({ serverId: 'srv-a', subject: 'alice' });
    t.deepEqual(await repo.insert(a4, hashOf(a4.id), undefined, { max: 1, evict: true, now: T0 }), [a2.id, a3.id]);
    t.deepEqual((await repo.list({ serverId: 'srv-a', subject: 'alice' }, 0, 10, T0)).sessions.map((s) => s.id), [a4.id]);
    t.deepEqual(await repo.insert(record({ serverId: 'srv-a', subject: 'carol' }), hashOf('carol'), undefined, { max: 1, evict: true, now: T0 }), []);
  });

  it('insert with a refusing limit at the limit throws SessionLimitError and writes nothing', async (t, repo) => {
    const [a1, a2] = [record({ serverId: 'srv-a', subject: 'alice' }), record({ serverId: 'srv-a', subject: 'alice' })];
    await insertAll(repo, [a1, a2]);
    const a3 = record({ serverId: 'srv-a', subject: 'alice' });
    await t.throwsAsync(repo.insert(a3, hashOf(a3.id), 'req-limit', { max: 2, evict: false, now: T0 }), { instanceOf: SessionLimitError });
    t.is(await repo.findById(a3.id), undefined);
    t.is(await repo.findByRequestId('srv-a', 'req-limit'), undefined);
    t.deepEqual(await repo.countSessions(T0), { live: 2, dead: 0 });
    // Once one is no longer live, there is room.
    t.deepEqual(await repo.insert(a3, hashOf(a3.id), undefined, { max: 2, evict: false, now: a1.expireTime }), []);
  });

  it('concurrent inserts with a limit never leave more live sessions than the limit, under either policy', async (t, repo) => {
    for (const evict of [true, false]) {
      const subject = evict ? 'racer-evict' : 'racer-refuse';
      const results = await Promise.allSettled(Array.from({ length: 12 }, () => {
        const s = record({ serverId: 'srv-a', subject });
        return repo.insert(s, hashOf(s.id), undefined, { max: 3, evict, now: T0 });
      }));
      const page = await repo.list({ serverId: 'srv-a', subject }, 0, 100, T0);
      t.is(page.sessions.length, 3, `${subject}: exactly the limit live`);
      if (evict) {
        t.true(results.every((r) => r.status === 'fulfilled'));
        t.is(results.flatMap((r) => (r.status === 'fulfilled' ? r.value : [])).length, 9, 'each create beyond the limit evicted one');
      } else {
        t.is(results.filter((r) => r.status === 'fulfilled').length, 3);
        t.true(results.every((r) => r.status === 'fulfilled' || r.reason instanceof SessionLimitError));
      }
    }
  });

  // ---------------------------------------------------------------- findByRequestId (insert's idempotency key)

  it('insert with a request id makes the session findable by (serverId, requestId) in any state', async (t, repo) => {
    const live = record({ serverId: 'srv-a' });
    const dead = revoked({ serverId: 'srv-a' });
    const plain = record({ serverId: 'srv-a' });
    await repo.insert(live, hashOf(live.id), 'req-1');
    await repo.insert(dead, hashOf(dead.id), 'req-2');
    await repo.insert(plain, hashOf(plain.id));
    t.deepEqual((await repo.findByRequestId('srv-a', 'req-1')), live);
    t.deepEqual((await repo.findByRequestId('srv-a', 'req-2')), dead);
    t.is((await repo.findByRequestId('srv-b', 'req-1')), undefined, 'keys are per server');
    t.is((await repo.findByRequestId('srv-a', 'req-3')), undefined);
    t.is((await repo.findByRequestId('srv-a', '')), undefined, 'a session inserted without a key has none');
    t.deepEqual((await repo.findById(live.id)), live, 'the key is not part of the record');
  });

  it('the same request id is allowed on another server, refused on the same one', async (t, repo) => {
    const a = record({ serverId: 'srv-a' });
    const b = record({ serverId: 'srv-b' });
    await repo.insert(a, hashOf(a.id), 'req');
    await repo.insert(b, hashOf(b.id), 'req');
    t.deepEqual((await repo.findByRequestId('srv-a', 'req')), a);
    t.deepEqual((await repo.findByRequestId('srv-b', 'req')), b);
    const clash = record({ serverId: 'srv-a' });
    await expectUnique(t, () => repo.insert(clash, hashOf(clash.id), 'req'));
    t.is((await repo.findById(clash.id)), undefined);
    t.deepEqual((await repo.findByRequestId('srv-a', 'req')), a);
    // Any number of sessions without a key.
    const c = record({ serverId: 'srv-a' });
    const d = record({ serverId: 'srv-a' });
    await repo.insert(c, hashOf(c.id));
    await repo.insert(d, hashOf(d.id));
    t.deepEqual((await repo.countSessions(T0)), { live: 4, dead: 0 });
  });

  it('findByRequestId gives undefined once the session is purged', async (t, repo) => {
    const s = expired();
    await repo.insert(s, hashOf(s.id), 'req-gone');
    t.deepEqual((await repo.findByRequestId(s.serverId, 'req-gone')), s);
    t.is((await repo.purgeBatch(T0, 10)), 1);
    t.is((await repo.findByRequestId(s.serverId, 'req-gone')), undefined);
  });

  // ---------------------------------------------------------------- modify

  it('modify passes the stored session to change, stores what it returns and returns it', async (t, repo) => {
    const s = record();
    await repo.insert(s, hashOf('m'));
    let seen: SessionRecord | undefined;
    const next: SessionRecord = {
      ...s,
      attributes: { role: 'viewer', added: 'yes' },
      updateTime: T0,
      idleExpireTime: T0 + 45 * MINUTE,
      lastActiveTime: T0,
      tokenRotateTime: T0 + 1,
      version: s.version + 1,
    };
    const stored = (await repo.modify(s.id, (current) => {
      seen = current;
      return { next };
    }));
    t.deepEqual(seen, s);
    t.deepEqual(stored, next);
    t.deepEqual((await repo.findById(s.id)), next);
    t.deepEqual((await repo.findByTokenHash(hashOf('m'))), next, 'the token hash is kept when none is given');
  });

  it('modify returning null keeps the row and returns it as stored', async (t, repo) => {
    const s = record();
    const other = record();
    await insertAll(repo, [s, other]);
    let calls = 0;
    const result = (await repo.modify(s.id, () => {
      calls++;
      return null;
    }));
    t.is(calls, 1);
    t.deepEqual(result, s);
    t.deepEqual((await repo.findById(s.id)), s);
    t.deepEqual((await repo.findById(other.id)), other);
  });

  it('modify rethrows an error from change unchanged and writes nothing', async (t, repo) => {
    const s = record();
    await repo.insert(s, hashOf(s.id));
    const boom = new FailedPreconditionError('stale etag');
    const err = await t.throwsAsync(() =>
      repo.modify(s.id, () => {
        throw boom;
      }),
    );
    t.is(err, boom, 'the domain error passes through as the same object');
    t.true(err instanceof DomainError);
    t.deepEqual((await repo.findById(s.id)), s);
  });

  it('modify with a new token hash makes the old hash unfindable', async (t, repo) => {
    const s = record();
    await repo.insert(s, hashOf('old'));
    const next = { ...s, tokenRotateTime: T0 };
    const stored = (await repo.modify(s.id, () => ({ next, tokenHash: hashOf('new') })));
    t.deepEqual(stored, next);
    t.is((await repo.findByTokenHash(hashOf('old'))), undefined);
    t.deepEqual((await repo.findByTokenHash(hashOf('new'))), next);
    t.deepEqual((await repo.findById(s.id)), next);
  });

  it('modify of a missing id returns undefined without calling change', async (t, repo) => {
    await repo.insert(record(), hashOf('x'));
    let called = false;
    const result = (await repo.modify('no-such-id', (current) => {
      called = true;
      return { next: current };
    }));
    t.is(result, undefined);
    t.false(called);
  });

  it('modify to a token hash another session holds throws UniqueViolationError and writes nothing', async (t, repo) => {
    const a = record();
    const b = record();
    await repo.insert(a, hashOf('a'));
    await repo.insert(b, hashOf('b'));
    await expectUnique(t, () => repo.modify(b.id, (current) => ({ next: { ...current, attributes: { changed: 'yes' }, version: 42 }, tokenHash: hashOf('a') })));
    t.deepEqual((await repo.findById(b.id)), b, 'neither the fields nor the hash changed');
    t.deepEqual((await repo.findByTokenHash(hashOf('b'))), b);
    t.deepEqual((await repo.findByTokenHash(hashOf('a'))), a);
  });

  it('modify moves a session between live and dead for list, count and purge', async (t, repo) => {
    const s = record({ idleExpireTime: T0 + MINUTE });
    const r = record();
    await insertAll(repo, [s, r]);
    const later = T0 + 2 * MINUTE;
    t.deepEqual((await repo.list(ANY, 0, 10, later)).sessions.map((x) => x.id), [r.id], 's has idled out by then');
    // A touch extends the idle expiry: s is live again at `later`.
    await repo.modify(s.id, (c) => ({ next: { ...c, idleExpireTime: T0 + 10 * MINUTE, lastActiveTime: T0 } }));
    t.deepEqual((await repo.list(ANY, 0, 10, later)).sessions.map((x) => x.id), [s.id, r.id]);
    t.deepEqual((await repo.countSessions(later)), { live: 2, dead: 0 });
    t.is((await repo.purgeBatch(later, 10)), 0);
    // Revoking r through modify takes it out at once.
    await repo.modify(r.id, (c) => ({ next: { ...c, revokeTime: T0 } }));
    t.deepEqual((await repo.list(ANY, 0, 10, T0)).sessions.map((x) => x.id), [s.id]);
    t.deepEqual((await repo.countSessions(T0)), { live: 1, dead: 1 });
    t.is((await repo.purgeBatch(T0, 10)), 1);
    t.is((await repo.findById(r.id)), undefined);
  });

  // ---------------------------------------------------------------- revokeMatching

  /** Two servers x two subjects, live, plus dead sessions of srv-a/alice that must not be counted. */
  async function revokeFixture(repo: SessionRepository) {
    const live = {
      aAlice: record({ serverId: 'srv-a', subject: 'alice' }),
      aBob: record({ serverId: 'srv-a', subject: 'bob' }),
      bAlice: record({ serverId: 'srv-b', subject: 'alice' }),
      bBob: record({ serverId: 'srv-b', subject: 'bob' }),
    };
    const dead = {
      expired: expired({ serverId: 'srv-a', subject: 'alice' }),
      idle: idle({ serverId: 'srv-a', subject: 'alice' }),
      revoked: revoked({ serverId: 'srv-a', subject: 'alice', revokeTime: T0 - 5 * MINUTE }),
      // Dies exactly at T0: not live at T0.
      endsNow: record({ serverId: 'srv-a', subject: 'alice', expireTime: T0 }),
    };
    await insertAll(repo, [...Object.values(live), ...Object.values(dead)]);
    return { live, dead };
  }

  async function checkRevoked(t: ExecutionContext, repo: SessionRepository, fx: Awaited<ReturnType<typeof revokeFixture>>, now: number, hit: (keyof typeof fx.live)[]) {
    for (const [key, s] of Object.entries(fx.live) as [keyof typeof fx.live, SessionRecord][]) {
      const after = (await repo.findById(s.id));
      if (hit.includes(key)) t.deepEqual(after, { ...s, revokeTime: now }, `${key} is revoked at now`);
      else t.deepEqual(after, s, `${key} is untouched`);
    }
    for (const [key, s] of Object.entries(fx.dead)) t.deepEqual((await repo.findById(s.id)), s, `dead ${key} is untouched`);
  }

  it('revokeMatching by server only revokes that server\'s live sessions', async (t, repo) => {
    const fx = await revokeFixture(repo);
    t.is((await repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0, 1000)), 2);
    await checkRevoked(t, repo, fx, T0, ['aAlice', 'aBob']);
    t.is((await repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0 + 1, 1000)), 0, 'revoked sessions are not counted again');
    await checkRevoked(t, repo, fx, T0, ['aAlice', 'aBob']);
  });

  it('revokeMatching by subject only revokes that subject on every server', async (t, repo) => {
    const fx = await revokeFixture(repo);
    t.is((await repo.revokeMatching({ serverId: '', subject: 'alice' }, T0, 1000)), 2);
    await checkRevoked(t, repo, fx, T0, ['aAlice', 'bAlice']);
  });

  it('revokeMatching by server and subject revokes only their intersection', async (t, repo) => {
    const fx = await revokeFixture(repo);
    t.is((await repo.revokeMatching({ serverId: 'srv-b', subject: 'bob' }, T0, 1000)), 1);
    await checkRevoked(t, repo, fx, T0, ['bBob']);
    t.deepEqual((await repo.list(ANY, 0, 100, T0)).sessions.map((s) => s.id), [fx.live.aAlice.id, fx.live.aBob.id, fx.live.bAlice.id]);
    t.deepEqual((await repo.countSessions(T0)), { live: 3, dead: 5 });
  });

  it('revokeMatching with exceptId leaves that one session and revokes the rest of the match', async (t, repo) => {
    const fx = await revokeFixture(repo);
    t.is(await repo.revokeMatching({ serverId: 'srv-a', subject: '', exceptId: fx.live.aBob.id }, T0, 1000), 1);
    await checkRevoked(t, repo, fx, T0, ['aAlice']);
    t.is(await repo.revokeMatching({ serverId: 'srv-b', subject: '', exceptId: 'no-such-id' }, T0, 1000), 2);
    await checkRevoked(t, repo, fx, T0, ['aAlice', 'bAlice', 'bBob']);
  });

  it('revokeMatching that matches nothing live returns 0 and changes nothing', async (t, repo) => {
    const fx = await revokeFixture(repo);
    t.is((await repo.revokeMatching({ serverId: 'srv-c', subject: '' }, T0, 1000)), 0);
    t.is((await repo.revokeMatching({ serverId: '', subject: 'carol' }, T0, 1000)), 0);
    t.is((await repo.revokeMatching({ serverId: 'srv-b', subject: 'carol' }, T0, 1000)), 0);
    await checkRevoked(t, repo, fx, T0, []);
    // At a later time everything of srv-a has died on its own (the fixture's live ones expire in 24 h).
    t.is((await repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0 + 25 * HOUR, 1000)), 0);
    await checkRevoked(t, repo, fx, T0, []);
  });

  // ---------------------------------------------------------------- list

  it('list returns live sessions in insertion order across pages, then no cursor', async (t, repo) => {
    // Ids in reverse alphabetical order: insertion order must win over id order.
    const all = Array.from({ length: 7 }, (_, i) => record({ id: `z-${String.fromCharCode(122 - i)}` }));
    await insertAll(repo, all);
    const { ids, pageSizes } = await listAll(t, repo, ANY, 3, T0);
    t.deepEqual(ids, all.map((s) => s.id));
    t.deepEqual(pageSizes, [3, 3, 1]);
  });

  it('list ends without a cursor when the last page is exactly full', async (t, repo) => {
    const all = Array.from({ length: 6 }, () => record());
    await insertAll(repo, all);
    const first = (await repo.list(ANY, 0, 3, T0));
    t.not(first.nextCursor, undefined);
    const second = (await repo.list(ANY, first.nextCursor!, 3, T0));
    t.deepEqual(second.sessions.map((s) => s.id), all.slice(3).map((s) => s.id));
    t.is(second.nextCursor, undefined, 'no empty extra page');
    const single = (await repo.list(ANY, 0, 6, T0));
    t.is(single.sessions.length, 6);
    t.is(single.nextCursor, undefined);
  });

  it('list of an empty repository is one empty page', async (t, repo) => {
    t.deepEqual((await repo.list(ANY, 0, 10, T0)), { sessions: [], cursors: [], nextCursor: undefined, sequence: 0 });
    t.deepEqual((await repo.list({ serverId: 'srv-a', subject: 'alice' }, 0, 10, T0)), { sessions: [], cursors: [], nextCursor: undefined, sequence: 0 });
  });

  it('list returns full records', async (t, repo) => {
    const s = record({ attributes: { a: '1', b: '' } });
    await repo.insert(s, hashOf(s.id));
    t.deepEqual((await repo.list(ANY, 0, 10, T0)).sessions, [s]);
  });

  it('list applies each filter shape: none, server, subject, both', async (t, repo) => {
    const shapes: [string, string][] = [['srv-a', 'alice'], ['srv-a', 'bob'], ['srv-b', 'alice'], ['srv-b', 'bob'], ['srv-a', ''], ['srv-b', 'alice']];
    const all = shapes.map(([serverId, subject]) => record({ serverId, subject }));
    await insertAll(repo, all);
    const expect = (filter: SessionFilter) =>
      all.filter((s) => (filter.serverId === '' || s.serverId === filter.serverId) && (filter.subject === '' || s.subject === filter.subject)).map((s) => s.id);
    const filters: SessionFilter[] = [
      ANY,
      { serverId: 'srv-a', subject: '' },
      { serverId: 'srv-b', subject: '' },
      { serverId: '', subject: 'alice' },
      { serverId: '', subject: 'bob' },
      { serverId: 'srv-b', subject: 'alice' },
      { serverId: 'srv-a', subject: 'bob' },
      { serverId: 'srv-c', subject: '' },
      { serverId: 'srv-a', subject: 'carol' },
    ];
    for (const filter of filters) {
      for (const limit of [1, 2, 100]) {
        t.deepEqual((await listAll(t, repo, filter, limit, T0)).ids, expect(filter), `${JSON.stringify(filter)} limit ${limit}`);
      }
    }
    // Sanity of the fixture: the filters really select different sets.
    t.is(expect({ serverId: 'srv-b', subject: 'alice' }).length, 2);
    t.is(expect({ serverId: '', subject: 'alice' }).length, 3);
  });

  it('list returns only live sessions, also when dead ones sit between pages', async (t, repo) => {
    const order = [record(), expired(), record(), idle(), revoked(), record({ expireTime: T0 }), record(), expired()];
    await insertAll(repo, order);
    const live = order.filter((s) => sessionState(s, T0) === 'live').map((s) => s.id);
    t.is(live.length, 3);
    for (const filter of [ANY, { serverId: 'srv-a', subject: '' }, { serverId: '', subject: 'alice' }, { serverId: 'srv-a', subject: 'alice' }]) {
      for (const limit of [1, 2, 3, 4, 10]) {
        t.deepEqual((await listAll(t, repo, filter, limit, T0)).ids, live, `${JSON.stringify(filter)} limit ${limit}`);
      }
    }
    // The last live session is the 7th row; a page of 3 must not hand out a cursor for the dead 8th.
    t.is((await repo.list(ANY, 0, 3, T0)).nextCursor, undefined);
    t.not((await repo.list(ANY, 0, 2, T0)).nextCursor, undefined);
  });

  it('list judges liveness at the given now', async (t, repo) => {
    const short = record({ idleExpireTime: T0 + MINUTE });
    const long = record();
    await insertAll(repo, [short, long]);
    t.deepEqual((await repo.list(ANY, 0, 10, T0 + MINUTE - 1)).sessions.map((s) => s.id), [short.id, long.id]);
    t.deepEqual((await repo.list(ANY, 0, 10, T0 + MINUTE)).sessions.map((s) => s.id), [long.id]);
    t.deepEqual((await repo.list(ANY, 0, 10, T0 + 25 * HOUR)).sessions, []);
  });

  it('a cursor keeps its place while sessions are revoked and inserted between pages', async (t, repo) => {
    const all = Array.from({ length: 6 }, () => record());
    await insertAll(repo, all);
    const first = (await repo.list(ANY, 0, 2, T0));
    t.deepEqual(first.sessions.map((s) => s.id), [all[0]!.id, all[1]!.id]);
    await repo.modify(all[2]!.id, (c) => ({ next: { ...c, revokeTime: T0 } }));
    const late = record();
    await repo.insert(late, hashOf(late.id));
    const rest: string[] = [];
    let cursor = first.nextCursor;
    while (cursor !== undefined) {
      const page = (await repo.list(ANY, cursor, 2, T0));
      rest.push(...page.sessions.map((s) => s.id));
      cursor = page.nextCursor;
    }
    t.deepEqual(rest, [all[3]!.id, all[4]!.id, all[5]!.id, late.id], 'no repeats, no revoked row, new rows at the end');
  });

  // ---------------------------------------------------------------- purgeBatch

  it('purgeBatch deletes at most limit dead sessions, oldest deadline first, never live ones', async (t, repo) => {
    // Deadlines (deadAt) deliberately not in insertion order.
    const dead = [
      expired({ expireTime: T0 - 3 * MINUTE, idleExpireTime: T0 - 3 * MINUTE }), // deadline T0-3
      revoked({ revokeTime: T0 - 5 * MINUTE }), // T0-5
      idle({ idleExpireTime: T0 - 1 * MINUTE }), // T0-1
      record({ expireTime: T0 }), // T0: dead at exactly now
      expired({ expireTime: T0 - 4 * MINUTE, idleExpireTime: T0 - 2 * MINUTE }), // T0-4
    ];
    const live = [record(), record({ idleExpireTime: T0 + 1 })];
    await insertAll(repo, [live[0]!, ...dead, live[1]!]);
    const byDeadline = [...dead].sort((a, b) => deadAt(a) - deadAt(b)).map((s) => s.id);
    t.is(new Set(dead.map(deadAt)).size, dead.length, 'fixture deadlines are distinct');

    const remaining = async () => {
      const found = await Promise.all([...dead, ...live].map(async (s) => ((await repo.findById(s.id)) !== undefined ? s.id : undefined)));
      return found.filter((id): id is string => id !== undefined);
    };
    t.is((await repo.purgeBatch(T0, 2)), 2);
    t.deepEqual((await remaining()).sort(), [...byDeadline.slice(2), ...live.map((s) => s.id)].sort(), 'the two oldest deadlines went first');
    t.is((await repo.purgeBatch(T0, 2)), 2);
    t.deepEqual((await remaining()).sort(), [byDeadline[4]!, ...live.map((s) => s.id)].sort());
    t.is((await repo.purgeBatch(T0, 2)), 1, 'fewer than limit: nothing more to purge');
    t.is((await repo.purgeBatch(T0, 2)), 0);
    t.deepEqual((await remaining()).sort(), live.map((s) => s.id).sort());
    for (const s of dead) t.is((await repo.findByTokenHash(hashOf(s.id))), undefined, 'a purged session\'s hash is gone too');
    for (const s of live) t.deepEqual((await repo.findById(s.id)), s);
  });

  it('purgeBatch judges deadness at the given now', async (t, repo) => {
    const a = record({ idleExpireTime: T0 + MINUTE });
    const b = record({ idleExpireTime: T0 + 2 * MINUTE });
    await insertAll(repo, [a, b]);
    t.is((await repo.purgeBatch(T0 + MINUTE - 1, 10)), 0);
    t.is((await repo.purgeBatch(T0 + MINUTE, 10)), 1);
    t.is((await repo.findById(a.id)), undefined);
    t.deepEqual((await repo.findById(b.id)), b);
  });

  // ---------------------------------------------------------------- countSessions

  it('countSessions counts live and dead-but-not-purged sessions at now', async (t, repo) => {
    t.deepEqual((await repo.countSessions(T0)), { live: 0, dead: 0 });
    await insertAll(repo, [record(), record({ idleExpireTime: T0 + MINUTE }), expired(), idle(), revoked(), record({ expireTime: T0 })]);
    t.deepEqual((await repo.countSessions(T0)), { live: 2, dead: 4 });
    t.deepEqual((await repo.countSessions(T0 + MINUTE)), { live: 1, dead: 5 });
    t.deepEqual((await repo.countSessions(T0 + 25 * HOUR)), { live: 0, dead: 6 });
    t.is((await repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0, 1000)), 2);
    t.deepEqual((await repo.countSessions(T0)), { live: 0, dead: 6 });
    t.is((await repo.purgeBatch(T0, 100)), 6);
    t.deepEqual((await repo.countSessions(T0)), { live: 0, dead: 0 });
  });

  // ---------------------------------------------------------------- snapshot

  it('snapshot runs the reads and returns their value; a throw leaves the repository usable', async (t, repo) => {
    const [a, b] = [record(), record()];
    await insertAll(repo, [a, b]);
    t.deepEqual(await Promise.all(repo.snapshot(() => [repo.findById(a.id), repo.findByTokenHash(hashOf(b.id)), repo.findById('nope')])), [a, b, undefined]);
    t.throws(() => repo.snapshot(() => {
      void repo.findById(a.id);
      throw new Error('boom');
    }), { message: 'boom' });
    // Writes and nested snapshots work afterwards: nothing was left open.
    const c = record();
    await repo.insert(c, hashOf(c.id));
    t.deepEqual(await repo.snapshot(() => repo.snapshot(() => repo.findById(c.id))), c);
  });
}
