import test from 'ava';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { SessionEventType, SessionServiceClient, WatchSessionEventsRequest } from '../generated/sessions/v1/session_service';
import { rmSync } from 'node:fs';
import { SessiondClient } from '../src/client/client';
import { freePort } from './helpers/postgres';
import { EventReader, rawWatch } from './helpers/events';
import { server } from './helpers/sessions-e2e';
import { startTestServer, tempDir } from './helpers/server';
import { writePrincipals } from './helpers/principals';
import type { Permission } from '../src/domain/principals';

/*
 * The life of a WatchSessionEvents stream: a consumer that stops reading,
 * the limit on open streams, PROGRESS events, shutdown, --session-events
 * off, and the client's watch() across a server restart.
 */

test('a consumer that stops reading holds the server back, then is ended with RESOURCE_EXHAUSTED and the sequence to resume after; the resume gets the rest', async (t) => {
  const s = await server(t, { SESSIOND_EVENTS_STALL_TIMEOUT: '500ms' });
  const start = (await s.client.listSessions({})).sequence;
  // Long ids make each event about 550 bytes: a few MB of them fill what grpc-js, HTTP/2 and the sockets buffer.
  const long = 'x'.repeat(250);
  const made: string[] = [];
  for (let i = 0; i < 12; i++) {
    const batch = await Promise.all(Array.from({ length: 500 }, (_, j) => s.client.createSession({ serverId: `${long}${i}`, subject: `${long}${j}` })));
    made.push(...batch.map((c) => c.session!.id));
  }
  const raw = new SessionServiceClient(s.address, credentials.createInsecure());
  t.teardown(() => raw.close());
  const call = raw.watchSessionEvents(WatchSessionEventsRequest.fromPartial({ afterSequence: start }), new Metadata());
  const seen: number[] = [];
  const seenIds: string[] = [];
  const ended = new Promise<ServiceError>((resolve, reject) => {
    call.on('error', resolve);
    setTimeout(() => reject(new Error(`no status after ${seen.length} events`)), 30_000).unref();
  });
  call.on('data', ({ event }: { event: { sequence: number; sessionId: string } }) => {
    seen.push(event.sequence);
    seenIds.push(event.sessionId);
  });
  call.pause();
  // Past the stall timeout the server stops; its status waits behind the events already written, so read again.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  call.resume();
  const err = await ended;
  t.is(err.code, status.RESOURCE_EXHAUSTED);
  const m = /^the consumer read nothing for 500 ms while events waited \(--events-stall-timeout\); resume with after_sequence (\d+)$/.exec(err.details);
  t.truthy(m, err.details);
  const resumeAfter = Number(m![1]);
  t.is(resumeAfter, seen[seen.length - 1], 'the sequence to resume after is the last event the stream delivered');
  t.deepEqual(seen, Array.from({ length: seen.length }, (_, i) => start + 1 + i));
  t.true(resumeAfter < start + made.length, `the server stopped before the end of the log (${resumeAfter} of ${start + made.length})`);
  // What the stalled stream delivered, and the rest from the resume, are every event once.
  const resumed = s.client.watch({ afterSequence: resumeAfter });
  t.teardown(() => resumed.close());
  const rest = await new EventReader(resumed).take(start + made.length - resumeAfter, 20_000);
  t.deepEqual(rest.map((e) => e.sequence), Array.from({ length: rest.length }, (_, i) => resumeAfter + 1 + i));
  t.deepEqual([...seenIds, ...rest.map((e) => e.sessionId)].sort(), [...made].sort(), 'every create once');
  t.true((await s.client.validateSession((await s.client.createSession({ serverId: 'web' })).token)).valid, 'the server goes on serving');
});

test('past --max-event-streams a new watch is RESOURCE_EXHAUSTED; one ending makes room', async (t) => {
  const s = await server(t, { SESSIOND_MAX_EVENT_STREAMS: '2' });
  const a = s.client.watch();
  const b = s.client.watch();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const third = await rawWatch(s.address, {});
  t.is(third.error?.code, status.RESOURCE_EXHAUSTED);
  t.regex(third.error!.details, /^2 event streams are open, the most this server allows \(--max-event-streams\)/);
  a.close();
  b.close();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const fourth = await rawWatch(s.address, {}, { untilMs: 300 });
  t.is(fourth.error, undefined, 'served once the others ended');
});

test('progress_events: a filter that matches nothing still gets PROGRESS events that move the resume point', async (t) => {
  const s = await server(t, { SESSIOND_EVENTS_PROGRESS_INTERVAL: '200ms' });
  const watcher = s.client.watch({ subject: 'nobody', progressEvents: true });
  t.teardown(() => watcher.close());
  const reader = new EventReader(watcher);
  await new Promise((resolve) => setTimeout(resolve, 100));
  for (let i = 0; i < 3; i++) await s.client.createSession({ serverId: 'web', subject: 'someone' });
  const head = (await s.client.listSessions({})).sequence;
  let progress = (await reader.take(1))[0]!;
  while (progress.sequence < head) progress = (await reader.take(1))[0]!;
  t.is(progress.type, SessionEventType.SESSION_EVENT_TYPE_PROGRESS);
  t.is(progress.sequence, head);
  t.is(progress.sessionId, '');
  t.is(watcher.lastSequence, head);
});

test('shutdown ends every watch with UNAVAILABLE and the sequence to resume after', async (t) => {
  const s = await startTestServer();
  const first = await s.client.createSession({ serverId: 'web' });
  // Closed once the event has arrived: a fixed wait loses the race on a loaded machine.
  let delivered!: () => void;
  const arrived = new Promise<void>((resolve) => (delivered = resolve));
  const watching = rawWatch(s.address, { afterSequence: 0 }, { untilMs: 20_000, onEvent: () => delivered() });
  await arrived;
  await s.close();
  const { events, error } = await watching;
  t.deepEqual(events.map((e) => e.sessionId), [first.session!.id]);
  t.is(error?.code, status.UNAVAILABLE);
  t.is(error?.details, 'the server is shutting down; resume with after_sequence 1');
});

test('with --session-events off a watch is FAILED_PRECONDITION; turning it back on makes older resume points OUT_OF_RANGE', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const on = await startTestServer({ dir });
  await on.client.createSession({ serverId: 'web' });
  const before = (await on.client.listSessions({})).sequence;
  await on.close();
  const off = await startTestServer({ dir, env: { SESSIOND_SESSION_EVENTS: 'false' } });
  const refused = await rawWatch(off.address, {});
  t.is(refused.error?.code, status.FAILED_PRECONDITION);
  t.regex(refused.error!.details, /--session-events off/);
  await off.client.createSession({ serverId: 'web' });
  await off.close();
  const again = await startTestServer({ dir });
  t.teardown(() => again.close());
  const stale = await rawWatch(again.address, { afterSequence: before });
  t.is(stale.error?.code, status.OUT_OF_RANGE, 'a change made while events were off has no event: the old position cannot be resumed');
  const now = (await again.client.listSessions({})).sequence;
  t.is(now, before + 1, 'one sequence is burned, so that the head as it was cannot be resumed either');
  const fresh = await rawWatch(again.address, { afterSequence: now }, { untilMs: 300 });
  t.is(fresh.error, undefined);
});

test("the client's watch() resumes by itself across a server restart, from the last sequence it delivered, and ends on OUT_OF_RANGE", async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const env = { SESSIOND_LISTEN: `127.0.0.1:${port}` };
  let s = await startTestServer({ dir, env });
  const client = new SessiondClient(s.address, { defaultDeadlineMs: 10_000 });
  t.teardown(() => client.close());
  const reconnects: number[] = [];
  const watcher = client.watch({ afterSequence: 0, initialBackoffMs: 50, maxBackoffMs: 200, onReconnect: (e) => reconnects.push(e.code) });
  t.teardown(() => watcher.close());
  const reader = new EventReader(watcher);
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await s.client.createSession({ serverId: 'web' })).session!.id);
  t.deepEqual((await reader.take(3)).map((e) => e.sessionId), ids);
  await s.close();
  s = await startTestServer({ dir, env });
  for (let i = 0; i < 3; i++) ids.push((await s.client.createSession({ serverId: 'web' })).session!.id);
  const after = await reader.take(3, 20_000);
  t.deepEqual(after.map((e) => e.sessionId), ids.slice(3), 'no event twice, none missed');
  t.deepEqual(after.map((e) => e.sequence), [4, 5, 6]);
  t.true(reconnects.length > 0 && reconnects.every((c) => c === status.UNAVAILABLE), JSON.stringify(reconnects));
  await s.close();

  const late = await startTestServer({ env: { ...env, SESSIOND_EVENTS_RETENTION: '1m' } });
  t.teardown(() => late.close());
  const gone = client.watch({ afterSequence: 99 });
  await t.throwsAsync(new EventReader(gone).take(1), { message: /past the newest event/ });
});

test('a principals reload ends the watch of a key that was removed, and narrows one whose server_ids shrank', async (t) => {
  const specs = [
    { name: 'writer', permissions: ['sessions.write', 'sessions.read'] as Permission[], serverIds: ['*'] },
    { name: 'auditor', permissions: ['sessions.events'] as Permission[], serverIds: ['web-*'] },
    { name: 'retired', permissions: ['sessions.events'] as Permission[], serverIds: ['*'] },
  ];
  const s = await startTestServer({ principals: specs });
  t.teardown(() => s.close());
  const auditor = rawWatch(s.address, {}, { apiKey: s.keys['auditor']!, untilMs: 3000 });
  const retired = rawWatch(s.address, {}, { apiKey: s.keys['retired']!, untilMs: 3000 });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const before = await s.client.createSession({ serverId: 'web-2' });
  // Events are filtered as they are sent: let the stream send this one (it polls every 100 ms) before the scope shrinks.
  await new Promise((resolve) => setTimeout(resolve, 500));
  writePrincipals(s.dir, [specs[0]!, { ...specs[1]!, serverIds: ['web-1'] }], 'principals.yaml', s.keys);
  t.true(s.app.reloadPrincipals('test'));
  const after = await s.client.createSession({ serverId: 'web-2' });
  const mine = await s.client.createSession({ serverId: 'web-1' });
  const gone = await retired;
  t.is(gone.error?.code, status.UNAUTHENTICATED);
  const kept = await auditor;
  t.deepEqual(kept.events.map((e) => e.sessionId), [before.session!.id, mine.session!.id], `web-2's create after the reload (${after.session!.id}) is no longer the auditor's`);
});
