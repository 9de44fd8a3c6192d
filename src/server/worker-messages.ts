import type { MetricSnapshot } from './metrics/metrics';

/*
 * What the primary of --workers and its workers say to each other over
 * node:cluster's IPC channel. Every message carries `sessiond`, so that
 * cluster's own messages (and anything else on the channel) are told apart.
 */

/** From the primary: how many serve; a metrics request; the order to drain and exit. */
export type PrimaryMessage =
  | { sessiond: 'workers'; serving: number; wanted: number }
  | { sessiond: 'metrics'; id: number }
  | { sessiond: 'shutdown'; reason: string };

/** From a worker: it serves (once, after start-up); its metrics, answering a request. */
export type WorkerMessage =
  | { sessiond: 'serving'; address: string; principals: number }
  | { sessiond: 'metrics'; id: number; snapshot: MetricSnapshot | undefined };

export function isPrimaryMessage(m: unknown): m is PrimaryMessage {
  return typeof m === 'object' && m !== null && ['workers', 'metrics', 'shutdown'].includes((m as { sessiond?: unknown }).sessiond as string);
}

export function isWorkerMessage(m: unknown): m is WorkerMessage {
  return typeof m === 'object' && m !== null && ['serving', 'metrics'].includes((m as { sessiond?: unknown }).sessiond as string);
}
