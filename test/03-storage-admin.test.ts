import test from 'ava';
import { status as grpcStatus } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { ServingStatus } from '../src/client';
import { SCHEMA_VERSION } from '../src/storage/sqlite/migrations';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { rejectsWithCode } from './helpers/grpc';
import { MiB, server, size, createSome, mdValue } from './helpers/storage';

/*
 * The storage as operators see it through the API: Checkpoint in each mode,
 * GetStorageStatus, the WAL figures on every health Check, and a server
 * running with journal_mode=delete.
 */

// ------------------------------------------------------------------ Checkpoint through AdminService

test('Checkpoint runs each of the four modes and reports sane numbers', async (t) => {
  const s = await server(t);
  const wal = `${s.dbPath}-wal`;
  for (const mode of [
    CheckpointMode.CHECKPOINT_MODE_PASSIVE,
    CheckpointMode.CHECKPOINT_MODE_FULL,
    CheckpointMode.CHECKPOINT_MODE_RESTART,
    CheckpointMode.CHECKPOINT_MODE_TRUNCATE,
  ]) {
    const name = CheckpointMode[mode];
    await createSome(s, 3);
    t.true(size(wal) > 0, `${name}: the writes are in the WAL`);
    const r = await s.client.checkpoint({ mode });
    t.is(r.mode, mode, name);
    t.false(r.busy, `${name}: nothing else holds the database`);
    t.true(r.checkpointedFrames >= 0, name);
    t.true(r.logFrames >= r.checkpointedFrames, name);
    t.truthy(r.duration, name);
    t.is(r.walBytes, size(wal), `${name}: wal_bytes is the -wal file size after the checkpoint`);
    if (mode === CheckpointMode.CHECKPOINT_MODE_TRUNCATE) {
      t.is(r.walBytes, 0);
      t.is(size(wal), 0, 'TRUNCATE leaves an empty -wal file');
    } else {
      t.true(r.logFrames > 0, `${name}: the writes are counted`);
      t.is(r.checkpointedFrames, r.logFrames, `${name}: with no reader every frame is copied back`);
      t.true(r.walBytes > 0, `${name}: only TRUNCATE shrinks the file`);
    }
  }
});

test('Checkpoint without a mode is PASSIVE; an unknown mode is INVALID_ARGUMENT', async (t) => {
  const s = await server(t);
  await createSome(s, 1);
  const r = await s.client.checkpoint({});
  t.is(r.mode, CheckpointMode.CHECKPOINT_MODE_PASSIVE);
  t.true(r.logFrames > 0);
  await rejectsWithCode(t, s.client.checkpoint({ mode: 99 as CheckpointMode }), grpcStatus.INVALID_ARGUMENT, /mode/);
});

test('Checkpoint with a reader holding an old snapshot: PASSIVE copies part, RESTART reports busy', async (t) => {
  const s = await server(t, { SESSIOND_BUSY_TIMEOUT: '100ms' });
  await createSome(s, 2);
  const reader = new Database(s.dbPath, { readonly: true });
  t.teardown(() => reader.close());
  reader.exec('BEGIN');
  t.true((reader.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n >= 2);
  // Written after the reader's snapshot: these frames cannot be copied back while it reads.
  await createSome(s, 3);
  const passive = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  t.false(passive.busy, 'PASSIVE never waits and never reports busy');
  t.true(passive.logFrames > 0);
  t.true(passive.checkpointedFrames < passive.logFrames, `${passive.checkpointedFrames} of ${passive.logFrames} frames copied`);
  const restart = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_RESTART });
  t.true(restart.busy, 'RESTART cannot finish while a reader uses the WAL');
  const status = await s.client.getStorageStatus();
  t.true(status.lastCheckpoint?.busy);
  reader.exec('COMMIT');
  const again = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  t.false(again.busy, 'with the reader gone TRUNCATE completes');
  t.is(again.walBytes, 0);
});

// ------------------------------------------------------------------ GetStorageStatus

test('GetStorageStatus reports the default pragmas as in force, WAL frames, counts, schema and last checkpoint', async (t) => {
  const s = await server(t);
  const before = await s.client.getStorageStatus();
  t.is(before.lastCheckpoint, undefined, 'no checkpoint has run yet');

  await createSome(s, 2, { ttlSeconds: 60 });
  await createSome(s, 3);
  s.clock.advance(2 * 60_000);
  const live = await s.client.listSessions({});
  await s.client.deleteSession(live.sessions[0]!.id);

  const st = await s.client.getStorageStatus();
  t.is(st.path, s.dbPath);
  t.is(st.journalMode, 'wal');
  t.is(st.synchronous, 'NORMAL');
  t.is(st.cacheSize, -2000);
  t.is(st.busyTimeoutMs, 5000);
  t.is(st.walAutocheckpoint, 1000);
  t.is(st.journalSizeLimit, DEFAULT_STORAGE_OPTIONS.journalSizeLimit);
  t.is(st.journalSizeLimit, 8 * MiB);
  t.true(st.walFrames > 0, 'the writes are in the WAL');
  t.is(st.walBytes, size(`${s.dbPath}-wal`));
  t.true(st.walBytes > 0);
  t.is(st.databaseBytes, size(s.dbPath));
  t.true(st.pageSize >= 512);
  t.true(st.pageCount > 0);
  t.true(st.freelistCount >= 0);
  t.is(st.liveSessions, 2, 'three default-ttl sessions, one deleted');
  t.is(st.expiredSessions, 3, 'two past their ttl, one revoked');
  t.is(st.schemaVersion, SCHEMA_VERSION);

  const from = Date.now();
  const c = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  const to = Date.now();
  const after = await s.client.getStorageStatus();
  t.is(after.walFrames, 0);
  t.is(after.walBytes, 0);
  t.is(after.walCheckpointedFrames, 0);
  t.is(after.databaseBytes, after.pageSize * after.pageCount, 'every page is in the database file');
  t.is(after.databaseBytes, size(s.dbPath));
  const last = after.lastCheckpoint;
  t.truthy(last);
  t.is(last?.mode, CheckpointMode.CHECKPOINT_MODE_TRUNCATE);
  t.is(last?.trigger, 'admin');
  t.false(last?.busy);
  t.is(last?.logFrames, c.logFrames);
  t.is(last?.checkpointedFrames, c.checkpointedFrames);
  const time = last?.time?.getTime() ?? 0;
  t.true(time >= from && time <= to, `checkpoint time ${time} within [${from}, ${to}]`);

  await createSome(s, 1);
  const passive = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  const afterPassive = await s.client.getStorageStatus();
  t.true(afterPassive.walFrames > 0);
  t.is(afterPassive.walFrames, passive.logFrames);
  t.is(afterPassive.walCheckpointedFrames, afterPassive.walFrames, 'PASSIVE with no reader backfills everything');
  t.is(afterPassive.lastCheckpoint?.mode, CheckpointMode.CHECKPOINT_MODE_PASSIVE);
});

test('GetStorageStatus reports configured (non-default) pragmas, e.g. synchronous FULL', async (t) => {
  const s = await server(t, {
    SESSIOND_SYNCHRONOUS: 'full',
    SESSIOND_CACHE_SIZE: '-4096',
    SESSIOND_BUSY_TIMEOUT: '1500ms',
    SESSIOND_WAL_AUTOCHECKPOINT: '250',
    SESSIOND_JOURNAL_SIZE_LIMIT: '1MiB',
  });
  const st = await s.client.getStorageStatus();
  t.is(st.journalMode, 'wal');
  t.is(st.synchronous, 'FULL');
  t.is(st.cacheSize, -4096);
  t.is(st.busyTimeoutMs, 1500);
  t.is(st.walAutocheckpoint, 250);
  t.is(st.journalSizeLimit, MiB);
});

// ------------------------------------------------------------------ Health metadata

test('every health Check carries the journal mode and WAL frames as response metadata', async (t) => {
  const s = await server(t);
  await createSome(s, 2);
  for (const service of ['', 'sessions.v1.SessionService', 'sessions.v1.AdminService']) {
    const h = await s.client.health(service);
    const st = await s.client.getStorageStatus();
    t.is(h.status, ServingStatus.SERVING, service);
    t.is(mdValue(h.metadata, 'x-sessiond-journal-mode'), 'wal', service);
    t.true(st.walFrames > 0);
    t.is(mdValue(h.metadata, 'x-sessiond-wal-frames'), String(st.walFrames), service);
    t.is(mdValue(h.metadata, 'x-sessiond-wal-bytes'), String(st.walBytes), service);
    t.is(mdValue(h.metadata, 'x-sessiond-not-serving-reason'), undefined, service);
  }

  await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
  const emptied = await s.client.health();
  t.is(mdValue(emptied.metadata, 'x-sessiond-wal-frames'), '0');
  t.is(mdValue(emptied.metadata, 'x-sessiond-wal-bytes'), '0');

  await createSome(s, 1);
  const grown = await s.client.health();
  const st = await s.client.getStorageStatus();
  t.true(st.walFrames > 0);
  t.is(mdValue(grown.metadata, 'x-sessiond-wal-frames'), String(st.walFrames));
});

// ------------------------------------------------------------------ journal_mode=delete

test('with journal_mode=delete the server serves, says so in health, and refuses checkpoints', async (t) => {
  const s = await server(t, { SESSIOND_JOURNAL_MODE: 'delete' });
  const h = await s.client.health();
  t.is(h.status, ServingStatus.SERVING);
  t.is(mdValue(h.metadata, 'x-sessiond-journal-mode'), 'delete');
  t.is(mdValue(h.metadata, 'x-sessiond-wal-frames'), '0');

  const tokens = await createSome(s, 2);
  t.true((await s.client.validateSession(tokens[0]!)).valid);
  t.false(existsSync(`${s.dbPath}-wal`), 'no WAL file in rollback-journal mode');

  for (const mode of [
    CheckpointMode.CHECKPOINT_MODE_PASSIVE,
    CheckpointMode.CHECKPOINT_MODE_FULL,
    CheckpointMode.CHECKPOINT_MODE_RESTART,
    CheckpointMode.CHECKPOINT_MODE_TRUNCATE,
  ]) {
    await rejectsWithCode(t, s.client.checkpoint({ mode }), grpcStatus.FAILED_PRECONDITION, /\bdelete\b/);
  }
  const st = await s.client.getStorageStatus();
  t.is(st.journalMode, 'delete');
  t.is(st.walFrames, 0);
  t.is(st.walBytes, 0);
  t.is(st.liveSessions, 2);
  t.is(st.lastCheckpoint, undefined, 'a refused checkpoint is not recorded');
});
