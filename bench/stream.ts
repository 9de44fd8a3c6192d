/*
 * Streaming validation (ValidateSessionStream through the TypeScript client's
 * openValidator(): several streams, many validations in flight on each)
 * against Redis GET through ioredis at the same concurrency, alternately in
 * the same run: both answer "here is the session for this token".
 */
import { SessiondClient, type StreamValidator } from '../src/client/client';
import { idOf, serverIdOf } from './fill';
import { median, runWindow, summarize, type Issue, type Summary, type Window } from './load';
import type { BenchOptions } from './options';
import { fillRedis, redisClients, type RedisStart } from './redis';
import type { ServerProcess } from './server-process';
import type { Pools } from './workloads';

export interface StreamRow {
  concurrency: number;
  streams: number;
  /** Validations per second through the streams; cpuUsPerCall is sessiond's. */
  stream: Summary;
  /** Redis GETs; cpuUsPerCall is redis-server's. Null when Redis was skipped. */
  redis: Summary | null;
  roundRatios: number[];
  /** Validations per request message over the measured windows: how well the client's batching works. */
  perMessage: number;
  /** Median of the per-round stream/Redis rate ratios; null when Redis was skipped. */
  ratio: number | null;
}

export interface StreamResults {
  rows: StreamRow[];
  redis: { version: string } | { skipped: string };
}

/** A session-shaped value of about the size of the Session message the stream answers with. */
export function redisValue(i: number): string {
  const now = Date.now();
  return JSON.stringify({
    id: idOf('live', i), serverId: serverIdOf(i), subject: `user-${i % 25_000}`, attributes: { role: 'member', plan: 'free' },
    ip: '203.0.113.9', userAgent: 'Mozilla/5.0 (X11; Linux x86_64) sessiond-bench/1', createTime: now, updateTime: now,
    expireTime: now + 86_400_000, idleExpireTime: now + 3_600_000, lastActiveTime: now, idleTimeoutMs: 3_600_000, tokenRotateTime: now, etag: '"1"',
  });
}

export async function measureStreaming(
  server: ServerProcess,
  pools: Pools,
  redisStart: RedisStart,
  o: BenchOptions,
  log: (line: string) => void,
): Promise<StreamResults> {
  const clients = Array.from({ length: o.streams }, () =>
    new SessiondClient(server.address, { apiKey: server.apiKey, channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }));
  const validators: StreamValidator[] = clients.map((c) => c.openValidator());
  const redis = 'server' in redisStart ? redisStart.server : undefined;
  const redisConns = redis ? redisClients(redis.port, o.streams) : [];
  const keys = pools.tokens.map((t) => `session:${t}`);
  try {
    if (redis) await fillRedis(redisConns[0]!, pools.live, (i) => keys[i]!, redisValue);
    const streamIssue = streamIssuer(validators, pools);
    const redisIssue = redisIssuer(redisConns, keys, pools);
    const rows: StreamRow[] = [];
    for (const concurrency of o.streamConcurrency) {
      await runWindow(streamIssue, concurrency, o.warmupMs);
      if (redis) await runWindow(redisIssue, concurrency, o.warmupMs);
      const s: Window[] = [];
      const r: Window[] = [];
      const roundRatios: number[] = [];
      let messages = 0;
      const sent = () => validators.reduce((n, v) => n + v.messagesSent, 0);
      for (let round = 0; round < o.rounds; round++) {
        const before = sent();
        const ws = await runWindow(streamIssue, concurrency, o.windowMs, server.pid);
        messages += sent() - before;
        s.push(ws);
        if (!redis) continue;
        const wr = await runWindow(redisIssue, concurrency, o.windowMs, redis.pid);
        r.push(wr);
        roundRatios.push(ws.calls / ws.durationMs / (wr.calls / wr.durationMs));
      }
      const row: StreamRow = {
        concurrency,
        streams: o.streams,
        stream: summarize(s),
        redis: redis ? summarize(r) : null,
        roundRatios,
        ratio: redis ? median(roundRatios) : null,
        perMessage: s.reduce((n, w) => n + w.calls, 0) / Math.max(1, messages),
      };
      rows.push(row);
      log(`  ValidateSessionStream c=${concurrency} over ${o.streams} streams: ${row.stream.rate.toFixed(0)}/s, ${row.perMessage.toFixed(1)} per message`
        + (row.redis ? `; Redis GET ${row.redis.rate.toFixed(0)}/s; ratio ${row.ratio!.toFixed(2)}x` : '; Redis skipped'));
    }
    return { rows, redis: redis ? { version: redis.version } : { skipped: (redisStart as { skipped: string }).skipped } };
  } finally {
    for (const v of validators) v.close();
    for (const c of clients) c.close();
    for (const c of redisConns) c.disconnect();
  }
}

/** A validation of a random live session over one of `validators`, per worker in turn. */
export function streamIssuer(validators: readonly StreamValidator[], pools: Pools): Issue {
  return (worker, done) => {
    validators[worker % validators.length]!.validate(pools.tokens[pools.randomLive()]!).then(
      (r) => done(r.errorCode !== 0 ? `error ${r.errorCode}: ${r.errorMessage}` : r.valid ? undefined : 'valid=false for a live session'),
      (err: unknown) => done(String(err)),
    );
  };
}

/** A Redis GET of a random live session's key over one of `conns`: the comparison's equivalent call. */
export function redisIssuer(conns: readonly { get(key: string): Promise<string | null> }[], keys: readonly string[], pools: Pools): Issue {
  return (worker, done) => {
    conns[worker % conns.length]!.get(keys[pools.randomLive()]!).then(
      (v) => done(v === null ? 'GET found no value' : undefined),
      (err: unknown) => done(String(err)),
    );
  };
}
