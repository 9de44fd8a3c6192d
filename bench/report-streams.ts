/* The threads experiment's and the workers part's tables, and the streaming target with workers. */
import type { TargetCheck } from './report';
import type { ThreadsResults } from './stream-threads';
import { num, table, verdict } from './table';
import type { WorkersResults } from './workers';

export const STREAM_TARGET = 50_000;

export const workersStreamTarget = (w: WorkersResults) => `ValidateSessionStream with 2 workers at ${w.streamConcurrency} in flight`;

/** The streaming target, read with 2 workers: a row skipped is not judged, and says why. */
export function workersTargets(w: WorkersResults | null): TargetCheck[] {
  if (!w) return [];
  const two = w.rows.find((r) => r.workers === 2);
  const value = two?.stream?.rate ?? null;
  return [{
    name: workersStreamTarget(w), target: `>= ${STREAM_TARGET} calls/s`, value, met: value === null ? null : value >= STREAM_TARGET,
    ...(two?.skipped ? { note: `skipped: ${two.skipped}` } : {}),
  }];
}

export function formatThreads(t: ThreadsResults): string {
  const out = [
    `Stream lookups on worker threads (an experiment server: sessiond's lookups and encoders, lookups on its main thread or handed to worker threads by postMessage, ` +
    `each thread with a read-only connection; sessiond's own stream beside it; ${t.checked} answers checked against sessiond's first; ${t.cpus} CPUs shared with the load client):`, '',
  ];
  out.push(table(['server', 'in flight', 'validations/s', 'x main thread', 'p99 ms', 'server CPU us/validation', 'main thread us/validation', 'main thread ceiling/s', 'client us/validation'],
    t.rows.map((r) => [r.name, String(r.concurrency), num(r.summary.rate), num(r.vsMainThread, 2), num(r.summary.p99Ms, 2), num(r.summary.cpuUsPerCall, 1),
      num(r.mainCpuUsPerCall, 1), num(r.mainCpuUsPerCall ? 1e6 / r.mainCpuUsPerCall : null), num(r.summary.clientCpuUsPerCall, 1)])));
  out.push('', '(main thread ceiling: the validations/s at which that thread alone would be busy all the time, with cores to spare for the rest)', '');
  return out.join('\n');
}

export function formatWorkers(w: WorkersResults, targets: TargetCheck[]): string {
  const target = targets.find((t) => t.name === workersStreamTarget(w));
  const out = [
    `Workers (SESSIOND_WORKERS): ValidateSession at ${w.unaryConcurrency} in flight over ${w.channels} connections, ValidateSessionStream at ${w.streamConcurrency} ` +
    `over ${w.streams} streams, server CPU summed over the process tree; Redis GET in the same rounds ` +
    ('skipped' in w.redisServer ? `SKIPPED: ${w.redisServer.skipped}` : `(redis-server ${w.redisServer.version})`), '',
  ];
  out.push(table(['workers', 'processes', 'ValidateSession/s', 'p99 ms', 'server CPU us/call', 'stream validations/s', 'stream p99 ms', 'server CPU us/validation', 'client us/validation', 'note'],
    w.rows.map((r) => r.skipped
      ? [String(r.workers), '-', '-', '-', '-', '-', '-', '-', '-', `SKIPPED: ${r.skipped}`]
      : [String(r.workers), String(r.processes), num(r.unary!.rate), num(r.unary!.p99Ms, 2), num(r.unary!.cpuUsPerCall, 1), num(r.stream!.rate), num(r.stream!.p99Ms, 2),
        num(r.stream!.cpuUsPerCall, 1), num(r.stream!.clientCpuUsPerCall, 1), ''])));
  out.push('', `Scaling, rate at 2 workers / rate at 1 (median of the rounds): ValidateSession ${num(w.scaling.unary, 2)}x (${num(w.scaling.unary && w.scaling.unary / 2, 2)} per worker), ` +
    `stream ${num(w.scaling.stream, 2)}x (${num(w.scaling.stream && w.scaling.stream / 2, 2)} per worker); Redis GET ${num(w.redis?.rate)}/s ` +
    `(redis-server ${num(w.redis?.cpuUsPerCall, 1)} us/GET, client ${num(w.redis?.clientCpuUsPerCall, 1)} us/GET); ` +
    `stream target with 2 workers >= ${STREAM_TARGET}/s: ${verdict(target?.met ?? null)}`, '');
  return out.join('\n');
}
