import { execFile, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/*
 * Running PostgreSQL's programs for the test clusters (test/helpers/postgres.ts),
 * and making sure none outlives the test process. PostgreSQL refuses to run as
 * root, and root is who runs the tests here and in CI: then every program runs as
 * the `postgres` user the Debian package creates, in a folder that user owns.
 */

/** Where Debian's postgresql-15 package puts its programs. */
export const PG_BIN = '/usr/lib/postgresql/15/bin';
const PROGRAMS = ['initdb', 'pg_ctl', 'postgres', 'pg_basebackup'];
const AS_ROOT = process.getuid?.() === 0;
const INSTALL = 'apt-get install postgresql';

let owner: { uid: number; gid: number } | undefined;

/**
 * Throws, naming what is missing, when PostgreSQL 15 cannot run here: a test of
 * the PostgreSQL backend that cannot start PostgreSQL fails, it never skips.
 */
export function checkPostgresInstalled(binDir = PG_BIN): void {
  const missing = PROGRAMS.map((p) => join(binDir, p)).filter((p) => !existsSync(p));
  if (missing.length > 0) throw new Error(`PostgreSQL 15 is not installed: ${missing.join(', ')} missing (${INSTALL})`);
  if (AS_ROOT) postgresOwner();
}

function postgresOwner(): { uid: number; gid: number } {
  if (owner) return owner;
  const id = (flag: string) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim() || NaN);
  const uid = id('-u');
  const gid = id('-g');
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new Error(`running as root, PostgreSQL must run as the "postgres" user, and there is none (${INSTALL} creates it)`);
  }
  return (owner = { uid, gid });
}

/** A fresh folder under os.tmpdir() that the PostgreSQL programs may write. */
export function clusterFolder(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `sessiond-pg-${name}-`));
  if (AS_ROOT) chownSync(dir, postgresOwner().uid, postgresOwner().gid);
  return dir;
}

/** Gives a file the test wrote (a password file) to the user the server runs as. */
export function handOver(path: string): void {
  if (AS_ROOT) chownSync(path, postgresOwner().uid, postgresOwner().gid);
}

export interface RunResult {
  code: number | string;
  output: string;
}

/**
 * Runs a PostgreSQL program to completion (as `postgres` when we are root),
 * from `cwd`: the postgres user may not read the repository's folder. PG*
 * variables of the caller are dropped, since libpq and pg_ctl obey them.
 */
export function runPg(binDir: string, program: string, args: string[], cwd: string, timeoutMs = 60_000, env: Record<string, string> = {}): Promise<RunResult> {
  const bin = join(binDir, program);
  const [file, argv] = AS_ROOT ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  return new Promise((resolve) => {
    execFile(file, argv, { cwd, env: { ...base, LC_ALL: 'C', ...env }, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as NodeJS.ErrnoException & { signal?: string }).signal ?? (typeof err.code === 'number' ? err.code : String(err.code ?? 1))) : 0;
      resolve({ code, output: `${stdout}${stderr}`.trim() });
    });
  });
}

/**
 * Whether the process runs. A zombie does not: the postmaster, orphaned by
 * pg_ctl, is reaped by init a moment after it exits, and signal 0 still
 * reaches it meanwhile.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    // No /proc (not Linux): signal 0 is all there is; or it exited just now.
    return !existsSync('/proc');
  }
}

/**
 * Every process working in `dataDir`: the postmaster chdirs there and each
 * child inherits it. After a SIGKILL of the postmaster its children live on
 * until they notice (https://www.postgresql.org/docs/15/server-shutdown.html),
 * and they are found by nothing else once reparented to init.
 */
export function processesIn(dataDir: string): number[] {
  if (!existsSync('/proc')) return [];
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/cwd`) === dataDir) found.push(Number(entry));
    } catch {
      // Exited meanwhile, or not ours to read.
    }
  }
  return found;
}

/**
 * Removes the System V shared memory segment a postmaster that died unclean
 * left behind (its key and id are line 7 of postmaster.pid), when no process
 * is attached: a clean shutdown removes it, a SIGKILL does not.
 */
export function removeOrphanSegment(pidFileText: string): void {
  const [key, id] = (pidFileText.split('\n')[6] ?? '').trim().split(/\s+/).map(Number);
  if (!key || id === undefined || Number.isNaN(id) || !existsSync('/proc/sysvipc/shm')) return;
  const row = readFileSync('/proc/sysvipc/shm', 'utf8').split('\n').map((l) => l.trim().split(/\s+/)).find((f) => Number(f[0]) === key && Number(f[1]) === id);
  // Columns: key shmid perms size cpid lpid nattch ...
  if (row && row[6] === '0') spawnSync('ipcrm', ['-m', String(id)], { stdio: 'ignore', timeout: 5_000 });
}

/** Blocks the thread for `ms`: the 'exit' hook may not wait asynchronously. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const p of pids) {
    try {
      process.kill(p, signal);
    } catch {
      // Gone meanwhile.
    }
  }
}

/**
 * Asks the postmaster, or when it is dead its orphaned children, to quit at
 * once. SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its
 * children and its shared memory with it, which a SIGKILL would leave behind;
 * orphans would otherwise linger until they next check for the postmaster.
 */
export function quitCluster(pid: number, dataDir: string): void {
  if (alive(pid)) signalAll([pid], 'SIGQUIT');
  else signalAll(processesIn(dataDir), 'SIGQUIT');
}

/** Ends every process in `dataDir` without waiting on the event loop, then removes `dir`: for the 'exit' hook. */
export function killAndRemoveSync(pid: number, dataDir: string, dir: string): void {
  quitCluster(pid, dataDir);
  for (let i = 0; i < 100 && processesIn(dataDir).length > 0; i++) sleepSync(50);
  signalAll(processesIn(dataDir), 'SIGKILL');
  rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
}
