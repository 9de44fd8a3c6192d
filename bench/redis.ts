/*
 * A throwaway redis-server for the comparison: started on a free loopback
 * port with persistence off, filled with one key per bench session, stopped at
 * the end. Absent redis-server (Debian: apt-get install redis-server) means the
 * comparison is skipped, with the reason in the results.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { freePort } from '../test/helpers/postgres';

export interface RedisServer {
  readonly pid: number;
  readonly port: number;
  readonly version: string;
  stop(): Promise<void>;
}

export type RedisStart = { server: RedisServer } | { skipped: string };

/** Runs `fn` with a fresh redis-server (or the reason there is none, logged), and stops the server after. */
export async function withRedis<T>(log: (line: string) => void, fn: (redis: RedisStart) => Promise<T>): Promise<T> {
  const redis = await startRedis();
  if ('skipped' in redis) log(`  Redis comparison skipped: ${redis.skipped}`);
  try {
    return await fn(redis);
  } finally {
    if ('server' in redis) await redis.server.stop();
  }
}

export async function startRedis(binary = 'redis-server'): Promise<RedisStart> {
  const probe = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    return { skipped: `${binary} not found (${probe.error?.message ?? `exit ${probe.status}`}); install it (Debian: apt-get install redis-server) to compare with Redis` };
  }
  const version = /v=(\S+)/.exec(probe.stdout)?.[1] ?? 'unknown';
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-bench-redis-'));
  let lastError = '';
  // The free port may be taken between the probe and redis-server's bind: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const proc: ChildProcess = spawn(binary, [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--loglevel', 'warning', '--dir', dir,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
    const ready = await waitForPing(port, 5000, exited);
    if (ready) {
      return {
        server: {
          pid: proc.pid!,
          port,
          version,
          async stop() {
            proc.kill('SIGTERM');
            const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
            await exited;
            clearTimeout(timer);
            rmSync(dir, { recursive: true, force: true });
          },
        },
      };
    }
    proc.kill('SIGKILL');
    await exited;
    lastError = stderr.trim();
  }
  rmSync(dir, { recursive: true, force: true });
  return { skipped: `${binary} did not start: ${lastError || 'no answer to PING'}` };
}

async function waitForPing(port: number, timeoutMs: number, exited: Promise<void>): Promise<boolean> {
  let gone = false;
  void exited.then(() => (gone = true));
  const until = Date.now() + timeoutMs;
  while (!gone && Date.now() < until) {
    const c = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    // Refused connections are expected until it listens; connect() rejects with them too.
    c.on('error', () => undefined);
    try {
      await c.connect();
      if ((await c.ping()) === 'PONG') return true;
    } catch {
      // Not listening yet.
    } finally {
      c.disconnect();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** Connections with ioredis's defaults (commands in flight are pipelined on each connection). */
export function redisClients(port: number, count: number): Redis[] {
  return Array.from({ length: count }, () => {
    const c = new Redis({ port, host: '127.0.0.1' });
    // Failed commands reject and are counted by the load generator; the event would only repeat them.
    c.on('error', () => undefined);
    return c;
  });
}

/** Stores `value(i)` under `key(i)` for i < n, in pipelined batches. */
export async function fillRedis(client: Redis, n: number, key: (i: number) => string, value: (i: number) => string): Promise<void> {
  for (let from = 0; from < n; from += 1000) {
    const p = client.pipeline();
    for (let i = from; i < Math.min(n, from + 1000); i++) p.set(key(i), value(i));
    await p.exec();
  }
}
