import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApp, type App } from '../../src/server/app';
import { SessiondClient, type ClientOptions } from '../../src/client/client';
import { loadConfig, type Config } from '../../src/server/config';
import { ManualClock } from '../../src/domain/clock';
import { createLogger, type Logger } from '../../src/server/log';
import { writePrincipals, type PrincipalSpec } from './principals';
import type { StorageHooks } from '../../src/storage/sqlite/sqlite-storage';

export interface TestServer {
  app: App;
  client: SessiondClient;
  clock: ManualClock;
  config: Config;
  dir: string;
  dbPath: string;
  address: string;
  /** Log lines written by the server, parsed. */
  logs: Record<string, unknown>[];
  /** The API key of each principal given in `principals` (none in protected mode). */
  keys: Record<string, string>;
  /** The principals file, when `principals` were given. */
  principalsFile: string | undefined;
  /** A new client that calls as the named principal (closed with the server). */
  clientAs(name: string, options?: ClientOptions): SessiondClient;
  /** Shuts the server down, closes the client, removes the temp folder. */
  close(): Promise<void>;
  /**
   * Resolves once the health probe timer has run `n` more probes, and the
   * WAL check that follows each in the same turn: a signal that time the
   * server acts on has passed, instead of a sleep.
   */
  probes(n: number): Promise<void>;
}

/**
 * Where test servers keep their sessions: SQLite (each server its own file)
 * unless a test file hands in a source of fresh PostgreSQL databases, so that
 * the same end-to-end tests run against both backends.
 */
let postgresDatabases: (() => Promise<string>) | undefined;
let postgresEnv: Record<string, string> = {};

/**
 * From now on in this worker, every test server that does not choose a
 * backend itself gets a fresh database from `newDatabase` (a URL), and `env`.
 */
export function serveTestServersFromPostgres(newDatabase: () => Promise<string>, env: Record<string, string> = {}): void {
  postgresDatabases = newDatabase;
  postgresEnv = env;
}

export function tempDir(prefix = 'sessiond-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * A real server on 127.0.0.1:0 over a real SQLite file in a fresh temp folder,
 * configured through the same loader as production (SESSIOND_* variables), with
 * a manual clock so that tests move time instead of sleeping. Without
 * `principals` it runs in protected mode (the loopback client needs no key);
 * with them, a principals file is written and `client` calls as the first.
 */
export async function startTestServer(
  opts: {
    env?: Record<string, string>; clientOptions?: ClientOptions; dir?: string; clock?: ManualClock;
    principals?: PrincipalSpec[]; storageHooks?: Pick<StorageHooks, 'fsync'>;
  } = {},
): Promise<TestServer> {
  const dir = opts.dir ?? tempDir();
  const dbPath = join(dir, 'sessions.db');
  const file = opts.principals ? writePrincipals(dir, opts.principals) : undefined;
  const keys = file?.keys ?? {};
  const backend = postgresDatabases && opts.env?.['SESSIOND_STORAGE'] === undefined
    ? { SESSIOND_STORAGE: 'postgres', SESSIOND_DATABASE_URL: await postgresDatabases(), ...postgresEnv }
    : {};
  const { config } = loadConfig([], {
    SESSIOND_LISTEN: '127.0.0.1:0',
    SESSIOND_DB_PATH: dbPath,
    ...backend,
    SESSIOND_LOG_LEVEL: 'debug',
    ...(file ? { SESSIOND_PRINCIPALS_FILE: file.path } : {}),
    ...opts.env,
  });
  const logs: Record<string, unknown>[] = [];
  const log: Logger = createLogger(config.logLevel, (line) => void logs.push(JSON.parse(line) as Record<string, unknown>));
  const clock = opts.clock ?? new ManualClock(Date.now());
  const app = await startApp(config, { clock, log, storageHooks: opts.storageHooks });
  const address = `127.0.0.1:${app.port}`;
  const first = opts.principals?.[0]?.name;
  const client = new SessiondClient(address, { defaultDeadlineMs: 10_000, apiKey: first && keys[first], ...opts.clientOptions });
  const others: SessiondClient[] = [];
  let probed = 0;
  const probeWaiters: { at: number; resolve: () => void }[] = [];
  const probe = app.storage.probe.bind(app.storage);
  app.storage.probe = async () => {
    const verdict = await probe();
    probed++;
    // Settled after the probe's caller has finished its turn (the WAL check runs after the probe).
    for (const w of probeWaiters.filter((x) => x.at <= probed)) setImmediate(w.resolve);
    probeWaiters.splice(0, probeWaiters.length, ...probeWaiters.filter((x) => x.at > probed));
    return verdict;
  };
  return {
    probes(n) {
      return new Promise((resolve) => probeWaiters.push({ at: probed + n, resolve }));
    },
    keys,
    principalsFile: file?.path,
    clientAs(name, options) {
      if (!(name in keys)) throw new Error(`no principal ${name} with a key in this test server`);
      const c = new SessiondClient(address, { defaultDeadlineMs: 10_000, apiKey: keys[name], ...options });
      others.push(c);
      return c;
    },
    app,
    client,
    clock,
    config,
    dir,
    dbPath,
    address,
    logs,
    async close() {
      client.close();
      for (const c of others) c.close();
      await app.shutdown('test');
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A 64 KiB message limit, for tests of what happens at and past it. The
 * attribute and page limits shrink with it: the configuration refuses a
 * message limit below the largest legitimate request or page.
 */
export const SMALL_MESSAGES: Readonly<Record<string, string>> = {
  SESSIOND_MAX_MESSAGE_BYTES: '64KiB',
  SESSIOND_MAX_ATTRIBUTES: '8',
  SESSIOND_MAX_PAGE_BYTES: '16KiB',
};
