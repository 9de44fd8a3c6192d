/*
 * What refusing a ValidateSessionStream message over the item limit before
 * decoding saves: one message of --max-message-bytes of empty items (two
 * bytes each), through the generated decoder (an object per item, as a server
 * that did not count them first would make) and through the server's strict
 * decoder (the framing walk stops at the first item past the limit).
 * In-process, no gRPC. Time is CPU time per message, the median of the
 * rounds. Heap: bytes allocated while decoding (V8's GC profiler: the heap's
 * growth plus what each collection in between freed) and bytes still held by
 * the result after a full collection. The heap is measured right after a
 * full collection, which discards V8's optimized code: the refusal's figure
 * is then mostly the tag arrays of the walk, which optimized code avoids.
 */
import { GCProfiler, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ValidateSessionStreamRequest } from '../generated/sessions/v1/session_service';
import { parseSetting, SETTINGS } from '../src/server/settings';
import { decodeStrictly } from '../src/transport/request-decoding';
import { ItemLimitExceeded, StrictValidateSessionStreamRequest } from '../src/transport/stream-request';

export interface DecodeCost {
  cpuUs: number;
  allocatedBytes: number;
  retainedBytes: number;
}

export interface DecodeLimitResults {
  messageBytes: number;
  items: number;
  generated: DecodeCost;
  refused: DecodeCost;
  /** generated / refused. */
  ratio: { cpu: number; allocated: number };
}

/** The server's --max-message-bytes: from --server-settings when given there, else its default. */
function maxMessageBytes(serverSettings: Record<string, string>): number {
  const spec = SETTINGS.find((s) => s.flag === 'max-message-bytes')!;
  const parsed = parseSetting(spec, serverSettings['SESSIOND_MAX_MESSAGE_BYTES'] ?? spec.default);
  if (!parsed.ok) throw new Error(`max-message-bytes: ${parsed.problem}`);
  return parsed.value as number;
}

/** A full collection on demand; the bench runs without --expose-gc. */
function fullGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

function heapUsed(): number {
  return process.memoryUsage().heapUsed;
}

/**
 * Heap bytes `fn` allocates, and those its result still holds after a full
 * collection: the heap's growth across it plus what each collection during
 * it freed, then the growth that survives a collection.
 */
function heapCost(fn: () => unknown[], gc: () => void): { allocated: number; retained: number } {
  gc();
  const before = heapUsed();
  const profiler = new GCProfiler();
  profiler.start();
  const result = fn();
  const stats = profiler.stop();
  const freed = stats.statistics.reduce((n, s) => n + (s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize), 0);
  const allocated = heapUsed() - before + freed;
  gc();
  const retained = heapUsed() - before;
  // Read after the collection, so that the result is alive through it.
  if (result.length === 0) throw new Error('no result');
  return { allocated, retained: Math.max(0, retained) };
}

function cost(decode: () => unknown, perRound: number, rounds: number, gc: () => void): DecodeCost {
  const samples: number[] = [];
  for (let r = 0; r < rounds + 1; r++) {
    const start = process.cpuUsage();
    for (let i = 0; i < perRound; i++) decode();
    const used = process.cpuUsage(start);
    // The first round warms up (JIT) and is not counted.
    if (r > 0) samples.push((used.user + used.system) / perRound);
  }
  const results: unknown[] = new Array(perRound);
  const heap = heapCost(() => {
    for (let i = 0; i < perRound; i++) results[i] = decode();
    return results;
  }, gc);
  return { cpuUs: samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)]!, allocatedBytes: heap.allocated / perRound, retainedBytes: heap.retained / perRound };
}

export function measureDecodeLimit(serverSettings: Record<string, string>, smoke: boolean, log: (line: string) => void): DecodeLimitResults {
  const messageBytes = maxMessageBytes(serverSettings);
  const items = Math.floor(messageBytes / 2);
  const bytes = Buffer.alloc(items * 2);
  for (let i = 0; i < bytes.length; i += 2) bytes[i] = 0x22;
  const gc = fullGc();

  const decoded = ValidateSessionStreamRequest.decode(bytes);
  if (decoded.items.length !== items) throw new Error(`the generated decoder read ${decoded.items.length} items of ${items}`);
  const refuse = () => {
    try {
      decodeStrictly(StrictValidateSessionStreamRequest, bytes);
    } catch (err) {
      if (err instanceof ItemLimitExceeded) return err;
      throw err;
    }
    throw new Error('a message over the item limit was decoded');
  };

  const rounds = smoke ? 2 : 7;
  // The refusal first: the collections the generated decoder's half a million
  // objects bring about also discard V8's optimized code for the walk.
  const refused = cost(refuse, smoke ? 200 : 1000, rounds, gc);
  const generated = cost(() => ValidateSessionStreamRequest.decode(bytes), 1, rounds, gc);
  const ratio = { cpu: generated.cpuUs / refused.cpuUs, allocated: generated.allocatedBytes / refused.allocatedBytes };
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  const kb = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
  log(`  one ${mb(messageBytes)} message of ${items} empty items: generated decoder ${(generated.cpuUs / 1000).toFixed(1)} ms, ` +
    `${mb(generated.allocatedBytes)} allocated, ${mb(generated.retainedBytes)} retained; refused before decoding ${refused.cpuUs.toFixed(1)} us, ` +
    `${kb(refused.allocatedBytes)} allocated, ${kb(refused.retainedBytes)} retained (x${ratio.cpu.toFixed(0)} time, x${ratio.allocated.toFixed(0)} allocated)`);
  return { messageBytes, items, generated, refused, ratio };
}
