import { Worker } from 'node:worker_threads';
import { extname, join } from 'node:path';
import { toStorageError } from './sqlite-errors';
import type { CheckpointMode } from '../../domain/storage-admin';
import type { WorkerData, WorkerReply, WorkerRequest } from './checkpoint-worker';

export interface RawCheckpoint {
  /** Set on the worker's own checkpoints: PASSIVE at the threshold, TRUNCATE to apply journal_size_limit. */
  mode?: CheckpointMode;
  busy: boolean;
  log: number;
  checkpointed: number;
  durationMs: number;
}

/**
 * The main-thread side of the checkpoint worker. Requests are answered in
 * order (the worker runs one checkpoint or purge batch at a time on its own
 * connection).
 */
export class Checkpointer {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(r: RawCheckpoint | number): void; reject(e: unknown): void }>();
  private closed: Promise<void> | undefined;
  private exited = false;

  get running(): boolean {
    return !this.exited && !this.closed;
  }

  /**
   * @param onAuto called with each threshold checkpoint the worker ran by itself.
   * @param onExit called if the worker dies before close(): the caller then has
   *   to checkpoint on its own connection again.
   */
  constructor(data: WorkerData, private readonly onAuto: (r: RawCheckpoint) => void, private readonly onExit: () => void) {
    // Same extension as this file: .js when compiled; .ts under tsx, whose
    // loader hooks do not carry over into worker threads, so the worker
    // registers tsx itself before loading the TypeScript source.
    const file = join(__dirname, `checkpoint-worker${extname(__filename)}`);
    this.worker = file.endsWith('.ts')
      ? new Worker(`require('tsx/cjs/api').register(); require(${JSON.stringify(file)});`, { eval: true, workerData: data })
      : new Worker(file, { workerData: data });
    this.worker.unref();
    this.worker.on('message', (reply: WorkerReply) => this.onReply(reply));
    this.worker.on('error', (err) => this.failAll(err));
    this.worker.on('exit', () => {
      this.exited = true;
      if (!this.closed) this.onExit();
      this.failAll(new Error('checkpoint worker exited'));
    });
  }

  /** Runs `PRAGMA wal_checkpoint(mode)` on the worker's connection. */
  checkpoint(mode: string): Promise<RawCheckpoint> {
    return this.request<RawCheckpoint>((id) => ({ id, mode }));
  }

  /**
   * Deletes up to `limit` sessions dead at `now` in one transaction on the
   * worker's connection, which checkpoints before it runs anything else once
   * the batch takes the WAL past the threshold.
   * @returns how many were deleted.
   */
  purge(now: number, limit: number): Promise<number> {
    return this.request<number>((id) => ({ id, purge: { now, limit } }));
  }

  private request<T extends RawCheckpoint | number>(message: (id: number) => WorkerRequest): Promise<T> {
    if (this.closed || this.exited) return Promise.reject(new Error('checkpoint worker is not running'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (r: RawCheckpoint | number) => void, reject });
      this.worker.postMessage(message(id));
    });
  }

  /** Lets a running checkpoint finish, then closes the worker's connection. Safe to call twice. */
  close(): Promise<void> {
    if (this.exited) this.closed ??= Promise.resolve();
    this.closed ??= new Promise<void>((resolve) => {
      const id = this.nextId++;
      this.waiting.set(id, { resolve: () => resolve(), reject: () => resolve() });
      this.worker.postMessage({ id, close: true });
    }).then(() => this.worker.terminate().then(() => undefined));
    return this.closed;
  }

  private onReply(reply: WorkerReply): void {
    if ('error' in reply) {
      const w = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      w?.reject(toStorageError(Object.assign(new Error(reply.error.message), { code: reply.error.code })));
      return;
    }
    if ('purged' in reply) {
      const w = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      w?.resolve(reply.purged);
      return;
    }
    const result = { busy: reply.busy !== 0, log: reply.log, checkpointed: reply.checkpointed, durationMs: reply.durationMs };
    if (reply.auto) {
      this.onAuto({ ...result, mode: reply.mode as CheckpointMode });
      return;
    }
    const w = this.waiting.get(reply.id);
    this.waiting.delete(reply.id);
    w?.resolve(result);
  }

  private failAll(err: unknown): void {
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }
}
