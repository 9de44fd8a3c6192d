import test from 'ava';
import { status } from '@grpc/grpc-js';
import { SessionEventType } from '../generated/sessions/v1/session_service';
import { brief, EventReader, rawWatch } from './helpers/events';
import { MIN, server } from './helpers/sessions-e2e';
import { startTestServer } from './helpers/server';

/*
 * WatchSessionEvents end to end through the generated client and the
 * TypeScript client's watch(): every kind of change in order, filters,
 * resume, list-then-watch, retention. Test 72 runs this file on PostgreSQL too.
 */

test('every change makes one event, in commit order, with its session, time and cause; touches make none', async (t) => {
  const s = await server(t, { SESSIOND_MAX_SESSIONS_PER_SUBJECT: '2', SESSIOND_TOUCH_THRESHOLD: '0' });
  const start = (await s.client.listSessions({})).sequence;
  const watcher = s.client.watch({ afterSequence: start });
  t.teardown(() => watcher.close());
  const events = new EventReader(watcher);

  const a = (await s.client.createSession({ serverId: 'web', subject: 'alice', ttl: { seconds: 600, nanos: 0 } })).session!;
  await s.client.updateSession({ id: a.id, attributes: { role: 'admin' } });
  s.clock.advance(1000);
  await s.client.touchSession(a.id);
  await s.client.rotateSessionToken(a.id);
  const b = (await s.client.createSession({ serverId: 'web', subject: 'alice' })).session!;
  const c = (await s.client.createSession({ serverId: 'web', subject: 'alice' })).session!; // evicts a
  await s.client.deleteSession(b.id);
  const d = (await s.client.createSession({ serverId: 'web', subject: 'bob' })).session!;
  await s.client.revokeSessions({ subject: 'bob' });
  s.clock.advance(11 * MIN);
  await s.client.purgeExpiredSessions({});

  const got = await events.take(9);
  t.deepEqual(got.map(brief), [
    ['CREATED', a.id, ''], ['UPDATED', a.id, ''], ['ROTATED', a.id, ''], ['CREATED', b.id, ''],
    ['REVOKED', a.id, 'limit'], ['CREATED', c.id, ''], ['REVOKED', b.id, 'delete'], ['CREATED', d.id, ''], ['REVOKED', d.id, 'revoke'],
  ]);
  for (let i = 0; i < got.length; i++) t.is(got[i]!.sequence, start + i + 1, 'one sequence per event, no gap on one server');
  t.true(got.every((e) => e.serverId === 'web' && e.time instanceof Date));
  t.is(got[0]!.time!.getTime(), a.createTime!.getTime());
  // Only a's 10-minute ttl has passed, and a was revoked (evicted) first: no EXPIRED for it, nor for the other revoked ones.
  await events.none(300);
  s.clock.advance(31 * MIN);
  await s.client.purgeExpiredSessions({});
  t.deepEqual((await events.take(1)).map(brief), [['EXPIRED', c.id, 'idle']]);
});

test('filters by server_id and subject; a principal sees only its server_ids and needs sessions.events', async (t) => {
  const s = await startTestServer({
    principals: [
      { name: 'writer', permissions: ['sessions.write', 'sessions.read'], serverIds: ['*'] },
      { name: 'web-events', permissions: ['sessions.events'], serverIds: ['web-*'] },
    ],
  });
  t.teardown(() => s.close());
  const writer = s.client;
  const start = (await writer.listSessions({})).sequence;
  const mine = await Promise.all([
    writer.createSession({ serverId: 'web-1', subject: 'alice' }),
    writer.createSession({ serverId: 'api-1', subject: 'alice' }),
    writer.createSession({ serverId: 'web-2', subject: 'bob' }),
    writer.createSession({ serverId: 'web-1', subject: 'bob' }),
  ]);
  const ids = (pick: (i: number) => boolean) => mine.filter((_, i) => pick(i)).map((m) => m.session!.id).sort();
  const key = s.keys['web-events']!;
  const watch = async (req: { serverId?: string; subject?: string }) =>
    (await rawWatch(s.address, { ...req, afterSequence: start }, { apiKey: key, untilMs: 1500 })).events.map((e) => e.sessionId).sort();
  t.deepEqual(await watch({}), ids((i) => i !== 1), 'api-1 is outside the principal\'s server_ids');
  t.deepEqual(await watch({ serverId: 'web-1' }), ids((i) => i === 0 || i === 3));
  t.deepEqual(await watch({ subject: 'bob' }), ids((i) => i >= 2));
  t.deepEqual(await watch({ serverId: 'web-1', subject: 'alice' }), ids((i) => i === 0));

  const denied = await rawWatch(s.address, { serverId: 'api-1', afterSequence: start }, { apiKey: key });
  t.is(denied.error?.code, status.PERMISSION_DENIED);
  t.regex(denied.error!.details, /api-1/);
  const noPermission = await rawWatch(s.address, {}, { apiKey: s.keys['writer']! });
  t.is(noPermission.error?.code, status.PERMISSION_DENIED);
  t.regex(noPermission.error!.details, /sessions\.events/);
  const anonymous = await rawWatch(s.address, {});
  t.is(anonymous.error?.code, status.UNAUTHENTICATED);
});

test('a watch without after_sequence starts now and says where in a header; a resume after the last sequence misses nothing and repeats nothing', async (t) => {
  const s = await server(t);
  await s.client.createSession({ serverId: 'web', subject: 'before' });
  const first = s.client.watch();
  const reader = new EventReader(first);
  // The header comes with the stream's start; a create after it is the first event.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const made = [];
  for (let i = 0; i < 5; i++) made.push((await s.client.createSession({ serverId: 'web', subject: `u${i}` })).session!.id);
  const seen = await reader.take(3);
  t.deepEqual(seen.map((e) => e.sessionId), made.slice(0, 3), 'the create before the watch is not sent');
  first.close();
  t.is(first.lastSequence, seen[2]!.sequence);
  for (let i = 5; i < 8; i++) made.push((await s.client.createSession({ serverId: 'web', subject: `u${i}` })).session!.id);
  const resumed = s.client.watch({ afterSequence: first.lastSequence });
  t.teardown(() => resumed.close());
  t.deepEqual((await new EventReader(resumed).take(5)).map((e) => e.sessionId), made.slice(3));

  const started = await rawWatch(s.address, {}, { untilMs: 300 });
  t.is(started.headers?.get('x-sessiond-watch-start')[0], String(seen[2]!.sequence + 5));
});

test('list, then watch after the sequence of the list: every session is in the list or has its CREATED event, never both, under concurrent creates', async (t) => {
  const s = await server(t);
  const created: string[] = [];
  let writing = true;
  const writer = (async () => {
    while (writing) created.push((await s.client.createSession({ serverId: 'web', subject: 'race' })).session!.id);
  })();
  // Counted, not timed: on a loaded machine 100 ms may hold no create at all.
  const untilCreated = async (n: number) => {
    while (created.length < n) await new Promise((resolve) => setTimeout(resolve, 10));
  };
  await untilCreated(5);
  const page = await s.client.listSessions({ pageSize: 1000 });
  t.is(page.nextPageToken, '');
  const watcher = s.client.watch({ afterSequence: page.sequence });
  t.teardown(() => watcher.close());
  await untilCreated(created.length + 5);
  writing = false;
  await writer;
  const listed = new Set(page.sessions.map((x) => x.id));
  const rest = created.filter((id) => !listed.has(id));
  const events = await new EventReader(watcher).take(rest.length);
  t.true(listed.size > 0 && rest.length > 0, `both sides have sessions (${listed.size} listed, ${rest.length} after)`);
  t.deepEqual(events.map((e) => e.sessionId), rest);
  t.true(events.every((e) => e.type === SessionEventType.SESSION_EVENT_TYPE_CREATED));
});

test('retention: the sweep prunes events past --events-retention; resuming from before the window, or past the newest event, is OUT_OF_RANGE', async (t) => {
  const s = await server(t, { SESSIOND_EVENTS_RETENTION: '1m' });
  const old = (await s.client.createSession({ serverId: 'web', subject: 'old' })).session!;
  s.clock.advance(2 * MIN);
  const kept = (await s.client.createSession({ serverId: 'web', subject: 'kept' })).session!;
  await s.app.sweeper.runOnce();
  const from0 = await rawWatch(s.address, { afterSequence: 0 });
  t.is(from0.error?.code, status.OUT_OF_RANGE);
  t.regex(from0.error!.details, /^after_sequence 0 is older than the retention window \(events up to 1 were pruned\): list sessions again/);
  const fromMark = await rawWatch(s.address, { afterSequence: 1 }, { untilMs: 500 });
  t.deepEqual(fromMark.events.map((e) => e.sessionId), [kept.id], 'the window starts right after the mark');
  t.not(old.id, kept.id);
  const ahead = await rawWatch(s.address, { afterSequence: 99 });
  t.is(ahead.error?.code, status.OUT_OF_RANGE);
  t.regex(ahead.error!.details, /past the newest event \(2\)/);
});
