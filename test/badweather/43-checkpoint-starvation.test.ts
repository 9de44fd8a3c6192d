import { existsSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { CheckpointMode } from '../../generated/sessions/v1/admin_service';
import { ServingStatus, type SessiondClient } from '../../src/client/client';
import { childServer } from '../helpers/badweather';
import { SQLITE3, SqliteShell } from '../helpers/sqlite-cli';
import { requireTool } from '../helpers/tools';

/*
 * A long-lived reader in another process (the sqlite3 shell
 * in an open read transaction) pins a WAL snapshot, so checkpoints cannot
 * finish. Writes go on and the WAL grows, visibly in GetStorageStatus and in
 * the health metadata; a TRUNCATE checkpoint says busy and does not claim
 * success; once the reader goes, the WAL comes back to journal_size_limit.
 * Small settings keep it fast.
 */

const AUTOCHECKPOINT = 16; // pages
const LIMIT = 64 * 1024; // journal_size_limit, bytes

function walFileBytes(dbPath: string): number {
  return existsSync(`${dbPath}-wal`) ? statSync(`${dbPath}-wal`).size : 0;
}

async function writeBatch(client: SessiondClient, n: number, tag: string): Promise<void> {
  await Promise.all(Array.from({ length: n }, (_, i) =>
    client.createSession({ serverId: 'web-1', subject: `${tag}-${i}`, attributes: { pad: 'p'.repeat(2000) } })));
}

async function healthWal(client: SessiondClient): Promise<{ status: ServingStatus; frames: number; bytes: number }> {
  const h = await client.health();
  return {
    status: h.status,
    frames: Number(h.metadata.get('x-sessiond-wal-frames')[0]),
    bytes: Number(h.metadata.get('x-sessiond-wal-bytes')[0]),
  };
}

const needsShell = requireTool({ name: 'the sqlite3 shell (apt-get install sqlite3)', present: SQLITE3 !== undefined });

needsShell('a long reader starves checkpoints: the WAL grows and shows it, TRUNCATE says busy, and the WAL shrinks back once the reader goes', async (t) => {
  const { client, dbPath } = await childServer(t, {
    SESSIOND_WAL_AUTOCHECKPOINT: String(AUTOCHECKPOINT),
    SESSIOND_JOURNAL_SIZE_LIMIT: `${LIMIT / 1024}KiB`,
    // How long a TRUNCATE checkpoint waits for readers before it answers busy.
    SESSIOND_BUSY_TIMEOUT: '1500ms',
    // The health probe writes a heartbeat row: one landing between the last
    // TRUNCATE and its size check left a 1-frame WAL (4152 bytes) on a loaded machine.
    SESSIOND_HEALTH_PROBE_INTERVAL: '1h',
  });
  await writeBatch(client, 10, 'warm');
  const clean = await client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  t.false(clean.busy);
  t.is(walFileBytes(dbPath), 0, 'no reader: TRUNCATE empties the WAL');

  // The reader pins its snapshot.
  const reader = SqliteShell.open(dbPath);
  t.teardown(() => reader.quit());
  await reader.holdReadSnapshot();

  // Writes go on; the WAL can only grow.
  let lastFrames = 0;
  for (let round = 0; round < 8; round++) {
    await writeBatch(client, 25, `r${round}`);
    const s = await client.getStorageStatus();
    t.true(s.walFrames >= lastFrames, `round ${round}: ${s.walFrames} frames after ${lastFrames}: the WAL cannot restart under the reader`);
    lastFrames = s.walFrames;
  }
  const starved = await client.getStorageStatus();
  t.true(starved.walFrames > AUTOCHECKPOINT * 10, `${starved.walFrames} frames, autocheckpoint at ${AUTOCHECKPOINT}`);
  t.true(starved.walBytes > LIMIT * 4, `${starved.walBytes} WAL bytes, journal_size_limit ${LIMIT}`);
  t.true(starved.walCheckpointedFrames < starved.walFrames, 'the frames written after the reader began are not backfilled');
  t.is(starved.walBytes, walFileBytes(dbPath), 'wal_bytes is the -wal file size');
  t.log(`starved: ${starved.walFrames} frames (${starved.walCheckpointedFrames} backfilled), ${starved.walBytes} WAL bytes`);
  const seen = await healthWal(client);
  t.is(seen.status, ServingStatus.SERVING, 'a starved checkpoint is not an outage');
  t.true(seen.frames >= starved.walFrames, `health metadata: x-sessiond-wal-frames ${seen.frames}`);
  t.true(seen.bytes > LIMIT * 4, `health metadata: x-sessiond-wal-bytes ${seen.bytes}`);

  // TRUNCATE waits (in the worker) for the reader, then answers busy; the event loop stays free meanwhile.
  const started = performance.now();
  const truncating = client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  const healthDuring = await client.health();
  const healthMs = performance.now() - started;
  const busy = await truncating;
  t.true(busy.busy, 'TRUNCATE reports busy while the reader holds its snapshot');
  t.true(busy.walBytes > 0, `and does not claim an empty WAL (${busy.walBytes} bytes)`);
  t.true(walFileBytes(dbPath) > LIMIT, 'the -wal file is still there, and big');
  t.is(healthDuring.status, ServingStatus.SERVING);
  // On the main thread the TRUNCATE would hold the event loop for the whole 1.5 s busy timeout.
  t.true(healthMs < 1000, `health answered in ${Math.round(healthMs)}ms during the TRUNCATE`);
  // The last checkpoint in the status is this one or a later automatic PASSIVE
  // one (the worker keeps trying); neither claims to have finished.
  const last = (await client.getStorageStatus()).lastCheckpoint!;
  t.true(last.busy || last.checkpointedFrames < last.logFrames, `the status claims no complete checkpoint: ${JSON.stringify(last)}`);

  // The reader goes: the worker's automatic checkpoint backfills, and the next writes restart the WAL and cut it to the limit.
  await reader.commit();
  t.is(await reader.quit(), 0, reader.output());
  const deadline = Date.now() + 15_000;
  let after = await client.getStorageStatus();
  while (after.walBytes > LIMIT && Date.now() < deadline) {
    await writeBatch(client, 2, `after-${Date.now()}`);
    await new Promise((r) => setTimeout(r, 100));
    after = await client.getStorageStatus();
  }
  t.true(after.walBytes <= LIMIT, `the WAL came back to journal_size_limit: ${after.walBytes} bytes`);
  t.true(walFileBytes(dbPath) <= LIMIT);
  t.log(`after the reader: ${after.walFrames} frames, ${after.walBytes} WAL bytes`);
  t.true(after.walFrames < starved.walFrames);
  const back = await healthWal(client);
  t.true(back.bytes <= LIMIT, `health metadata shows it too: ${back.bytes} bytes`);

  // And with no reader, TRUNCATE succeeds: an empty -wal file.
  const done = await client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  t.false(done.busy);
  t.is(done.walBytes, 0);
  t.is(walFileBytes(dbPath), 0);
  const subjects: string[] = [];
  for await (const x of client.listAllSessions({ serverId: 'web-1', pageSize: 1000 })) subjects.push(x.subject);
  t.is(subjects.filter((x) => /^r\d-/.test(x)).length, 8 * 25, 'every write made during the starvation is there');
});
