import type { CheckpointMode, CheckpointResult, CheckpointTrigger } from '../domain/storage-admin';
import type { MetricSnapshot } from './metrics/metrics';

/*
 * What the primary of --workers and its workers say to each other over
 * node:cluster's IPC channel. Every message carries `sessiond`, so that
 * cluster's own messages (and anything else on the channel) are told apart.
 */

/** The storage work a worker hands to the primary (SqliteStorage's `primary` hook). */
export interface PrimaryStorage {
  checkpoint(mode: CheckpointMode, trigger: CheckpointTrigger): Promise<CheckpointResult>;
  purgeBatch(now: number, limit: number): Promise<number>;
}

/** A domain error as it crosses the channel: its kind (the status it maps to), message and backend code. */
export interface ErrorData { kind: string; message: string; code?: string | undefined }

/** What a worker asks of the primary's storage: the work its checkpoint worker thread does. */
export type StorageRequest =
  | { op: 'checkpoint'; mode: CheckpointMode; trigger: CheckpointTrigger }
  | { op: 'purge'; now: number; limit: number };

/** From the primary: how many serve; a metrics request; the order to drain and exit; a storage answer. */
export type PrimaryMessage =
  | { sessiond: 'workers'; serving: number; wanted: number }
  | { sessiond: 'metrics'; id: number }
  | { sessiond: 'shutdown'; reason: string }
  | { sessiond: 'storage'; id: number; result?: CheckpointResult | number; error?: ErrorData };

/** From a worker: it serves (once, after start-up); its metrics, answering a request; a storage request. */
export type WorkerMessage =
  | { sessiond: 'serving'; address: string; principals: number }
  | { sessiond: 'metrics'; id: number; snapshot: MetricSnapshot | undefined }
  | { sessiond: 'storage'; id: number; request: StorageRequest };

export function isPrimaryMessage(m: unknown): m is PrimaryMessage {
  return typeof m === 'object' && m !== null && ['workers', 'metrics', 'shutdown', 'storage'].includes((m as { sessiond?: unknown }).sessiond as string);
}

export function isWorkerMessage(m: unknown): m is WorkerMessage {
  return typeof m === 'object' && m !== null && ['serving', 'metrics', 'storage'].includes((m as { sessiond?: unknown }).sessiond as string);
}
