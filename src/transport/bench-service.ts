import type { Server, ServiceDefinition, UntypedServiceImplementation, handleUnaryCall } from '@grpc/grpc-js';
import { constants, monitorEventLoopDelay, PerformanceObserver, type IntervalHistogram, type PerformanceEntry } from 'node:perf_hooks';

/*
 * BENCHMARK ONLY (`--bench-service`, off by default; `make bench` turns it on
 * for the servers it starts). A raw grpc-js service with identity (Buffer)
 * serializers, so that it needs nothing in proto/ and reflection never lists it:
 *
 *   /sessiond.bench.v1.Bench/Empty           empty in, empty out: the transport's
 *                                            own ceiling, the bench's baseline
 *   /sessiond.bench.v1.Bench/Sized           answers as many zero bytes as the request
 *                                            asks for (decimal text, at most 64 KiB):
 *                                            the transport's cost of an answer's size
 *   /sessiond.bench.v1.Bench/LoopDelayStart  starts a fresh event-loop delay histogram,
 *                                            and records garbage collections
 *   /sessiond.bench.v1.Bench/LoopDelayStop   stops both; answers their figures as JSON
 *
 * The event-loop delay is measured here, inside the server process, with
 * perf_hooks.monitorEventLoopDelay; it runs only between Start and Stop, so its
 * timer costs nothing during the throughput windows.
 */
export const BENCH_SERVICE = 'sessiond.bench.v1.Bench';

/** What LoopDelayStop answers, in milliseconds. */
export interface LoopDelayFigures {
  maxMs: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** Timer samples taken (one per resolution interval, fewer while the loop was blocked). */
  samples: number;
  /** How long the histogram ran. */
  durationMs: number;
  /**
   * V8's garbage collections on the main thread meanwhile (perf_hooks 'gc'
   * entries): each is a pause of the event loop, so they say how much of the
   * longest block was the collector's.
   */
  gc: GcFigures;
}

export interface GcFigures {
  count: number;
  /** Major (mark-compact) collections among them. */
  major: number;
  totalMs: number;
  /** The longest collection, and its kind: major, minor, incremental or weakcb. */
  maxMs: number;
  maxKind: string;
}

/** Sampling interval: a block of B ms is seen as at least B - resolution ms. */
const RESOLUTION_MS = 1;

const identity = (b: Buffer) => b;
const MAX_SIZED_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);

function method(name: string) {
  return {
    path: `/${BENCH_SERVICE}/${name}`,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: name,
  };
}

const definition: ServiceDefinition = {
  Empty: method('Empty'),
  Sized: method('Sized'),
  LoopDelayStart: method('LoopDelayStart'),
  LoopDelayStop: method('LoopDelayStop'),
};

const ns = (n: number) => n / 1e6;

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

function gcFigures(entries: PerformanceEntry[]): GcFigures {
  const figures: GcFigures = { count: entries.length, major: 0, totalMs: 0, maxMs: 0, maxKind: '' };
  for (const e of entries) {
    const kind = GC_KINDS[((e as { detail?: { kind?: number } }).detail)?.kind ?? -1] ?? 'other';
    if (kind === 'major') figures.major++;
    figures.totalMs += e.duration;
    if (e.duration > figures.maxMs) Object.assign(figures, { maxMs: e.duration, maxKind: kind });
  }
  return figures;
}

/** Registers the benchmark-only service on `server`. */
export function addBenchService(server: Server): void {
  let histogram: IntervalHistogram | undefined;
  let collections: { observer: PerformanceObserver; entries: PerformanceEntry[] } | undefined;
  let started = 0;
  const empty: handleUnaryCall<Buffer, Buffer> = (_call, callback) => callback(null, EMPTY);
  const answers = new Map<number, Buffer>();
  const sized: handleUnaryCall<Buffer, Buffer> = (call, callback) => {
    const n = Math.min(Math.max(Number(call.request.toString('latin1')) || 0, 0), MAX_SIZED_BYTES);
    let answer = answers.get(n);
    if (!answer) answers.set(n, (answer = Buffer.alloc(n)));
    callback(null, answer);
  };
  const start: handleUnaryCall<Buffer, Buffer> = (_call, callback) => {
    histogram?.disable();
    collections?.observer.disconnect();
    histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    histogram.enable();
    const entries: PerformanceEntry[] = [];
    const observer = new PerformanceObserver((list) => entries.push(...list.getEntries()));
    observer.observe({ entryTypes: ['gc'] });
    collections = { observer, entries };
    started = performance.now();
    callback(null, EMPTY);
  };
  const stop: handleUnaryCall<Buffer, Buffer> = (_call, callback) => {
    const h = histogram;
    histogram = undefined;
    h?.disable();
    const c = collections;
    collections = undefined;
    // Entries are delivered to the callback later, in batches: take the ones still queued.
    if (c) c.entries.push(...c.observer.takeRecords());
    c?.observer.disconnect();
    const gc = gcFigures(c?.entries ?? []);
    // Before any sample, the histogram reports min/max/mean as huge or NaN.
    const figures: LoopDelayFigures = h && h.count > 0
      ? { maxMs: ns(h.max), p50Ms: ns(h.percentile(50)), p99Ms: ns(h.percentile(99)), meanMs: ns(h.mean), samples: h.count, durationMs: performance.now() - started, gc }
      : { maxMs: 0, p50Ms: 0, p99Ms: 0, meanMs: 0, samples: 0, durationMs: h ? performance.now() - started : 0, gc };
    callback(null, Buffer.from(JSON.stringify(figures)));
  };
  const handlers: UntypedServiceImplementation = { Empty: empty, Sized: sized, LoopDelayStart: start, LoopDelayStop: stop };
  server.addService(definition, handlers);
}
