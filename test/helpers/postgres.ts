import postgres from 'postgres';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { waitFor } from './wait';
import {
  PG_BIN, alive, checkPostgresInstalled, clusterFolder, handOver, killAndRemoveSync, processesIn, quitCluster, removeOrphanSegment, runPg,
} from './postgres-processes';

/*
 * Real PostgreSQL 15 clusters for tests: each in its own temp folder, on a free
 * port of 127.0.0.1, with its unix socket inside that folder (never
 * /var/run/postgresql), removed when the test ends.
 */

export type Sql = postgres.Sql<{}>;

/** What ava's `t` offers to run a function when the test ends, pass or fail. */
export interface Teardown {
  teardown(fn: () => Promise<void> | void): void;
}

export interface PostgresOptions {
  /** Stops and removes the cluster when this test ends (otherwise call remove(), or removeAllPostgres in test.after.always). */
  t?: Teardown;
  /** Names the folder and, as cluster_name, the processes (`ps` shows it). */
  name?: string;
  /**
   * false sets fsync=off: only an operating system crash needs the server's
   * flushes (a killed postmaster loses nothing the kernel holds), and commits
   * are quicker without. On by default, so that commit timings resemble
   * production; startup takes as long either way (initdb runs with --no-sync).
   */
  fsync?: boolean;
  /** Extra postgresql.conf lines. */
  settings?: Record<string, string | number>;
  binDir?: string;
}

export interface PostgresCluster {
  readonly name: string;
  readonly host: '127.0.0.1';
  readonly port: number;
  /** The temp folder: data/, the unix socket, server.log. */
  readonly dir: string;
  readonly dataDir: string;
  /** Password of the `sessiond` role (owner of the `sessiond` database). */
  readonly password: string;
  /** postgres://sessiond:<password>@127.0.0.1:<port>/<database> */
  url(database?: string): string;
  /** The superuser `postgres`, over TCP, to database `postgres`. */
  readonly adminUrl: string;
  /** The postmaster's process id. */
  readonly pid: number;
  /** Signals the postmaster (SIGKILL: a crash; SIGQUIT: immediate shutdown; SIGTERM: smart). */
  kill(signal?: NodeJS.Signals): void;
  /** `pg_ctl stop -m fast`; does nothing when the server is not running. */
  stop(): Promise<void>;
  /** Starts a stopped server again, on the same port and data (`pg_ctl start`); does nothing while it runs. */
  start(): Promise<void>;
  /** Promotes a standby (`pg_ctl promote`, which waits until it accepts writes). */
  promote(): Promise<void>;
  isInRecovery(): Promise<boolean>;
  /** Runs `fn` on a fresh superuser connection, closed afterwards. */
  admin<T>(fn: (sql: Sql) => Promise<T>): Promise<T>;
  /** The last `lines` lines of the server log. */
  logTail(lines?: number): string;
  /** Stops the server at once (immediate), waits for every process of it to end, removes the folder. Idempotent. */
  remove(): Promise<void>;
}

// Module-wide on purpose: the 'exit' hook must reach every cluster this process started.
const live = new Set<{ remove(): Promise<void>; removeSync(): void }>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // A test that crashed or timed out never ran its teardown: nothing may outlive the worker.
  process.on('exit', () => {
    for (const c of live) c.removeSync();
  });
}

/** Stops and removes every cluster still running; for test.after.always. */
export async function removeAllPostgres(): Promise<void> {
  await Promise.all([...live].map((c) => c.remove()));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

// The settings and passwords behind each cluster, for the standby made from it.
const specs = new WeakMap<PostgresCluster, ClusterSpec>();

/** How `cluster` was made (its folder, passwords, settings). */
export function clusterSpec(cluster: PostgresCluster): ClusterSpec {
  const spec = specs.get(cluster);
  if (!spec) throw new Error(`${cluster.name} was not started by startPostgres`);
  return spec;
}

const secret = () => randomBytes(18).toString('hex');

export interface ClusterSpec {
  name: string;
  dir: string;
  binDir: string;
  password: string;
  adminPassword: string;
  /** Of the `replicator` role, which standbys connect as. */
  replicationPassword: string;
  settings: Record<string, string | number>;
  t: Teardown | undefined;
}

function tail(file: string, lines = 40): string {
  return existsSync(file) ? readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n') : '(no server log)';
}

/** Writes the settings that differ from one cluster to the next (a standby copies the rest with the data). */
function writeClusterConf(spec: ClusterSpec, port: number): void {
  const lines = { listen_addresses: '127.0.0.1', port, unix_socket_directories: spec.dir, cluster_name: spec.name, ...spec.settings };
  const text = Object.entries(lines).map(([k, v]) => `${k} = ${typeof v === 'number' ? v : `'${String(v).replace(/'/g, "''")}'`}`).join('\n');
  const file = join(spec.dir, 'data', 'cluster.conf');
  writeFileSync(file, `${text}\n`);
  handOver(file);
}

/**
 * Starts the server of an initialised data folder on a free port, trying
 * another when the chosen one was taken between choosing and binding.
 * @throws with pg_ctl's output and the server log's tail when it does not start.
 */
export async function startServer(spec: ClusterSpec): Promise<PostgresCluster> {
  const dataDir = join(spec.dir, 'data');
  const logFile = join(spec.dir, 'server.log');
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    writeClusterConf(spec, port);
    const r = await runPg(spec.binDir, 'pg_ctl', ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60'], spec.dir, 90_000);
    if (r.code === 0) break;
    const log = tail(logFile);
    if (attempt < 3 && /could not bind|Address already in use/.test(log)) continue;
    // pg_ctl gives up waiting, not the server: one that started late must not outlive the test.
    const pidFile = join(dataDir, 'postmaster.pid');
    if (existsSync(pidFile)) killAndRemoveSync(Number(readFileSync(pidFile, 'utf8').split('\n')[0]), dataDir, spec.dir);
    throw new Error(`pg_ctl start of ${spec.name} failed (${r.code}): ${r.output}\n--- ${logFile} (tail) ---\n${log}`);
  }
  let pidText = readFileSync(join(dataDir, 'postmaster.pid'), 'utf8');
  let pid = Number(pidText.split('\n')[0]);
  const adminUrl = `postgres://postgres:${spec.adminPassword}@127.0.0.1:${port}/postgres`;
  const pgCtl = async (args: string[], what: string) => {
    const r = await runPg(spec.binDir, 'pg_ctl', [...args, '-D', dataDir, '-w', '-t', '60'], spec.dir, 90_000);
    if (r.code !== 0) throw new Error(`pg_ctl ${what} of ${spec.name} failed (${r.code}): ${r.output}\n--- ${logFile} (tail) ---\n${tail(logFile)}`);
  };
  let stopping: Promise<void> | undefined;
  let removing: Promise<void> | undefined;
  const cluster: PostgresCluster = {
    name: spec.name,
    host: '127.0.0.1',
    port,
    dir: spec.dir,
    dataDir,
    password: spec.password,
    url: (database = 'sessiond') => `postgres://sessiond:${spec.password}@127.0.0.1:${port}/${database}`,
    adminUrl,
    get pid() {
      return pid;
    },
    kill: (signal = 'SIGKILL') => void process.kill(pid, signal),
    stop() {
      if (!alive(pid)) return Promise.resolve();
      return (stopping ??= pgCtl(['stop', '-m', 'fast'], 'stop').finally(() => (stopping = undefined)));
    },
    promote: () => pgCtl(['promote'], 'promote'),
    async start() {
      if (alive(pid)) return;
      // cluster.conf still names this port: the server comes back where its clients look for it.
      const r = await runPg(spec.binDir, 'pg_ctl', ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60'], spec.dir, 90_000);
      if (r.code !== 0) throw new Error(`pg_ctl start of ${spec.name} failed (${r.code}): ${r.output}\n--- ${logFile} (tail) ---\n${tail(logFile)}`);
      pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    },
    isInRecovery: () => cluster.admin(async (sql) => (await sql<{ r: boolean }[]>`select pg_is_in_recovery() as r`)[0]!.r),
    async admin(fn) {
      const sql = postgres(adminUrl, { max: 1, connect_timeout: 10, onnotice: () => {} });
      try {
        return await fn(sql);
      } finally {
        await sql.end({ timeout: 1 });
      }
    },
    logTail: (lines) => tail(logFile, lines),
    remove() {
      return (removing ??= (async () => {
        // SIGQUIT is what `pg_ctl stop -m immediate` sends. A postmaster killed a moment ago may
        // still be dying, and its children outlive it, attached to its shared memory, until they
        // next look for it: they are told to quit as soon as it is gone.
        if (alive(pid)) process.kill(pid, 'SIGQUIT');
        const gone = () => {
          if (!alive(pid)) quitCluster(pid, dataDir);
          return !alive(pid) && processesIn(dataDir).length === 0;
        };
        await waitFor(gone, `the processes of ${spec.name} to exit`, 10_000, 20).catch(() => undefined);
        if (existsSync(join(dataDir, 'postmaster.pid'))) pidText = readFileSync(join(dataDir, 'postmaster.pid'), 'utf8');
        killAndRemoveSync(pid, dataDir, spec.dir);
        removeOrphanSegment(pidText);
        live.delete(entry);
      })());
    },
  };
  const entry = { remove: () => cluster.remove(), removeSync: () => killAndRemoveSync(pid, dataDir, spec.dir) };
  live.add(entry);
  hookExit();
  specs.set(cluster, spec);
  spec.t?.teardown(() => cluster.remove());
  return cluster;
}

/** initdb's settings, and ours: small and quick, yet durable commits. */
const TEST_SETTINGS = {
  max_connections: 100,
  shared_buffers: '16MB',
  synchronous_commit: 'on',
  password_encryption: 'scram-sha-256',
  log_line_prefix: '%m [%p] %q%u@%d ',
};

// local trust: the socket lives in a folder only the server's user and root reach.
const HBA = `local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication replicator 127.0.0.1/32 scram-sha-256
`;

/**
 * A new cluster: superuser `postgres`, role `sessiond` with a random password
 * owning database `sessiond`, and role `replicator` for standbys. Password
 * authentication (scram-sha-256) for every TCP connection.
 * @throws naming what to install when PostgreSQL 15 is missing; with initdb's
 * output or the server log when a step fails.
 */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresCluster> {
  const binDir = options.binDir ?? PG_BIN;
  checkPostgresInstalled(binDir);
  const name = options.name ?? 'pg';
  const dir = clusterFolder(name);
  const spec: ClusterSpec = {
    name, dir, binDir, password: secret(), adminPassword: secret(), replicationPassword: secret(), t: options.t,
    settings: { ...TEST_SETTINGS, fsync: options.fsync === false ? 'off' : 'on', ...options.settings },
  };
  try {
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, `${spec.adminPassword}\n`, { mode: 0o600 });
    handOver(pwfile);
    // --no-sync: initdb's final flush of 40 MB buys nothing for a cluster that an OS crash may lose.
    const init = await runPg(binDir, 'initdb', ['-D', join(dir, 'data'), '-U', 'postgres', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'], dir, 120_000);
    rmSync(pwfile, { force: true });
    if (init.code !== 0) throw new Error(`initdb failed (${init.code}): ${init.output}`);
    writeFileSync(join(dir, 'data', 'pg_hba.conf'), HBA);
    writeFileSync(join(dir, 'data', 'postgresql.conf'), `${readFileSync(join(dir, 'data', 'postgresql.conf'), 'utf8')}\ninclude 'cluster.conf'\n`);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const cluster = await startServer(spec).catch((e: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  try {
    await cluster.admin(async (sql) => {
      // Role and database statements take no parameters; the passwords are hex, made here.
      await sql.unsafe(`create role sessiond login password '${spec.password}'`);
      await sql.unsafe('create database sessiond owner sessiond');
      await sql.unsafe(`create role replicator replication login password '${spec.replicationPassword}'`);
    });
  } catch (e) {
    await cluster.remove();
    throw new Error(`setting up the roles of ${name} failed: ${(e as Error).message}\n--- server log (tail) ---\n${cluster.logTail()}`, { cause: e });
  }
  return cluster;
}

export { startPrimaryWithStandby, type PrimaryWithStandby, type StandbyOptions } from './postgres-standby';
