import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { status } from '@grpc/grpc-js';
import type { CheckpointResult } from '../../domain/storage-admin';
import type { MaybePromise } from '../../domain/session-repository';

/** The storage figures the gauges show; the WAL ones only on a backend with a WAL. */
export interface StorageFigures {
  readonly walFrames?: number;
  readonly walCheckpointedFrames?: number;
  readonly walBytes?: number;
  readonly databaseBytes: number;
}

/** What a scrape reads at collect time: cheap reads of state the app already keeps. */
export interface MetricSources {
  /** Storage figures; may throw (or reject) once the database is closed or unreachable. */
  storageStatus(): MaybePromise<StorageFigures>;
  /** Whether the backend has a WAL of its own (SQLite): the WAL gauges are served only then. */
  wal: boolean;
  /** Live and dead (expired or revoked, not yet purged) sessions: a table scan, so cached. */
  sessionCounts(): MaybePromise<{ live: number; dead: number }>;
  /** Whether health answers SERVING. */
  serving(): boolean;
}

/** One method's counts since start-up; handled by status code, with the labels of each. */
interface RpcCounts {
  readonly base: Record<string, string>;
  started: number;
  received: number;
  sent: number;
  readonly handled: Map<status, [Record<string, string>, number]>;
}

/** One registry's metrics as plain data (prom-client's JSON form), fit for IPC. */
export type MetricSnapshot = MetricObjectWithValues<MetricValue<string>>[];

export type RpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';
export type PurgeTrigger = 'sweep' | 'admin';

/** The metrics of one gRPC method, with the label lookups done once. */
export interface RpcMetrics {
  started(): void;
  handled(code: status, seconds: number): void;
  received(): void;
  sent(): void;
}

/** Session counts scan the table; a scrape every few seconds must not turn into a scan each time. */
const SESSION_COUNT_CACHE_MS = 5_000;
/** One scrape reads several storage gauges; they share one status read. */
const STORAGE_STATUS_CACHE_MS = 1_000;

const RPC_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const CHECKPOINT_SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const SWEEP_SECONDS = [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60];

/**
 * Every metric sessiond exports, on a Registry of its own (never prom-client's
 * global one): several servers in one process, as in the tests, keep separate
 * counts. RPC metrics follow go-grpc-prometheus's names and labels so that
 * existing gRPC dashboards work; grpc_code is the canonical status name
 * (OK, INVALID_ARGUMENT, ...).
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly rpcs = new Map<string, RpcMetrics>();
  private processMetrics = false;

  /** Every method's call counts so far, read into the counters below at scrape time. */
  private readonly rpcCounts: RpcCounts[] = [];
  private readonly rpcSeconds = new Histogram({
    name: 'grpc_server_handling_seconds', help: 'Time from the start of an RPC to its status, by status code.',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method', 'grpc_code'] as const, buckets: RPC_SECONDS, registers: [this.registry],
  });

  constructor() {
    this.rpcCounter('grpc_server_started_total', 'RPCs started on the server.', (c) => [[c.base, c.started]]);
    this.rpcCounter('grpc_server_handled_total', 'RPCs completed on the server, by status code.', (c) => c.handled.values(), true);
    this.rpcCounter('grpc_server_msg_received_total', 'Request messages received on the server.', (c) => [[c.base, c.received]]);
    this.rpcCounter('grpc_server_msg_sent_total', 'Response messages sent by the server.', (c) => [[c.base, c.sent]]);
  }

  private readonly checkpoints = new Counter({
    name: 'sessiond_checkpoints_total', help: 'WAL checkpoints run, by mode and trigger (admin, auto, shutdown).',
    labelNames: ['mode', 'trigger'] as const, registers: [this.registry],
  });
  private readonly checkpointsBusy = new Counter({
    name: 'sessiond_checkpoints_busy_total', help: 'WAL checkpoints that could not complete (SQLite busy = 1), by mode and trigger.',
    labelNames: ['mode', 'trigger'] as const, registers: [this.registry],
  });
  private readonly checkpointSeconds = new Histogram({
    name: 'sessiond_checkpoint_duration_seconds', help: 'How long WAL checkpoints took, by mode and trigger.',
    labelNames: ['mode', 'trigger'] as const, buckets: CHECKPOINT_SECONDS, registers: [this.registry],
  });

  private readonly sweepRuns = new Counter({
    name: 'sessiond_sweep_runs_total', help: 'Purges of expired and revoked sessions, by trigger (sweep, admin) and result (ok, error).',
    labelNames: ['trigger', 'result'] as const, registers: [this.registry],
  });
  private readonly sweepPurged = new Counter({
    name: 'sessiond_sweep_purged_sessions_total', help: 'Expired and revoked sessions deleted, by trigger (sweep, admin).',
    labelNames: ['trigger'] as const, registers: [this.registry],
  });
  private readonly sweepSeconds = new Histogram({
    name: 'sessiond_sweep_duration_seconds', help: 'How long purges took, by trigger (sweep, admin).',
    labelNames: ['trigger'] as const, buckets: SWEEP_SECONDS, registers: [this.registry],
  });

  private readonly principalReloads = new Counter({
    name: 'sessiond_principals_reloads_total', help: 'Reloads of the principals file, by result (ok; failed: the previous principals stay in force).',
    labelNames: ['result'] as const, registers: [this.registry],
  });
  private readonly principalCount = new Gauge({
    // With --workers every worker loads the file: the group has the set of any one of them, not their sum.
    name: 'sessiond_principals', help: 'Principals in force (0: protected mode, loopback callers only).', registers: [this.registry], aggregator: 'max',
  });
  private readonly principalsStale = new Gauge({
    name: 'sessiond_principals_reload_failing', help: '1 while the principals file on disk could not be loaded at the last try (the previous set serves), else 0.',
    registers: [this.registry], aggregator: 'max',
  });
  private readonly shedWrites = new Counter({
    name: 'sessiond_writes_shed_total', help: 'Writes refused with UNAVAILABLE because too many were already waiting to be committed.', registers: [this.registry],
  });

  /** Records a load of the principals (start-up or reload): `count` in force, or undefined when it failed and the old set stays. */
  principals(count: number | undefined, reload: boolean): void {
    if (reload) this.principalReloads.inc({ result: count === undefined ? 'failed' : 'ok' });
    this.principalsStale.set(count === undefined ? 1 : 0);
    if (count !== undefined) this.principalCount.set(count);
  }

  /** A write refused by load shedding. */
  writeShed(): void {
    this.shedWrites.inc();
  }

  /** The RPC metrics of one method (cached per method path, e.g. "/sessions.v1.SessionService/CreateSession"). */
  rpc(path: string, type: RpcType): RpcMetrics {
    let m = this.rpcs.get(path);
    if (m) return m;
    const slash = path.lastIndexOf('/');
    const base = { grpc_type: type, grpc_service: path.slice(1, slash), grpc_method: path.slice(slash + 1) };
    const counts: RpcCounts = { base, started: 0, received: 0, sent: 0, handled: new Map() };
    this.rpcCounts.push(counts);
    const seconds = new Map<status, Histogram.Internal<string>>();
    m = {
      started: () => counts.started++,
      received: () => counts.received++,
      sent: () => counts.sent++,
      handled: (code, s) => {
        let h = counts.handled.get(code);
        if (!h) {
          const labels = { ...base, grpc_code: status[code] ?? String(code) };
          h = [labels, 0];
          counts.handled.set(code, h);
          seconds.set(code, this.rpcSeconds.labels(labels));
        }
        h[1]++;
        seconds.get(code)!.observe(s);
      },
    };
    this.rpcs.set(path, m);
    return m;
  }

  /** Records one checkpoint, whatever ran it (the hook where SqliteStorage records checkpoints). */
  checkpoint(r: CheckpointResult): void {
    const labels = { mode: r.mode, trigger: r.trigger };
    this.checkpoints.inc(labels);
    if (r.busy) this.checkpointsBusy.inc(labels);
    this.checkpointSeconds.observe(labels, r.durationMs / 1000);
  }

  /** Records one purge run; `purged` undefined means it failed. */
  purge(trigger: PurgeTrigger, purged: number | undefined, durationMs: number): void {
    this.sweepRuns.inc({ trigger, result: purged === undefined ? 'error' : 'ok' });
    if (purged !== undefined) this.sweepPurged.inc({ trigger }, purged);
    this.sweepSeconds.observe({ trigger }, durationMs / 1000);
  }

  /**
   * A counter of every method's calls, kept as plain numbers per call and set
   * at scrape time: prom-client hashes and checks the labels on each inc, four
   * times per call otherwise.
   */
  private rpcCounter(name: string, help: string, read: (c: RpcCounts) => Iterable<readonly [Record<string, string>, number]>, withCode = false): void {
    const counts = this.rpcCounts;
    new Counter({
      name, help, registers: [this.registry],
      labelNames: withCode ? ['grpc_type', 'grpc_service', 'grpc_method', 'grpc_code'] : ['grpc_type', 'grpc_service', 'grpc_method'],
      collect() {
        this.reset();
        for (const c of counts) for (const [labels, n] of read(c)) if (n > 0) this.inc(labels, n);
      },
    });
  }

  /**
   * Gauges read at scrape time: sessions, WAL and database sizes, health.
   * A read that fails (the database is closing) leaves the gauge at its last value.
   */
  watch(sources: MetricSources): void {
    const counts = cached(() => sources.sessionCounts(), SESSION_COUNT_CACHE_MS);
    const storage = cached(() => sources.storageStatus(), STORAGE_STATUS_CACHE_MS);
    // prom-client awaits an async collect: the PostgreSQL backend reads its figures with a query.
    const gauge = (name: string, help: string, read: () => Promise<number | undefined>) =>
      new Gauge({
        name, help, registers: [this.registry],
        async collect() {
          const v = await attempt(read);
          if (v !== undefined) this.set(v);
        },
      });
    new Gauge({
      name: 'sessiond_sessions', help: `Sessions in the database: live, or expired (expired or revoked, not yet purged). Read at most every ${SESSION_COUNT_CACHE_MS / 1000}s.`,
      labelNames: ['state'] as const, registers: [this.registry],
      async collect() {
        const c = await attempt(counts);
        if (!c) return;
        this.set({ state: 'live' }, c.live);
        this.set({ state: 'expired' }, c.dead);
      },
    });
    if (sources.wal) {
      gauge('sessiond_wal_frames', 'Frames in the WAL (the WAL index mxFrame); 0 when not in WAL mode.', async () => (await storage()).walFrames);
      gauge('sessiond_wal_checkpointed_frames', 'WAL frames already copied back into the database (nBackfill).', async () => (await storage()).walCheckpointedFrames);
      gauge('sessiond_wal_bytes', 'Size of the -wal file in bytes.', async () => (await storage()).walBytes);
    }
    gauge('sessiond_database_bytes', 'Size of the main database file in bytes (PostgreSQL: the sessions table and its indexes).', async () => (await storage()).databaseBytes);
    gauge('sessiond_serving', '1 while health answers SERVING, 0 otherwise.', async () => (sources.serving() ? 1 : 0));
  }

  /**
   * Adds prom-client's default process and Node.js metrics (CPU, memory, file
   * descriptors, GC, event-loop lag) to this registry. Once per instance: they
   * start a GC observer and an event-loop delay monitor that live as long as the process.
   */
  enableProcessMetrics(): void {
    if (this.processMetrics) return;
    this.processMetrics = true;
    collectDefaultMetrics({ register: this.registry });
  }

  /** Every metric's current values, as a worker of --workers sends them to the primary. */
  snapshot(): Promise<MetricSnapshot> {
    return this.registry.getMetricsAsJSON();
  }

  /**
   * The exposition text and its content type; with the snapshots of --workers'
   * workers, theirs and this registry's together: counters and histograms
   * summed, gauges by their aggregator (sum unless set).
   */
  async exposition(workers: readonly MetricSnapshot[] = []): Promise<{ contentType: string; body: string }> {
    if (workers.length === 0) return { contentType: this.registry.contentType, body: await this.registry.metrics() };
    const merged = AggregatorRegistry.aggregate([await this.snapshot(), ...workers]);
    return { contentType: merged.contentType, body: await merged.metrics() };
  }
}

/** One read per ttl, shared by the scrapes within it; a failed read is not kept. */
function cached<T>(read: () => T | Promise<T>, ttlMs: number): () => Promise<T> {
  let value: Promise<T> | undefined;
  let at = -Infinity;
  return () => {
    const now = performance.now();
    if (value === undefined || now - at >= ttlMs) {
      const reading = (async () => read())();
      reading.catch(() => {
        if (value === reading) value = undefined;
      });
      value = reading;
      at = now;
    }
    return value;
  };
}

async function attempt<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch {
    return undefined;
  }
}
