import test, { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from './helpers/cli';
import { startTestServer, tempDir, type TestServer } from './helpers/server';

/*
 * Backup and IntegrityCheck on a real server and a real SQLite file: an online
 * backup taken under write load holds every session acknowledged before it
 * began, opens, passes integrity_check and restores; retention, file modes, a
 * damaged file, and the CLI.
 */

async function serverWithBackups(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer & { backups: string }> {
  const dir = tempDir();
  const backups = join(dir, 'backups');
  const s = await startTestServer({ dir, env: { SESSIOND_BACKUP_DIR: backups, ...env } });
  t.teardown(() => s.close());
  return Object.assign(s, { backups });
}

const mode = (path: string) => statSync(path).mode & 0o777;

test('a backup under write load holds every session acknowledged before it began, passes integrity_check, and a server restored from it serves them', async (t) => {
  const s = await serverWithBackups(t);
  const acked: { id: string; token: string; n: number }[] = [];
  let n = 0;
  let writing = true;
  const writer = (async () => {
    while (writing) {
      const i = ++n;
      const c = await s.client.createSession({ serverId: 'web', subject: `u${i}`, attributes: { n: String(i) } });
      acked.push({ id: c.session!.id, token: c.token, n: i });
    }
  })();
  while (acked.length < 300) await new Promise((r) => setTimeout(r, 10));
  const before = [...acked];
  let backupDone = false;
  const running = s.client.backup().finally(() => {
    backupDone = true;
  });
  // Served while the backup runs on its worker: the event loop is not held.
  t.true((await s.client.validateSession(before[0]!.token)).valid);
  t.false(backupDone, 'a validation was answered while the backup was still running');
  const backup = await running;
  while (acked.length < before.length + 100) await new Promise((r) => setTimeout(r, 10));
  writing = false;
  await writer;

  t.true(backup.path.startsWith(`${s.backups}/`), backup.path);
  t.is(mode(backup.path), 0o600);
  t.is(mode(s.backups), 0o700);
  t.is(backup.bytes, statSync(backup.path).size);
  t.is(backup.sha256, createHash('sha256').update(readFileSync(backup.path)).digest('hex'));
  t.false(existsSync(`${backup.path}-wal`), 'a restore needs nothing beside the file');

  const copy = new Database(backup.path, { readonly: true });
  try {
    t.deepEqual(copy.pragma('integrity_check'), [{ integrity_check: 'ok' }]);
    const ids = new Set((copy.prepare('SELECT id FROM sessions').pluck().all() as string[]));
    const missing = before.filter((a) => !ids.has(a.id));
    t.deepEqual(missing, [], 'every session acknowledged before the backup began is in it');
  } finally {
    copy.close();
  }

  // The documented restore: the backup as the database file of a new server.
  const restoreDir = tempDir();
  mkdirSync(restoreDir, { recursive: true, mode: 0o700 });
  copyFileSync(backup.path, join(restoreDir, 'sessions.db'));
  const restored = await startTestServer({ dir: restoreDir });
  t.teardown(() => restored.close());
  for (const a of [before[0]!, before[before.length - 1]!, before[Math.floor(before.length / 2)]!]) {
    const v = await restored.client.validateSession(a.token);
    t.true(v.valid, `session ${a.n} restored`);
    t.deepEqual(v.session?.attributes, { n: String(a.n) });
  }
  t.is((await restored.client.getStorageStatus()).liveSessions >= before.length, true);
});

test('backups past --backup-retention are removed, oldest first; files that are not sessiond backups are left alone', async (t) => {
  const s = await serverWithBackups(t, { SESSIOND_BACKUP_RETENTION: '2' });
  await s.client.createSession({ serverId: 'web' });
  mkdirSync(s.backups, { recursive: true });
  closeSync(openSync(join(s.backups, 'notes.txt'), 'w'));
  const made: string[] = [];
  for (let i = 0; i < 4; i++) made.push((await s.client.backup()).path);
  const left = readdirSync(s.backups).sort();
  t.deepEqual(left, [...made.slice(2).map((p) => p.slice(s.backups.length + 1)), 'notes.txt'].sort());
});

test('Backup without --backup-dir is FAILED_PRECONDITION saying which setting', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const err = await t.throwsAsync(s.client.backup()) as ServiceError;
  t.is(err.code, status.FAILED_PRECONDITION);
  t.regex(err.details, /--backup-dir \(SESSIOND_BACKUP_DIR\)/);
});

test('IntegrityCheck: ok on a healthy file, with quick_check or integrity_check; the problems of a damaged index, while the server goes on serving', async (t) => {
  const s = await serverWithBackups(t);
  const made = await Promise.all(Array.from({ length: 200 }, (_, i) => s.client.createSession({ serverId: 'web', subject: `user-${i}` })));
  t.like(await s.client.integrityCheck({}), { ok: true, problems: [], check: 'quick_check' });
  t.like(await s.client.integrityCheck({ full: true }), { ok: true, problems: [], check: 'integrity_check' });

  // Every page in the database file, then damage the subject index's root page behind the server's back.
  await s.client.checkpoint({ mode: 4 });
  const path = s.dbPath;
  const db = new Database(path, { readonly: true, fileMustExist: true });
  const [root, pageSize] = [db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'sessions_by_subject'").pluck().get() as number, db.pragma('page_size', { simple: true }) as number];
  db.close();
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(pageSize - 16, 0x5a), 0, pageSize - 16, (root - 1) * pageSize + 16);
  closeSync(fd);
  const damaged = await s.client.integrityCheck({ full: true });
  t.false(damaged.ok);
  t.true(damaged.problems.length > 0 && damaged.problems.length <= 100);
  t.true(damaged.problems.some((p) => /sessions_by_subject|malformed|Page|page/.test(p)), JSON.stringify(damaged.problems));
  t.true((await s.client.validateSession(made[0]!.token)).valid, 'validations do not use that index, and are still served');
});

test('the CLI: sessiond admin backup prints the path and hash; sessiond admin check exits 0 when ok', async (t) => {
  const s = await serverWithBackups(t);
  await s.client.createSession({ serverId: 'web' });
  const backup = await runCli(['admin', 'backup', '--json', '--address', s.address]);
  t.is(backup.code, 0, backup.stderr);
  const answer = JSON.parse(backup.stdout) as { path: string; sha256: string; bytes: string };
  t.true(existsSync(answer.path));
  t.regex(answer.sha256, /^[0-9a-f]{64}$/);
  const check = await runCli(['admin', 'check', '--full', '--address', s.address]);
  t.is(check.code, 0, check.stderr);
  t.is(check.stdout, 'integrity_check: ok\n');
});
