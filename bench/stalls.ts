/*
 * No stalls, and memory: the event-loop delay inside the server (the bench
 * service's monitorEventLoopDelay) while it purges a million expired sessions
 * on request, while its background sweep does the same, and while a TRUNCATE
 * checkpoint runs under a write load; RSS with the million stored. A light
 * load runs throughout, as in production, and a window of that load alone
 * gives the baseline delay to read the others against.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { ValidateSessionRequest } from '../generated/sessions/v1/session_service';
import type { LoopDelayFigures } from '../src/transport/bench-service';
import { SessiondClient } from '../src/client/client';
import { fillDatabase, tokenOf } from './fill';
import { runUntil, runWindow, summarize, type Issue, type Summary } from './load';
import type { BenchOptions } from './options';
import { Channels, toBuffer } from './rpc';
import { memory, startServer, type ServerProcess } from './server-process';
import { issuer, Pools, workload } from './workloads';

const MB = 1024 * 1024;

export interface Stalled {
  /** Event-loop delay inside the server over the operation. */
  loop: LoopDelayFigures;
  /** The light load that ran meanwhile (its latency shows what callers felt). */
  load: Summary;
  /** The largest -wal file seen meanwhile (health metadata, sampled every 250 ms). */
  walPeakBytes: number;
}

export interface StallResults {
  expiredSessions: number;
  liveSessions: number;
  fillMs: number;
  /** The light load alone: the delay the others are read against. */
  baseline: Stalled;
  purge: Stalled & { purged: number; batches: number; durationMs: number };
  /** The sweep starts one interval after serving and logs once it has purged everything (with its duration, when the server logs one). */
  sweep: Stalled & { purged: number; batches: number; durationMs: number | null; finishedAfterServingMs: number };
  /** walFramesBefore: the WAL's frames just before (the health metadata); SQLite's own figures follow. */
  checkpoint: Stalled & { walFramesBefore: number; busy: boolean; logFrames: number; checkpointedFrames: number; durationMs: number; walBytesAfter: number };
  rss: {
    /** Resident memory with every session stored: the larger of just after start and after a validation window over all of them. */
    withSessionsMb: number;
    startedMb: number;
    afterLoadMb: number;
    afterPurgeMb: number;
    /** VmHWM: the peak over the purge server's whole life, and over the sweep server's. */
    peakPurgeServerMb: number;
    peakSweepServerMb: number;
  };
}

async function benchCall(channels: Channels, method: 'LoopDelayStart' | 'LoopDelayStop'): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    channels.call(0, `/sessiond.bench.v1.Bench/${method}`, Buffer.alloc(0), (err, answer) => (err ? reject(new Error(err)) : resolve(answer!))));
}

/** The -wal file's size as the server reports it on every health check. */
async function walBytes(admin: SessiondClient): Promise<number> {
  const { metadata } = await admin.health();
  return Number(metadata.get('x-sessiond-wal-bytes')[0] ?? 0);
}

/** Runs `during` with the loop monitor on, the light load running and the WAL size watched. */
async function measured<T>(channels: Channels, admin: SessiondClient, load: Issue, concurrency: number, during: () => Promise<T>): Promise<{ value: T } & Stalled> {
  const running = runUntil(load, concurrency);
  let walPeakBytes = await walBytes(admin);
  const watch = setInterval(() => void walBytes(admin).then((b) => (walPeakBytes = Math.max(walPeakBytes, b)), () => undefined), 250);
  await benchCall(channels, 'LoopDelayStart');
  const outcome = await during().then((value) => ({ value }), (error: unknown) => ({ error }));
  const loop = JSON.parse((await benchCall(channels, 'LoopDelayStop')).toString()) as LoopDelayFigures;
  clearInterval(watch);
  const summary = await running.stop();
  if ('error' in outcome) throw outcome.error;
  return { value: outcome.value, loop, load: summary, walPeakBytes };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The collector's share of the stall: its longest pause meanwhile. */
const gcNote = (loop: LoopDelayFigures) => ` (longest GC pause ${loop.gc.maxMs.toFixed(1)} ms, ${loop.gc.maxKind || 'none'}; ${loop.gc.major} major)`;

export async function measureStalls(dir: string, o: BenchOptions, log: (line: string) => void): Promise<StallResults> {
  const expired = o.stallSessions;
  const live = Math.min(10_000, Math.max(100, Math.floor(expired / 100)));
  const dbPath = join(dir, 'stall.db');
  log(`  filling ${expired} expired + ${live} live sessions...`);
  const fillMs = await fillDatabase(dbPath, { live, expired });
  const sweepDb = join(dir, 'sweep.db');
  copyFileSync(dbPath, sweepDb);
  log(`  filled in ${(fillMs / 1000).toFixed(1)} s`);
  const pools = new Pools(live, 0);

  // -------- purge server: RSS, the purge on request, a TRUNCATE checkpoint. The sweep stays out of the way.
  let server: ServerProcess = await startServer(dbPath, { SESSIOND_SWEEP_INTERVAL: '24h' }, o.cpuProfDir);
  let channels = new Channels(server.address, Math.min(o.channels, o.stallConcurrency), server.apiKey);
  let admin = new SessiondClient(server.address, { apiKey: server.apiKey, adminToken: server.adminKey });
  try {
    await channels.ready();
    const validateLive = issuer(workload('ValidateSession', pools), channels);
    const startedMb = memory(server.pid).rssBytes / MB;
    // Every stored session, live and expired, looked up at random: the pages of the whole file pass through.
    const validateAny: Issue = (worker, done) => {
      const i = Math.floor(Math.random() * (live + expired));
      const token = i < live ? tokenOf('live', i) : tokenOf('expired', i - live);
      channels.call(worker, '/sessions.v1.SessionService/ValidateSession', toBuffer(ValidateSessionRequest.encode({ token, touch: false }).finish()), (err) => done(err));
    };
    const loadWindow = summarize([await runWindow(validateAny, o.stallConcurrency, 2 * o.windowMs, server.pid)]);
    if (loadWindow.errors > 0) throw new Error(`validations over every stored session failed: ${loadWindow.firstError}`);
    const afterLoadMb = memory(server.pid).rssBytes / MB;

    // Long enough to hold some of V8's major collections, which the load alone
    // brings about only now and then: the purge and sweep run for minutes, and
    // their windows hold several.
    const baseline = await measured(channels, admin, validateLive, o.stallConcurrency, () => sleep(o.stallBaselineMs));
    log(`  baseline (light load only): loop delay max ${baseline.loop.maxMs.toFixed(1)} ms${gcNote(baseline.loop)}`);

    const purge = await measured(channels, admin, validateLive, o.stallConcurrency, async () => {
      const t0 = performance.now();
      const r = await admin.purgeExpiredSessions({});
      return { purged: r.purgedCount, batches: r.batches, durationMs: performance.now() - t0 };
    });
    log(`  purge of ${purge.value.purged} in ${(purge.value.durationMs / 1000).toFixed(1)} s: loop delay max ${purge.loop.maxMs.toFixed(1)} ms${gcNote(purge.loop)}, WAL up to ${(purge.walPeakBytes / MB).toFixed(0)} MB`);
    const afterPurgeMb = memory(server.pid).rssBytes / MB;

    // Writes fill the WAL while the checkpoint runs; the worker's own threshold checkpoints go on too.
    const create = issuer(workload('CreateSession', pools), channels);
    const checkpoint = await measured(channels, admin, create, o.stallConcurrency, async () => {
      await sleep(o.windowMs / 2);
      // A TRUNCATE checkpoint reports the WAL as it left it (empty): the health metadata says what it had to copy.
      const before = await admin.health();
      const walFramesBefore = Number(before.metadata.get('x-sessiond-wal-frames')[0] ?? NaN);
      const r = await admin.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_TRUNCATE });
      await sleep(o.windowMs / 2);
      const seconds = r.duration ? r.duration.seconds + r.duration.nanos / 1e9 : 0;
      return { walFramesBefore, busy: r.busy, logFrames: r.logFrames, checkpointedFrames: r.checkpointedFrames, durationMs: seconds * 1000, walBytesAfter: r.walBytes };
    });
    log(`  TRUNCATE checkpoint of ${checkpoint.value.walFramesBefore} frames in ${checkpoint.value.durationMs.toFixed(1)} ms under writes: loop delay max ${checkpoint.loop.maxMs.toFixed(1)} ms${gcNote(checkpoint.loop)}`);
    const peakPurgeServerMb = memory(server.pid).peakRssBytes / MB;

    // -------- sweep server: the same million, purged by the background sweep.
    channels.close();
    admin.close();
    await server.stop();
    server = await startServer(sweepDb, { SESSIOND_SWEEP_INTERVAL: `${o.sweepIntervalMs}ms` }, o.cpuProfDir);
    const servingAt = performance.now();
    channels = new Channels(server.address, Math.min(o.channels, o.stallConcurrency), server.apiKey);
    admin = new SessiondClient(server.address, { apiKey: server.apiKey, adminToken: server.adminKey });
    await channels.ready();
    const validateLive2 = issuer(workload('ValidateSession', pools), channels);
    const sweep = await measured(channels, admin, validateLive2, o.stallConcurrency, async () => {
      const line = await server.waitForLog(/"msg":"sweep"/, 30 * 60_000);
      const fields = JSON.parse(line) as { purged: number; batches: number; durationMs?: number };
      return { purged: fields.purged, batches: fields.batches, durationMs: fields.durationMs ?? null, finishedAfterServingMs: performance.now() - servingAt };
    });
    log(`  background sweep of ${sweep.value.purged}: loop delay max ${sweep.loop.maxMs.toFixed(1)} ms${gcNote(sweep.loop)}, WAL up to ${(sweep.walPeakBytes / MB).toFixed(0)} MB`);
    const peakSweepServerMb = memory(server.pid).peakRssBytes / MB;

    return {
      expiredSessions: expired,
      liveSessions: live,
      fillMs,
      baseline: { loop: baseline.loop, load: baseline.load, walPeakBytes: baseline.walPeakBytes },
      purge: { ...purge.value, loop: purge.loop, load: purge.load, walPeakBytes: purge.walPeakBytes },
      sweep: { ...sweep.value, loop: sweep.loop, load: sweep.load, walPeakBytes: sweep.walPeakBytes },
      checkpoint: { ...checkpoint.value, loop: checkpoint.loop, load: checkpoint.load, walPeakBytes: checkpoint.walPeakBytes },
      rss: { withSessionsMb: Math.max(startedMb, afterLoadMb), startedMb, afterLoadMb, afterPurgeMb, peakPurgeServerMb, peakSweepServerMb },
    };
  } finally {
    channels.close();
    admin.close();
    await server.stop();
  }
}
