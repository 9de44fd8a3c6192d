import test, { type ExecutionContext } from 'ava';
import { startTestServer, type TestServer } from './helpers/server';
import type { Session } from '../src/client/client';

/*
 * ListSessions paging (AIP-158) end to end: page sizes, filters, and a stable
 * walk while sessions are created, deleted and expire between pages.
 */

const MIN = 60_000;
const HOUR = 60 * MIN;
const dur = (millis: number) => ({ seconds: Math.floor(millis / 1000), nanos: (millis % 1000) * 1e6 });

async function server(t: ExecutionContext): Promise<TestServer> {
  const s = await startTestServer();
  t.teardown(() => s.close());
  return s;
}

/** Creates `n` sessions one after the other (so creation order is known); returns their ids in order. */
async function createMany(s: TestServer, n: number, req: { serverId?: string; subject?: string; ttlMs?: number } = {}): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const c = await s.client.createSession({
      serverId: req.serverId ?? 'web',
      subject: req.subject ?? `user-${i}`,
      ...(req.ttlMs ? { ttl: dur(req.ttlMs) } : {}),
    });
    ids.push(c.session!.id);
  }
  return ids;
}

/** Walks every page, returning the page sizes and every session id in order. */
async function walk(s: TestServer, req: { serverId?: string; subject?: string; pageSize?: number }) {
  const sizes: number[] = [];
  const ids: string[] = [];
  let pageToken = '';
  for (let guard = 0; guard < 10_000; guard++) {
    const page = await s.client.listSessions({ ...req, pageToken });
    sizes.push(page.sessions.length);
    ids.push(...page.sessions.map((x) => x.id));
    pageToken = page.nextPageToken;
    if (pageToken === '') return { sizes, ids };
  }
  throw new Error('pagination did not end');
}

function assertNoDuplicates(t: ExecutionContext, ids: string[]) {
  t.is(new Set(ids).size, ids.length, 'a session appeared twice');
}

test('250 sessions in pages of 100: 100, 100, 50, in creation order, last token empty', async (t) => {
  const s = await server(t);
  const created = await createMany(s, 250);
  const p1 = await s.client.listSessions({ pageSize: 100 });
  t.is(p1.sessions.length, 100);
  t.not(p1.nextPageToken, '');
  const p2 = await s.client.listSessions({ pageSize: 100, pageToken: p1.nextPageToken });
  t.is(p2.sessions.length, 100);
  t.not(p2.nextPageToken, '');
  t.not(p2.nextPageToken, p1.nextPageToken);
  const p3 = await s.client.listSessions({ pageSize: 100, pageToken: p2.nextPageToken });
  t.is(p3.sessions.length, 50);
  t.is(p3.nextPageToken, '', 'the last page must carry no next_page_token');
  const ids = [...p1.sessions, ...p2.sessions, ...p3.sessions].map((x) => x.id);
  assertNoDuplicates(t, ids);
  t.deepEqual(ids, created, 'pages must hold every session once, oldest first');
  // The same token gives the same page again (tokens are cursors, not one-shot).
  const again = await s.client.listSessions({ pageSize: 100, pageToken: p1.nextPageToken });
  t.deepEqual(again.sessions.map((x) => x.id), p2.sessions.map((x) => x.id));
});

test('a page size that divides the total exactly ends with an empty next token, not an empty page', async (t) => {
  const s = await server(t);
  const created = await createMany(s, 20);
  const { sizes, ids } = await walk(s, { pageSize: 10 });
  t.deepEqual(sizes, [10, 10]);
  t.deepEqual(ids, created);
  const one = await walk(s, { pageSize: 1 });
  t.is(one.sizes.length, 20);
  t.true(one.sizes.every((n) => n === 1));
  t.deepEqual(one.ids, created);
});

test('default page size is 100 (page_size unset or 0)', async (t) => {
  const s = await server(t);
  const created = await createMany(s, 150);
  for (const req of [{}, { pageSize: 0 }]) {
    const p1 = await s.client.listSessions(req);
    t.is(p1.sessions.length, 100);
    t.not(p1.nextPageToken, '');
    const p2 = await s.client.listSessions({ ...req, pageToken: p1.nextPageToken });
    t.is(p2.sessions.length, 50);
    t.is(p2.nextPageToken, '');
    t.deepEqual([...p1.sessions, ...p2.sessions].map((x) => x.id), created);
  }
  // page_size may change between pages; only the filters are bound to the token.
  const first = await s.client.listSessions({ pageSize: 30 });
  const rest = await s.client.listSessions({ pageSize: 1000, pageToken: first.nextPageToken });
  t.is(rest.nextPageToken, '');
  t.deepEqual([...first.sessions, ...rest.sessions].map((x) => x.id), created);
});

test('an empty listing is one empty page with no token', async (t) => {
  const s = await server(t);
  const p = await s.client.listSessions({});
  t.deepEqual(p.sessions, []);
  t.is(p.nextPageToken, '');
  const f = await s.client.listSessions({ serverId: 'nobody', subject: 'none' });
  t.deepEqual(f.sessions, []);
  t.is(f.nextPageToken, '');
});

test('filters by server_id, subject, both and none, across pages', async (t) => {
  const s = await server(t);
  const expected = { all: [] as string[], s1: [] as string[], alice: [] as string[], s1alice: [] as string[] };
  // Interleave servers and subjects so that filtered pages skip rows of the others.
  for (let i = 0; i < 60; i++) {
    const serverId = ['s1', 's2', 's3'][i % 3]!;
    const subject = ['alice', 'bob'][Math.floor(i / 3) % 2]!;
    const id = (await s.client.createSession({ serverId, subject })).session!.id;
    expected.all.push(id);
    if (serverId === 's1') expected.s1.push(id);
    if (subject === 'alice') expected.alice.push(id);
    if (serverId === 's1' && subject === 'alice') expected.s1alice.push(id);
  }
  t.is(expected.s1.length, 20);
  t.is(expected.alice.length, 30);
  t.is(expected.s1alice.length, 10);

  const check = async (req: { serverId?: string; subject?: string }, want: string[], label: string) => {
    const { ids, sizes } = await walk(s, { ...req, pageSize: 7 });
    t.deepEqual(ids, want, label);
    const wantSizes = [...Array<number>(Math.floor(want.length / 7)).fill(7), ...(want.length % 7 ? [want.length % 7] : [])];
    t.deepEqual(sizes, wantSizes.length ? wantSizes : [0], `${label}: page sizes`);
    const page = await s.client.listSessions({ ...req, pageSize: 1000 });
    for (const x of page.sessions) {
      if (req.serverId) t.is(x.serverId, req.serverId);
      if (req.subject) t.is(x.subject, req.subject);
    }
  };
  await check({}, expected.all, 'no filter');
  await check({ serverId: 's1' }, expected.s1, 'server_id');
  await check({ subject: 'alice' }, expected.alice, 'subject');
  await check({ serverId: 's1', subject: 'alice' }, expected.s1alice, 'both');
  await check({ serverId: 's1', subject: 'carol' }, [], 'both, no match');
});

test('sessions created between pages appear at the end exactly once; nothing earlier is skipped', async (t) => {
  const s = await server(t);
  const created = await createMany(s, 35, { serverId: 'a' });
  const seen: string[] = [];
  const added: string[] = [];
  let pageToken = '';
  let pages = 0;
  do {
    const page = await s.client.listSessions({ serverId: 'a', pageSize: 10, pageToken });
    seen.push(...page.sessions.map((x) => x.id));
    pageToken = page.nextPageToken;
    pages++;
    // Between pages, create sessions matching the filter and one that does not.
    if (pages <= 3 && pageToken !== '') {
      added.push(...(await createMany(s, 2, { serverId: 'a' })));
      await createMany(s, 1, { serverId: 'b' });
    }
  } while (pageToken !== '');
  t.is(added.length, 6, 'sessions were added between three pairs of pages');
  assertNoDuplicates(t, seen);
  t.deepEqual(seen, [...created, ...added], 'every original session in order, then the new ones in order');
});

test('a new session created after the last page was returned does not reappear in earlier pages', async (t) => {
  const s = await server(t);
  const created = await createMany(s, 10);
  const p1 = await s.client.listSessions({ pageSize: 5 });
  const p2 = await s.client.listSessions({ pageSize: 5, pageToken: p1.nextPageToken });
  t.is(p2.nextPageToken, '');
  t.deepEqual([...p1.sessions, ...p2.sessions].map((x) => x.id), created);
  const [late] = await createMany(s, 1);
  // Re-reading from the first page's token shows the late session at the end.
  const again = await walk(s, { pageSize: 5 });
  t.deepEqual(again.ids, [...created, late!]);
});

test('deletes between pages: no duplicates, nothing live skipped, even when the cursor row is deleted', async (t) => {
  const s = await server(t);
  const created = await createMany(s, 30);
  const p1 = await s.client.listSessions({ pageSize: 10 });
  t.deepEqual(p1.sessions.map((x) => x.id), created.slice(0, 10));
  // Delete the last session of page 1 (the cursor position), two sessions of page 2 and the last of all.
  const deleted = [created[9]!, created[10]!, created[15]!, created[29]!];
  for (const id of deleted) await s.client.deleteSession(id);
  const p2 = await s.client.listSessions({ pageSize: 10, pageToken: p1.nextPageToken });
  t.deepEqual(p2.sessions.map((x) => x.id), created.slice(11, 22).filter((id) => id !== created[15]));
  const rest = await walk(s, { pageSize: 10 });
  t.deepEqual(rest.ids, created.filter((id) => !deleted.includes(id)));
  // Continue the original walk to the end.
  const seen = [...p1.sessions, ...p2.sessions].map((x) => x.id);
  let pageToken = p2.nextPageToken;
  while (pageToken !== '') {
    const page = await s.client.listSessions({ pageSize: 10, pageToken });
    seen.push(...page.sessions.map((x) => x.id));
    pageToken = page.nextPageToken;
  }
  assertNoDuplicates(t, seen);
  t.deepEqual(seen, created.filter((id) => id !== created[10] && id !== created[15] && id !== created[29]));
});

test('purged rows between pages do not break a page token', async (t) => {
  const s = await server(t);
  const created = await createMany(s, 12);
  const p1 = await s.client.listSessions({ pageSize: 4 });
  for (const id of created.slice(2, 8)) await s.client.deleteSession(id);
  await s.client.purgeExpiredSessions({});
  const rest: string[] = [];
  let pageToken = p1.nextPageToken;
  while (pageToken !== '') {
    const page = await s.client.listSessions({ pageSize: 4, pageToken });
    rest.push(...page.sessions.map((x) => x.id));
    pageToken = page.nextPageToken;
  }
  t.deepEqual(rest, created.slice(8));
});

test('expired sessions are skipped, also when they expire between pages', async (t) => {
  const s = await server(t);
  const long: string[] = [];
  const short: string[] = [];
  const shorter: string[] = [];
  for (let i = 0; i < 30; i++) {
    if (i % 3 === 0) short.push(...(await createMany(s, 1, { ttlMs: 10 * MIN })));
    else if (i % 3 === 1) shorter.push(...(await createMany(s, 1, { ttlMs: 5 * MIN })));
    else long.push(...(await createMany(s, 1, { ttlMs: HOUR })));
  }
  s.clock.advance(5 * MIN); // the "shorter" ones are gone
  const p1 = await s.client.listSessions({ pageSize: 8 });
  const firstIds = p1.sessions.map((x) => x.id);
  t.true(firstIds.every((id) => !shorter.includes(id)), 'an expired session was listed');
  t.is(firstIds.length, 8);
  s.clock.advance(5 * MIN); // now the "short" ones are gone too, between pages
  const seen = [...firstIds];
  let pageToken = p1.nextPageToken;
  while (pageToken !== '') {
    const page = await s.client.listSessions({ pageSize: 8, pageToken });
    for (const x of page.sessions) t.false(short.includes(x.id) || shorter.includes(x.id), 'an expired session was listed');
    seen.push(...page.sessions.map((x) => x.id));
    pageToken = page.nextPageToken;
  }
  assertNoDuplicates(t, seen);
  for (const id of long) t.true(seen.includes(id), 'a live session was skipped');
  // Page 1 was taken while "short" sessions were live: those are the only extras.
  t.true(seen.filter((id) => !long.includes(id)).every((id) => short.includes(id) && firstIds.includes(id)));
  const now = await walk(s, { pageSize: 8 });
  t.deepEqual(now.ids, long);
});

test('idle-expired and revoked sessions are skipped too', async (t) => {
  const s = await server(t);
  const idle = (await s.client.createSession({ serverId: 'w', idleTimeout: dur(MIN) })).session!.id;
  const kept = (await s.client.createSession({ serverId: 'w', idleTimeout: dur(HOUR) })).session!.id;
  const revoked = (await s.client.createSession({ serverId: 'w', subject: 'x' })).session!.id;
  await s.client.revokeSessions({ subject: 'x' });
  t.deepEqual((await walk(s, { serverId: 'w' })).ids, [idle, kept]);
  s.clock.advance(MIN);
  t.deepEqual((await walk(s, { serverId: 'w' })).ids, [kept]);
  t.false((await walk(s, {})).ids.includes(revoked));
});

test('200 parallel CreateSession calls all succeed and all appear in the listing exactly once', async (t) => {
  const s = await server(t);
  const results = await Promise.allSettled(
    Array.from({ length: 200 }, (_, i) => s.client.createSession({ serverId: `srv-${i % 4}`, subject: `user-${i}`, attributes: { i: String(i) } })),
  );
  const rejected = results.filter((r) => r.status === 'rejected');
  t.is(rejected.length, 0, `rejected: ${rejected.map((r) => String((r as PromiseRejectedResult).reason)).join('; ')}`);
  const created = results.map((r) => (r as PromiseFulfilledResult<{ session?: Session; token: string }>).value);
  const ids = created.map((c) => c.session!.id);
  t.is(new Set(ids).size, 200);
  t.is(new Set(created.map((c) => c.token)).size, 200);

  const { ids: listed, sizes } = await walk(s, { pageSize: 64 });
  assertNoDuplicates(t, listed);
  t.deepEqual([...listed].sort(), [...ids].sort());
  t.deepEqual(sizes, [64, 64, 64, 8]);
  // Each server's share, filtered.
  for (let k = 0; k < 4; k++) {
    const mine = created.filter((c) => c.session!.serverId === `srv-${k}`).map((c) => c.session!.id);
    t.is(mine.length, 50);
    t.deepEqual([...(await walk(s, { serverId: `srv-${k}`, pageSize: 16 })).ids].sort(), [...mine].sort());
  }
  // Every request's attributes were stored with its own session.
  const all = await s.client.listSessions({ pageSize: 1000 });
  const attrs = all.sessions.map((x) => Number(x.attributes['i']));
  t.is(new Set(attrs).size, 200);
  t.is((await s.client.getStorageStatus()).liveSessions, 200);
});

test('parallel pages and creates interleave without errors', async (t) => {
  const s = await server(t);
  const base = await createMany(s, 50);
  const [walks, extra] = await Promise.all([
    Promise.all(Array.from({ length: 5 }, () => walk(s, { pageSize: 7 }))),
    Promise.all(Array.from({ length: 50 }, (_, i) => s.client.createSession({ serverId: 'web', subject: `late-${i}` }))),
  ]);
  const extraIds = new Set(extra.map((c) => c.session!.id));
  for (const w of walks) {
    assertNoDuplicates(t, w.ids);
    // Every session that existed before the walk began is in it, in order.
    t.deepEqual(w.ids.filter((id) => !extraIds.has(id)), base);
    // Sessions created during the walk only ever come after the original ones.
    const firstExtra = w.ids.findIndex((id) => extraIds.has(id));
    if (firstExtra !== -1) t.true(firstExtra >= base.length);
  }
});
