import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SessiondClient } from '../src/client/client';
import { runServerToExit, spawnServer } from './helpers/process';
import { requireToolSerial } from './helpers/tools';

/*
 * A corrupt or foreign database at start-up. For each case
 * the real entry point (src/main.ts) must exit non-zero with a message naming
 * the file and the problem, never log "serving" (so never answer SERVING), and
 * leave every byte of what it found as it was: no new database over the old
 * one, no -wal or -shm beside it, no temporary file left behind.
 */

const PAGE = 4096;

/** A real sessiond database with a few hundred sessions over many pages, cleanly shut down (no -wal). */
let golden: Buffer;

test.before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-golden-'));
  try {
    const dbPath = join(dir, 'sessions.db');
    const server = await spawnServer({ SESSIOND_DB_PATH: dbPath });
    const client = new SessiondClient(server.address, { defaultDeadlineMs: 10_000 });
    for (let i = 0; i < 300; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) =>
        client.createSession({ serverId: 'web-1', subject: `user-${i + j}`, attributes: { note: 'x'.repeat(300), n: String(i + j) } })));
    }
    client.close();
    server.proc.kill('SIGTERM');
    if ((await server.exited) !== 0) throw new Error(`golden server did not exit cleanly:\n${server.stderr()}`);
    if (existsSync(`${dbPath}-wal`) && statSync(`${dbPath}-wal`).size > 0) throw new Error('golden database left a WAL');
    golden = readFileSync(dbPath);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (golden.length < 40 * PAGE) throw new Error(`golden database too small: ${golden.length} bytes`);
});

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-startup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file in `dir` (recursively) with the SHA-256 of its bytes. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const full = join(entry.parentPath, entry.name);
    const rel = full.slice(dir.length + 1);
    if (entry.isFile()) out[rel] = createHash('sha256').update(readFileSync(full)).digest('hex');
    else if (entry.isDirectory()) out[`${rel}/`] = 'dir';
  }
  return out;
}

/**
 * Starts the server on `dbPath` and asserts the refusal: non-zero exit code,
 * the path and `problem` on stderr, no "serving", and `dir` byte for byte as before.
 */
async function assertRefused(t: ExecutionContext, dir: string, dbPath: string, problem: RegExp): Promise<string> {
  const before = snapshot(dir);
  const { code, stderr } = await runServerToExit({ SESSIOND_DB_PATH: dbPath });
  t.is(typeof code, 'number', `exited by itself, not killed (${code}):\n${stderr}`);
  t.not(code, 0, `non-zero exit code; stderr:\n${stderr}`);
  const line = stderr.split('\n').find((l) => l.startsWith('sessiond: ')) ?? '';
  t.true(line.includes(`cannot open database ${dbPath}`), `the message names the file: ${JSON.stringify(line)}`);
  t.regex(line, problem, 'the message names the problem');
  t.false(stderr.includes('"msg":"serving"'), 'never logged "serving"');
  t.deepEqual(snapshot(dir), before, 'every file as it was: nothing created, nothing rewritten');
  return line;
}

function place(t: ExecutionContext, bytes: Buffer): { dir: string; dbPath: string } {
  const dir = tempDir(t);
  const dbPath = join(dir, 'sessions.db');
  writeFileSync(dbPath, bytes);
  return { dir, dbPath };
}

function garbled(edit: (b: Buffer) => void): Buffer {
  const b = Buffer.from(golden);
  edit(b);
  return b;
}

// ------------------------------------------------------------------ garbled header

const HEADER_GARBLES: [string, (b: Buffer) => void, RegExp][] = [
  ['the magic string', (b) => b.write('SQLite format 4\0', 0, 'latin1'), /it is not a SQLite database/],
  ['the first 100 bytes, all of them', (b) => b.fill(0xa5, 0, 100), /it is not a SQLite database/],
  ['the page size', (b) => b.writeUInt16BE(3000, 16), /SQLite header is damaged \(page size 3000\)/],
  ['the file format versions', (b) => (b[18] = 9), /SQLite header is damaged \(file format versions 9\/2\)/],
  ['the payload fractions', (b) => (b[21] = 1), /SQLite header is damaged \(payload fractions\)/],
  ['the text encoding', (b) => b.writeUInt32BE(7, 56), /SQLite header is damaged \(text encoding 7\)/],
  // Not in the header: SQLite would open this and fail only when a call reads the page.
  ['a b-tree page inside the file', (b) => b.fill(0x5a, 20 * PAGE, 20 * PAGE + 64), /it is damaged: PRAGMA quick_check reports/],
  ['the freelist trunk pointer', (b) => b.writeUInt32BE(0x7fff_0000, 32), /it is damaged: PRAGMA quick_check reports/],
];

for (const [what, edit, problem] of HEADER_GARBLES) {
  test.serial(`garbled: ${what}: exits non-zero naming the file and the problem, never serves, changes nothing`, async (t) => {
    const { dir, dbPath } = place(t, garbled(edit));
    const line = await assertRefused(t, dir, dbPath, problem);
    t.log(line);
  });
}

// ------------------------------------------------------------------ truncated

test.serial('truncated: a multi-page database cut in half is refused as truncated, with both sizes', async (t) => {
  const half = Math.floor(golden.length / 2);
  const { dir, dbPath } = place(t, golden.subarray(0, half));
  const pages = golden.readUInt32BE(28);
  t.is(pages * PAGE, golden.length, 'the golden header carries its page count');
  await assertRefused(t, dir, dbPath, new RegExp(`it is truncated: its header says ${pages} pages of ${PAGE} bytes \\(${golden.length} bytes\\) but the file has ${half} bytes`));
});

test.serial('truncated: one page short, and mid-page, are refused as truncated', async (t) => {
  for (const size of [golden.length - PAGE, 3 * PAGE + 100]) {
    const { dir, dbPath } = place(t, golden.subarray(0, size));
    await assertRefused(t, dir, dbPath, new RegExp(`it is truncated: .* the file has ${size} bytes`));
  }
});

test.serial('truncated: shorter than a header is refused as truncated', async (t) => {
  const { dir, dbPath } = place(t, golden.subarray(0, 50));
  await assertRefused(t, dir, dbPath, /it is truncated: 50 bytes, shorter than a SQLite header/);
});

test.serial('truncated to 0 bytes: refused, not silently turned into a new empty database', async (t) => {
  // SQLite itself treats an empty file as a new database, and would migrate it.
  const { dir, dbPath } = place(t, Buffer.alloc(0));
  await assertRefused(t, dir, dbPath, /the file is empty \(0 bytes\).*refusing to create a new database over it/);
  t.is(statSync(dbPath).size, 0);
});

test.serial('a database removed without its -wal: refused instead of starting empty next to the old WAL', async (t) => {
  const dir = tempDir(t);
  const dbPath = join(dir, 'sessions.db');
  writeFileSync(`${dbPath}-wal`, Buffer.alloc(8192, 1));
  await assertRefused(t, dir, dbPath, /the database file is missing but sessions\.db-wal \(8192 bytes\) is there/);
  t.false(existsSync(dbPath));
});

// ------------------------------------------------------------------ not SQLite, or not ours

test.serial('a non-SQLite file (text, then binary) is refused and left as it was', async (t) => {
  for (const bytes of [Buffer.from('these are my notes, not a database\n'.repeat(200)), Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'), Buffer.alloc(5000, 7)])]) {
    const { dir, dbPath } = place(t, bytes);
    await assertRefused(t, dir, dbPath, /it is not a SQLite database/);
  }
});

test.serial('another application\'s SQLite database is refused before anything is written to it (not even journal_mode)', async (t) => {
  const dir = tempDir(t);
  const dbPath = join(dir, 'sessions.db');
  const other = new Database(dbPath);
  other.exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices (total) VALUES (9.5); CREATE TABLE customers (id INTEGER PRIMARY KEY)");
  other.close();
  await assertRefused(t, dir, dbPath, /it is a SQLite database but not a sessiond one \(schema version 0, tables: customers, invoices\); refusing to touch it/);

  const versioned = new Database(dbPath);
  versioned.pragma('user_version = 1');
  versioned.close();
  await assertRefused(t, dir, dbPath, /at schema version 1 without a sessions table \(tables: customers, invoices\): not a sessiond database/);
});

// ------------------------------------------------------------------ unwritable places

test.serial('a database path under a regular file (ENOTDIR) is refused naming the folder, creating nothing', async (t) => {
  // Root ignores permission bits, so chmod cannot make a folder unwritable in
  // CI containers that run as root; a parent that is a regular file fails the
  // same way for every user.
  const dir = tempDir(t);
  writeFileSync(join(dir, 'not-a-folder'), 'plain file\n');
  const dbPath = join(dir, 'not-a-folder', 'data', 'sessions.db');
  await assertRefused(t, dir, dbPath, /cannot create its folder .*not-a-folder\/data: ENOTDIR/);
});

/**
 * How `dir` can be made unwritable for this process: chmod for a normal user;
 * for root, the immutable attribute (chattr +i, which root's writes obey) when
 * the filesystem and capabilities allow it, tried once on a scratch folder.
 * Undefined when nothing can (root without CAP_LINUX_IMMUTABLE, or a
 * filesystem without attributes): the ENOTDIR test above covers the path then.
 */
const UNWRITABLE_BY: string | undefined = (() => {
  if (process.getuid?.() !== 0) return 'chmod 0555';
  const probe = mkdtempSync(join(tmpdir(), 'sessiond-chattr-'));
  try {
    execFileSync('chattr', ['+i', probe], { stdio: 'ignore' });
    execFileSync('chattr', ['-i', probe], { stdio: 'ignore' });
    return 'chattr +i';
  } catch {
    return undefined;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
})();

function makeUnwritable(t: ExecutionContext, dir: string): void {
  if (UNWRITABLE_BY === 'chmod 0555') {
    chmodSync(dir, 0o555);
    t.teardown(() => chmodSync(dir, 0o755));
    return;
  }
  execFileSync('chattr', ['+i', dir], { stdio: 'ignore' });
  // Registered before tempDir's removal runs (teardowns run in reverse order).
  t.teardown(() => execFileSync('chattr', ['-i', dir], { stdio: 'ignore' }));
}

// A capability of this machine rather than a tool CI installs: a visible skip in both.
const unwritableTest = requireToolSerial({ name: 'a way to make a folder unwritable (chmod as a user, chattr +i as root)', present: UNWRITABLE_BY !== undefined, inCi: false });

unwritableTest('an unwritable folder: a new database is not created, an existing one is not opened; both name the folder', async (t) => {
  const root = tempDir(t);
  const fresh = join(root, 'fresh');
  const existing = join(root, 'existing');
  mkdirSync(fresh);
  mkdirSync(existing);
  writeFileSync(join(existing, 'sessions.db'), golden);
  makeUnwritable(t, fresh);
  makeUnwritable(t, existing);
  t.log(`unwritable by ${UNWRITABLE_BY}`);
  await assertRefused(t, fresh, join(fresh, 'sessions.db'), /its folder .*fresh is not writable \((EACCES|EPERM)\)/);
  t.deepEqual(readdirSync(fresh), []);
  await assertRefused(t, existing, join(existing, 'sessions.db'), /its folder .*existing is not writable \((EACCES|EPERM)\)/);
});

// ------------------------------------------------------------------ and the good file still opens

test.serial('the untouched golden copy still opens and serves its sessions (the checks pass a healthy file)', async (t) => {
  const { dbPath } = place(t, golden);
  const server = await spawnServer({ SESSIOND_DB_PATH: dbPath });
  t.teardown(() => {
    if (server.proc.exitCode === null) server.proc.kill('SIGKILL');
  });
  const client = new SessiondClient(server.address, { defaultDeadlineMs: 10_000 });
  t.teardown(() => client.close());
  let n = 0;
  for await (const s of client.listAllSessions({ serverId: 'web-1' })) n += s.attributes.note?.length === 300 ? 1 : 0;
  t.is(n, 300);
  server.proc.kill('SIGTERM');
  t.is(await server.exited, 0);
});

test.serial('a damaged file with frames in its -wal (a crash, then damage): refused, and the WAL is not checkpointed into it', async (t) => {
  // With frames in the WAL the header's page count is not compared with the
  // file size (pages may live in the WAL until a checkpoint), so quick_check
  // finds the missing pages. The checks run on a read-only connection, which
  // never checkpoints on close: the -wal and the file keep every byte.
  const dir = tempDir(t);
  const dbPath = join(dir, 'sessions.db');
  writeFileSync(dbPath, golden);
  const db = new Database(dbPath);
  db.prepare("INSERT INTO meta (key, value) VALUES ('x', 'y')").run();
  // The frames as a crash would leave them: copied before close() checkpoints and deletes the WAL.
  const frames = readFileSync(`${dbPath}-wal`);
  db.close();
  t.true(frames.length > 32, 'the WAL has frames');
  writeFileSync(dbPath, golden.subarray(0, Math.floor(golden.length / 2)));
  writeFileSync(`${dbPath}-wal`, frames);
  await assertRefused(t, dir, dbPath, /it is damaged: PRAGMA quick_check reports/);
});
