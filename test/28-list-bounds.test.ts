import test from 'ava';
import { ListSessionsResponse } from '../generated/sessions/v1/session_service';
import { startTestServer } from './helpers/server';

/*
 * ListSessions pages are bounded in bytes as well as rows, so that a page of
 * large sessions never exceeds the send limit and a listing always reaches
 * its end; RevokeSessions works through any number of sessions a batch at a time.
 */

test('pages stop before max-page-bytes (one session at least), and the listing reaches every session once, in order', async (t) => {
  const s = await startTestServer({ env: { SESSIOND_MAX_PAGE_BYTES: '16KiB' } });
  t.teardown(() => s.close());
  const made: string[] = [];
  for (let i = 0; i < 20; i++) {
    made.push((await s.client.createSession({ serverId: 'web-1', subject: `u${i}`, attributes: { a: 'x'.repeat(3000), b: `${i}`.repeat(1000) } })).session!.id);
  }
  // One session larger than a page on its own.
  const huge = await s.client.createSession({ serverId: 'web-1', attributes: Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`k${i}`, 'h'.repeat(4000)])) });
  made.push(huge.session!.id);
  const seen: string[] = [];
  let pageToken = '';
  let pages = 0;
  do {
    const page = await s.client.listSessions({ serverId: 'web-1', pageSize: 100, pageToken });
    const bytes = ListSessionsResponse.encode(page).finish().length;
    t.true(page.sessions.length >= 1);
    if (page.sessions.length > 1) t.true(bytes <= 16 * 1024, `page ${pages} is ${bytes} bytes`);
    seen.push(...page.sessions.map((x) => x.id));
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken !== '' && pages < 100);
  t.deepEqual(seen, made, 'every session once, in creation order');
  t.true(pages >= 5, `${pages} pages of at most 16 KiB for about 90 KiB of sessions`);
});

test('RevokeSessions in batches revokes every match and nothing else', async (t) => {
  const s = await startTestServer({ env: { SESSIOND_REVOKE_BATCH_SIZE: '7' } });
  t.teardown(() => s.close());
  const alice = await Promise.all(Array.from({ length: 30 }, () => s.client.createSession({ serverId: 'web-1', subject: 'alice' })));
  const bob = await s.client.createSession({ serverId: 'web-1', subject: 'bob' });
  t.is((await s.client.revokeSessions({ subject: 'alice' })).revokedCount, 30);
  for (const a of alice) t.false((await s.client.validateSession(a.token)).valid);
  t.true((await s.client.validateSession(bob.token)).valid);
  t.is((await s.client.revokeSessions({ subject: 'alice' })).revokedCount, 0, 'nothing left to revoke');
  // A batch size that divides the count exactly ends with an empty batch, not a miscount.
  await Promise.all(Array.from({ length: 14 }, () => s.client.createSession({ serverId: 'web-2', subject: 'carol' })));
  t.is((await s.client.revokeSessions({ serverId: 'web-2' })).revokedCount, 14);
});
