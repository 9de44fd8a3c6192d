import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApp, type App } from '../../src/app';
import { SessiondClient, type ClientOptions } from '../../src/client';
import { loadConfig, type Config } from '../../src/config';
import { ManualClock } from '../../src/domain/clock';
import { createLogger, type Logger } from '../../src/log';
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
  /** Shuts the server down, closes the client, removes the temp folder. */
  close(): Promise<void>;
}

export function tempDir(prefix = 'sessiond-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * A real server on 127.0.0.1:0 over a real SQLite file in a fresh temp folder,
 * configured through the same loader as production (SESSIOND_* variables), with
 * a manual clock so that tests move time instead of sleeping.
 */
export async function startTestServer(
  opts: { env?: Record<string, string>; clientOptions?: ClientOptions; dir?: string; clock?: ManualClock; storageHooks?: Pick<StorageHooks, 'fsync'> } = {},
): Promise<TestServer> {
  const dir = opts.dir ?? tempDir();
  const dbPath = join(dir, 'sessions.db');
  const { config } = loadConfig([], {
    SESSIOND_LISTEN: '127.0.0.1:0',
    SESSIOND_DB_PATH: dbPath,
    SESSIOND_LOG_LEVEL: 'debug',
    ...opts.env,
  });
  const logs: Record<string, unknown>[] = [];
  const log: Logger = createLogger(config.logLevel, (line) => void logs.push(JSON.parse(line) as Record<string, unknown>));
  const clock = opts.clock ?? new ManualClock(Date.now());
  const app = await startApp(config, { clock, log, storageHooks: opts.storageHooks });
  const address = `127.0.0.1:${app.port}`;
  const client = new SessiondClient(address, { defaultDeadlineMs: 10_000, ...opts.clientOptions });
  return {
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
      await app.shutdown('test');
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
