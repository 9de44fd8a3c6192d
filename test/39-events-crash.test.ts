import test from 'ava';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { eventsSurviveSigkill } from './helpers/events-crash';
import { tempDir } from './helpers/server';

/*
 * A SIGKILL under write load, then a resume from the last sequence seen: an
 * event for every acknowledged change, none for a refused one (see
 * helpers/events-crash.ts). Test 76 runs the same on PostgreSQL.
 */

test('SQLite: every acknowledged change has its event after a SIGKILL under load, a refused change none, and the watcher resumes without a gap', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await eventsSurviveSigkill(t, { SESSIOND_DB_PATH: join(dir, 'sessions.db') });
});
