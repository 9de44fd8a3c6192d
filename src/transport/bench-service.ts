import type { Server, ServiceDefinition, UntypedServiceImplementation, handleUnaryCall } from '@grpc/grpc-js';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

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
 *   /sessiond.bench.v1.Bench/LoopDelayStart  starts a fresh event-loop delay histogram
 *   /sessiond.bench.v1.Bench/LoopDelayStop   stops it; answers its figures as JSON
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

/** Registers the benchmark-only service on `server`. */
export function addBenchService(server: Server): void {
  let histogram: IntervalHistogram | undefined;
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
    histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    histogram.enable();
    started = performance.now();
    callback(null, EMPTY);
  };
  const stop: handleUnaryCall<Buffer, Buffer> = (_call, callback) => {
    const h = histogram;
    histogram = undefined;
    h?.disable();
    // Before any sample, the histogram reports min/max/mean as huge or NaN.
    const figures: LoopDelayFigures = h && h.count > 0
      ? { maxMs: ns(h.max), p50Ms: ns(h.percentile(50)), p99Ms: ns(h.percentile(99)), meanMs: ns(h.mean), samples: h.count, durationMs: performance.now() - started }
      : { maxMs: 0, p50Ms: 0, p99Ms: 0, meanMs: 0, samples: 0, durationMs: h ? performance.now() - started : 0 };
    callback(null, Buffer.from(JSON.stringify(figures)));
  };
  const handlers: UntypedServiceImplementation = { Empty: empty, Sized: sized, LoopDelayStart: start, LoopDelayStop: stop };
  server.addService(definition, handlers);
}
