import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { DomainError, FailedPreconditionError, StorageError } from '../../src/domain/errors';
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

function insertAll(repo: SessionRepository, records: SessionRecord[]): void {
  for (const r of records) repo.insert(r, hashOf(r.id));
}

/** Every page of `list`, with the cursors seen, checking that no page exceeds `limit`. */
function listAll(t: ExecutionContext, repo: SessionRepository, filter: SessionFilter, limit: number, now: number) {
  const ids: string[] = [];
  const pageSizes: number[] = [];
  let cursor = 0;
  for (let guard = 0; guard < 1000; guard++) {
    const page = repo.list(filter, cursor, limit, now);
    t.true(page.sessions.length <= limit, `a page holds at most ${limit}`);
    pageSizes.push(page.sessions.length);
    ids.push(...page.sessions.map((s) => s.id));
    if (page.nextCursor === undefined) return { ids, pageSizes };
    t.true(page.sessions.length > 0, 'a page with a next cursor is not empty');
    cursor = page.nextCursor;
  }
  throw new Error('list never reached its last page');
}

function expectUnique(t: ExecutionContext, fn: () => unknown): void {
  const err = t.throws(fn, { instanceOf: StorageError });
  t.is((err as StorageError | undefined)?.sqliteCode, 'SQLITE_CONSTRAINT_UNIQUE');
}

export function repositoryContract(name: string, open: () => OpenedRepository): void {
  const it = (title: string, fn: (t: ExecutionContext, repo: SessionRepository) => void) =>
    test(`${name}: ${title}`, (t) => {
      const opened = open();
      t.teardown(async () => {
        await opened.close();
      });
      fn(t, opened.repo);
    });

  // ---------------------------------------------------------------- insert, findById, findByTokenHash

  it('insert then findById and findByTokenHash return every field as stored', (t, repo) => {
    const s = record({
      attributes: { role: 'admin', empty: '', 'key with spaces': 'value "quoted" \\ back', unicode: 'żółw 🐢', json: '{"a":[1]}' },
      ip: '2001:db8::1',
      userAgent: 'Mozilla/5.0 (X11; Linux x86_64)',
      subject: '',
    });
    repo.insert(s, hashOf('round-trip'));
    const byId = repo.findById(s.id);
    t.deepEqual(byId, s);
    t.is(byId?.revokeTime, null, 'an unrevoked session reads back null, not undefined or 0');
    t.deepEqual(repo.findByTokenHash(hashOf('round-trip')), s);
  });

  it('a session with no attributes and a revoked session round-trip too', (t, repo) => {
    const bare = record({ attributes: {} });
    const gone = revoked({ revokeTime: T0 - 123 });
    insertAll(repo, [bare, gone]);
    t.deepEqual(repo.findById(bare.id)?.attributes, {});
    t.deepEqual(repo.findById(gone.id), gone);
    t.is(repo.findById(gone.id)?.revokeTime, T0 - 123);
  });

  it('lookups of unknown ids and hashes give undefined', (t, repo) => {
    const s = record();
    repo.insert(s, hashOf('known'));
    t.is(repo.findById('no-such-id'), undefined);
    t.is(repo.findById(s.id.toUpperCase()), undefined, 'ids are compared exactly');
    t.is(repo.findByTokenHash(hashOf('unknown')), undefined);
    t.is(repo.findByTokenHash(hashOf('known').subarray(0, 31)), undefined, 'a hash prefix finds nothing');
  });

  it('findById and findByTokenHash return sessions in any state until purged', (t, repo) => {
    const dead = [expired(), idle(), revoked()];
    insertAll(repo, dead);
    for (const s of dead) {
      t.not(sessionState(s, T0), 'live');
      t.deepEqual(repo.findById(s.id), s);
      t.deepEqual(repo.findByTokenHash(hashOf(s.id)), s);
    }
  });

  it('insert with an existing id throws SQLITE_CONSTRAINT_UNIQUE and changes nothing', (t, repo) => {
    const first = record();
    repo.insert(first, hashOf('first'));
    const clash = record({ id: first.id, subject: 'mallory' });
    expectUnique(t, () => repo.insert(clash, hashOf('second')));
    t.deepEqual(repo.findById(first.id), first);
    t.is(repo.findByTokenHash(hashOf('second')), undefined);
    t.deepEqual(repo.countSessions(T0), { live: 1, dead: 0 });
  });

  it('insert with an existing token hash throws SQLITE_CONSTRAINT_UNIQUE and changes nothing', (t, repo) => {
    const first = record();
    repo.insert(first, hashOf('shared'));
    const clash = record();
    expectUnique(t, () => repo.insert(clash, hashOf('shared')));
    t.is(repo.findById(clash.id), undefined);
    t.deepEqual(repo.findByTokenHash(hashOf('shared')), first);
    t.deepEqual(repo.countSessions(T0), { live: 1, dead: 0 });
  });

  // ---------------------------------------------------------------- findByRequestId (insert's idempotency key)

  it('insert with a request id makes the session findable by (serverId, requestId) in any state', (t, repo) => {
    const live = record({ serverId: 'srv-a' });
    const dead = revoked({ serverId: 'srv-a' });
    const plain = record({ serverId: 'srv-a' });
    repo.insert(live, hashOf(live.id), 'req-1');
    repo.insert(dead, hashOf(dead.id), 'req-2');
    repo.insert(plain, hashOf(plain.id));
    t.deepEqual(repo.findByRequestId('srv-a', 'req-1'), live);
    t.deepEqual(repo.findByRequestId('srv-a', 'req-2'), dead);
    t.is(repo.findByRequestId('srv-b', 'req-1'), undefined, 'keys are per server');
    t.is(repo.findByRequestId('srv-a', 'req-3'), undefined);
    t.is(repo.findByRequestId('srv-a', ''), undefined, 'a session inserted without a key has none');
    t.deepEqual(repo.findById(live.id), live, 'the key is not part of the record');
  });

  it('the same request id is allowed on another server, refused on the same one', (t, repo) => {
    const a = record({ serverId: 'srv-a' });
    const b = record({ serverId: 'srv-b' });
    repo.insert(a, hashOf(a.id), 'req');
    repo.insert(b, hashOf(b.id), 'req');
    t.deepEqual(repo.findByRequestId('srv-a', 'req'), a);
    t.deepEqual(repo.findByRequestId('srv-b', 'req'), b);
    const clash = record({ serverId: 'srv-a' });
    expectUnique(t, () => repo.insert(clash, hashOf(clash.id), 'req'));
    t.is(repo.findById(clash.id), undefined);
    t.deepEqual(repo.findByRequestId('srv-a', 'req'), a);
    // Any number of sessions without a key.
    const c = record({ serverId: 'srv-a' });
    const d = record({ serverId: 'srv-a' });
    repo.insert(c, hashOf(c.id));
    repo.insert(d, hashOf(d.id));
    t.deepEqual(repo.countSessions(T0), { live: 4, dead: 0 });
  });

  it('findByRequestId gives undefined once the session is purged', (t, repo) => {
    const s = expired();
    repo.insert(s, hashOf(s.id), 'req-gone');
    t.deepEqual(repo.findByRequestId(s.serverId, 'req-gone'), s);
    t.is(repo.purgeBatch(T0, 10), 1);
    t.is(repo.findByRequestId(s.serverId, 'req-gone'), undefined);
  });

  // ---------------------------------------------------------------- modify

  it('modify passes the stored session to change, stores what it returns and returns it', (t, repo) => {
    const s = record();
    repo.insert(s, hashOf('m'));
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
    const stored = repo.modify(s.id, (current) => {
      seen = current;
      return { next };
    });
    t.deepEqual(seen, s);
    t.deepEqual(stored, next);
    t.deepEqual(repo.findById(s.id), next);
    t.deepEqual(repo.findByTokenHash(hashOf('m')), next, 'the token hash is kept when none is given');
  });

  it('modify returning null keeps the row and returns it as stored', (t, repo) => {
    const s = record();
    const other = record();
    insertAll(repo, [s, other]);
    let calls = 0;
    const result = repo.modify(s.id, () => {
      calls++;
      return null;
    });
    t.is(calls, 1);
    t.deepEqual(result, s);
    t.deepEqual(repo.findById(s.id), s);
    t.deepEqual(repo.findById(other.id), other);
  });

  it('modify rethrows an error from change unchanged and writes nothing', (t, repo) => {
    const s = record();
    repo.insert(s, hashOf(s.id));
    const boom = new FailedPreconditionError('stale etag');
    const err = t.throws(() =>
      repo.modify(s.id, () => {
        throw boom;
      }),
    );
    t.is(err, boom, 'the domain error passes through as the same object');
    t.true(err instanceof DomainError);
    t.deepEqual(repo.findById(s.id), s);
  });

  it('modify with a new token hash makes the old hash unfindable', (t, repo) => {
    const s = record();
    repo.insert(s, hashOf('old'));
    const next = { ...s, tokenRotateTime: T0 };
    const stored = repo.modify(s.id, () => ({ next, tokenHash: hashOf('new') }));
    t.deepEqual(stored, next);
    t.is(repo.findByTokenHash(hashOf('old')), undefined);
    t.deepEqual(repo.findByTokenHash(hashOf('new')), next);
    t.deepEqual(repo.findById(s.id), next);
  });

  it('modify of a missing id returns undefined without calling change', (t, repo) => {
    repo.insert(record(), hashOf('x'));
    let called = false;
    const result = repo.modify('no-such-id', (current) => {
      called = true;
      return { next: current };
    });
    t.is(result, undefined);
    t.false(called);
  });

  it('modify to a token hash another session holds throws SQLITE_CONSTRAINT_UNIQUE and writes nothing', (t, repo) => {
    const a = record();
    const b = record();
    repo.insert(a, hashOf('a'));
    repo.insert(b, hashOf('b'));
    expectUnique(t, () => repo.modify(b.id, (current) => ({ next: { ...current, attributes: { changed: 'yes' }, version: 42 }, tokenHash: hashOf('a') })));
    t.deepEqual(repo.findById(b.id), b, 'neither the fields nor the hash changed');
    t.deepEqual(repo.findByTokenHash(hashOf('b')), b);
    t.deepEqual(repo.findByTokenHash(hashOf('a')), a);
  });

  it('modify moves a session between live and dead for list, count and purge', (t, repo) => {
    const s = record({ idleExpireTime: T0 + MINUTE });
    const r = record();
    insertAll(repo, [s, r]);
    const later = T0 + 2 * MINUTE;
    t.deepEqual(repo.list(ANY, 0, 10, later).sessions.map((x) => x.id), [r.id], 's has idled out by then');
    // A touch extends the idle expiry: s is live again at `later`.
    repo.modify(s.id, (c) => ({ next: { ...c, idleExpireTime: T0 + 10 * MINUTE, lastActiveTime: T0 } }));
    t.deepEqual(repo.list(ANY, 0, 10, later).sessions.map((x) => x.id), [s.id, r.id]);
    t.deepEqual(repo.countSessions(later), { live: 2, dead: 0 });
    t.is(repo.purgeBatch(later, 10), 0);
    // Revoking r through modify takes it out at once.
    repo.modify(r.id, (c) => ({ next: { ...c, revokeTime: T0 } }));
    t.deepEqual(repo.list(ANY, 0, 10, T0).sessions.map((x) => x.id), [s.id]);
    t.deepEqual(repo.countSessions(T0), { live: 1, dead: 1 });
    t.is(repo.purgeBatch(T0, 10), 1);
    t.is(repo.findById(r.id), undefined);
  });

  // ---------------------------------------------------------------- revokeMatching

  /** Two servers x two subjects, live, plus dead sessions of srv-a/alice that must not be counted. */
  function revokeFixture(repo: SessionRepository) {
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
    insertAll(repo, [...Object.values(live), ...Object.values(dead)]);
    return { live, dead };
  }

  function checkRevoked(t: ExecutionContext, repo: SessionRepository, fx: ReturnType<typeof revokeFixture>, now: number, hit: (keyof typeof fx.live)[]) {
    for (const [key, s] of Object.entries(fx.live) as [keyof typeof fx.live, SessionRecord][]) {
      const after = repo.findById(s.id);
      if (hit.includes(key)) t.deepEqual(after, { ...s, revokeTime: now }, `${key} is revoked at now`);
      else t.deepEqual(after, s, `${key} is untouched`);
    }
    for (const [key, s] of Object.entries(fx.dead)) t.deepEqual(repo.findById(s.id), s, `dead ${key} is untouched`);
  }

  it('revokeMatching by server only revokes that server\'s live sessions', (t, repo) => {
    const fx = revokeFixture(repo);
    t.is(repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0, 1000), 2);
    checkRevoked(t, repo, fx, T0, ['aAlice', 'aBob']);
    t.is(repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0 + 1, 1000), 0, 'revoked sessions are not counted again');
    checkRevoked(t, repo, fx, T0, ['aAlice', 'aBob']);
  });

  it('revokeMatching by subject only revokes that subject on every server', (t, repo) => {
    const fx = revokeFixture(repo);
    t.is(repo.revokeMatching({ serverId: '', subject: 'alice' }, T0, 1000), 2);
    checkRevoked(t, repo, fx, T0, ['aAlice', 'bAlice']);
  });

  it('revokeMatching by server and subject revokes only their intersection', (t, repo) => {
    const fx = revokeFixture(repo);
    t.is(repo.revokeMatching({ serverId: 'srv-b', subject: 'bob' }, T0, 1000), 1);
    checkRevoked(t, repo, fx, T0, ['bBob']);
    t.deepEqual(repo.list(ANY, 0, 100, T0).sessions.map((s) => s.id), [fx.live.aAlice.id, fx.live.aBob.id, fx.live.bAlice.id]);
    t.deepEqual(repo.countSessions(T0), { live: 3, dead: 5 });
  });

  it('revokeMatching that matches nothing live returns 0 and changes nothing', (t, repo) => {
    const fx = revokeFixture(repo);
    t.is(repo.revokeMatching({ serverId: 'srv-c', subject: '' }, T0, 1000), 0);
    t.is(repo.revokeMatching({ serverId: '', subject: 'carol' }, T0, 1000), 0);
    t.is(repo.revokeMatching({ serverId: 'srv-b', subject: 'carol' }, T0, 1000), 0);
    checkRevoked(t, repo, fx, T0, []);
    // At a later time everything of srv-a has died on its own (the fixture's live ones expire in 24 h).
    t.is(repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0 + 25 * HOUR, 1000), 0);
    checkRevoked(t, repo, fx, T0, []);
  });

  // ---------------------------------------------------------------- list

  it('list returns live sessions in insertion order across pages, then no cursor', (t, repo) => {
    // Ids in reverse alphabetical order: insertion order must win over id order.
    const all = Array.from({ length: 7 }, (_, i) => record({ id: `z-${String.fromCharCode(122 - i)}` }));
    insertAll(repo, all);
    const { ids, pageSizes } = listAll(t, repo, ANY, 3, T0);
    t.deepEqual(ids, all.map((s) => s.id));
    t.deepEqual(pageSizes, [3, 3, 1]);
  });

  it('list ends without a cursor when the last page is exactly full', (t, repo) => {
    const all = Array.from({ length: 6 }, () => record());
    insertAll(repo, all);
    const first = repo.list(ANY, 0, 3, T0);
    t.not(first.nextCursor, undefined);
    const second = repo.list(ANY, first.nextCursor!, 3, T0);
    t.deepEqual(second.sessions.map((s) => s.id), all.slice(3).map((s) => s.id));
    t.is(second.nextCursor, undefined, 'no empty extra page');
    const single = repo.list(ANY, 0, 6, T0);
    t.is(single.sessions.length, 6);
    t.is(single.nextCursor, undefined);
  });

  it('list of an empty repository is one empty page', (t, repo) => {
    t.deepEqual(repo.list(ANY, 0, 10, T0), { sessions: [], cursors: [], nextCursor: undefined });
    t.deepEqual(repo.list({ serverId: 'srv-a', subject: 'alice' }, 0, 10, T0), { sessions: [], cursors: [], nextCursor: undefined });
  });

  it('list returns full records', (t, repo) => {
    const s = record({ attributes: { a: '1', b: '' } });
    repo.insert(s, hashOf(s.id));
    t.deepEqual(repo.list(ANY, 0, 10, T0).sessions, [s]);
  });

  it('list applies each filter shape: none, server, subject, both', (t, repo) => {
    const shapes: [string, string][] = [['srv-a', 'alice'], ['srv-a', 'bob'], ['srv-b', 'alice'], ['srv-b', 'bob'], ['srv-a', ''], ['srv-b', 'alice']];
    const all = shapes.map(([serverId, subject]) => record({ serverId, subject }));
    insertAll(repo, all);
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
        t.deepEqual(listAll(t, repo, filter, limit, T0).ids, expect(filter), `${JSON.stringify(filter)} limit ${limit}`);
      }
    }
    // Sanity of the fixture: the filters really select different sets.
    t.is(expect({ serverId: 'srv-b', subject: 'alice' }).length, 2);
    t.is(expect({ serverId: '', subject: 'alice' }).length, 3);
  });

  it('list returns only live sessions, also when dead ones sit between pages', (t, repo) => {
    const order = [record(), expired(), record(), idle(), revoked(), record({ expireTime: T0 }), record(), expired()];
    insertAll(repo, order);
    const live = order.filter((s) => sessionState(s, T0) === 'live').map((s) => s.id);
    t.is(live.length, 3);
    for (const filter of [ANY, { serverId: 'srv-a', subject: '' }, { serverId: '', subject: 'alice' }, { serverId: 'srv-a', subject: 'alice' }]) {
      for (const limit of [1, 2, 3, 4, 10]) {
        t.deepEqual(listAll(t, repo, filter, limit, T0).ids, live, `${JSON.stringify(filter)} limit ${limit}`);
      }
    }
    // The last live session is the 7th row; a page of 3 must not hand out a cursor for the dead 8th.
    t.is(repo.list(ANY, 0, 3, T0).nextCursor, undefined);
    t.not(repo.list(ANY, 0, 2, T0).nextCursor, undefined);
  });

  it('list judges liveness at the given now', (t, repo) => {
    const short = record({ idleExpireTime: T0 + MINUTE });
    const long = record();
    insertAll(repo, [short, long]);
    t.deepEqual(repo.list(ANY, 0, 10, T0 + MINUTE - 1).sessions.map((s) => s.id), [short.id, long.id]);
    t.deepEqual(repo.list(ANY, 0, 10, T0 + MINUTE).sessions.map((s) => s.id), [long.id]);
    t.deepEqual(repo.list(ANY, 0, 10, T0 + 25 * HOUR).sessions, []);
  });

  it('a cursor keeps its place while sessions are revoked and inserted between pages', (t, repo) => {
    const all = Array.from({ length: 6 }, () => record());
    insertAll(repo, all);
    const first = repo.list(ANY, 0, 2, T0);
    t.deepEqual(first.sessions.map((s) => s.id), [all[0]!.id, all[1]!.id]);
    repo.modify(all[2]!.id, (c) => ({ next: { ...c, revokeTime: T0 } }));
    const late = record();
    repo.insert(late, hashOf(late.id));
    const rest: string[] = [];
    let cursor = first.nextCursor;
    while (cursor !== undefined) {
      const page = repo.list(ANY, cursor, 2, T0);
      rest.push(...page.sessions.map((s) => s.id));
      cursor = page.nextCursor;
    }
    t.deepEqual(rest, [all[3]!.id, all[4]!.id, all[5]!.id, late.id], 'no repeats, no revoked row, new rows at the end');
  });

  // ---------------------------------------------------------------- purgeBatch

  it('purgeBatch deletes at most limit dead sessions, oldest deadline first, never live ones', (t, repo) => {
    // Deadlines (deadAt) deliberately not in insertion order.
    const dead = [
      expired({ expireTime: T0 - 3 * MINUTE, idleExpireTime: T0 - 3 * MINUTE }), // deadline T0-3
      revoked({ revokeTime: T0 - 5 * MINUTE }), // T0-5
      idle({ idleExpireTime: T0 - 1 * MINUTE }), // T0-1
      record({ expireTime: T0 }), // T0: dead at exactly now
      expired({ expireTime: T0 - 4 * MINUTE, idleExpireTime: T0 - 2 * MINUTE }), // T0-4
    ];
    const live = [record(), record({ idleExpireTime: T0 + 1 })];
    insertAll(repo, [live[0]!, ...dead, live[1]!]);
    const byDeadline = [...dead].sort((a, b) => deadAt(a) - deadAt(b)).map((s) => s.id);
    t.is(new Set(dead.map(deadAt)).size, dead.length, 'fixture deadlines are distinct');

    const remaining = () => [...dead, ...live].filter((s) => repo.findById(s.id) !== undefined).map((s) => s.id);
    t.is(repo.purgeBatch(T0, 2), 2);
    t.deepEqual(remaining().sort(), [...byDeadline.slice(2), ...live.map((s) => s.id)].sort(), 'the two oldest deadlines went first');
    t.is(repo.purgeBatch(T0, 2), 2);
    t.deepEqual(remaining().sort(), [byDeadline[4]!, ...live.map((s) => s.id)].sort());
    t.is(repo.purgeBatch(T0, 2), 1, 'fewer than limit: nothing more to purge');
    t.is(repo.purgeBatch(T0, 2), 0);
    t.deepEqual(remaining().sort(), live.map((s) => s.id).sort());
    for (const s of dead) t.is(repo.findByTokenHash(hashOf(s.id)), undefined, 'a purged session\'s hash is gone too');
    for (const s of live) t.deepEqual(repo.findById(s.id), s);
  });

  it('purgeBatch judges deadness at the given now', (t, repo) => {
    const a = record({ idleExpireTime: T0 + MINUTE });
    const b = record({ idleExpireTime: T0 + 2 * MINUTE });
    insertAll(repo, [a, b]);
    t.is(repo.purgeBatch(T0 + MINUTE - 1, 10), 0);
    t.is(repo.purgeBatch(T0 + MINUTE, 10), 1);
    t.is(repo.findById(a.id), undefined);
    t.deepEqual(repo.findById(b.id), b);
  });

  // ---------------------------------------------------------------- countSessions

  it('countSessions counts live and dead-but-not-purged sessions at now', (t, repo) => {
    t.deepEqual(repo.countSessions(T0), { live: 0, dead: 0 });
    insertAll(repo, [record(), record({ idleExpireTime: T0 + MINUTE }), expired(), idle(), revoked(), record({ expireTime: T0 })]);
    t.deepEqual(repo.countSessions(T0), { live: 2, dead: 4 });
    t.deepEqual(repo.countSessions(T0 + MINUTE), { live: 1, dead: 5 });
    t.deepEqual(repo.countSessions(T0 + 25 * HOUR), { live: 0, dead: 6 });
    t.is(repo.revokeMatching({ serverId: 'srv-a', subject: '' }, T0, 1000), 2);
    t.deepEqual(repo.countSessions(T0), { live: 0, dead: 6 });
    t.is(repo.purgeBatch(T0, 100), 6);
    t.deepEqual(repo.countSessions(T0), { live: 0, dead: 0 });
  });

  // ---------------------------------------------------------------- snapshot

  it('snapshot runs the reads and returns their value; a throw leaves the repository usable', (t, repo) => {
    const [a, b] = [record(), record()];
    insertAll(repo, [a, b]);
    t.deepEqual(repo.snapshot(() => [repo.findById(a.id), repo.findByTokenHash(hashOf(b.id)), repo.findById('nope')]), [a, b, undefined]);
    t.throws(() => repo.snapshot(() => {
      repo.findById(a.id);
      throw new Error('boom');
    }), { message: 'boom' });
    // Writes and nested snapshots work afterwards: nothing was left open.
    const c = record();
    repo.insert(c, hashOf(c.id));
    t.deepEqual(repo.snapshot(() => repo.snapshot(() => repo.findById(c.id))), c);
  });
}
