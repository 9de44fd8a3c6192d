import cluster, { type Worker } from 'node:cluster';
import { WORKER_SLOT_VARIABLE } from './config';
import type { Logger } from './log';
import type { MetricSnapshot } from './metrics/metrics';
import { isWorkerMessage, type PrimaryMessage, type StorageRequest } from './worker-messages';
import type { CheckpointResult } from '../domain/storage-admin';

/** The first restart of a crashed worker waits this long; each crash soon after the last doubles it. */
const FIRST_RESTART_MS = 250;
const MAX_RESTART_MS = 30_000;
/** A worker that served this long before it exited restarts after FIRST_RESTART_MS again. */
const STEADY_MS = 30_000;
/** A scrape waits this long for each worker's metrics; a worker that has not answered is left out of that scrape. */
const SNAPSHOT_TIMEOUT_MS = 5_000;

interface Place {
  readonly slot: number;
  worker: Worker | undefined;
  serving: boolean;
  startedAt: number;
  restartDelayMs: number;
  restartTimer: NodeJS.Timeout | undefined;
}

/**
 * The worker processes of --workers, as the primary supervises them: N places,
 * each filled by one node:cluster worker, refilled with backoff when its worker
 * exits. Every change of how many serve is told to every worker, whose health
 * is NOT_SERVING while fewer than N do.
 *
 * node:cluster, not SO_REUSEPORT: Node 20 ignores net's reusePort option, and
 * the primary holding the one listening socket means a connection that arrives
 * while a worker restarts waits in its backlog instead of being refused.
 */
export class Fleet {
  private readonly places: Place[];
  private stopping = false;
  private served = false;
  private starting: { resolve(address: string): void; reject(err: Error): void } | undefined;
  private address = '';
  /** Principals in force in the worker that started serving last: every worker reads the one file. */
  principals = 0;
  private requests = 0;
  private readonly pending = new Map<number, (snapshot: MetricSnapshot | undefined) => void>();

  /**
   * @param storageWork runs what a worker's storage hands over (checkpoints,
   *   purge batches) on the primary's storage; absent, a request is refused.
   */
  constructor(
    readonly wanted: number,
    private readonly log: Logger,
    private readonly onChange: (serving: number, wanted: number, exited: boolean) => void,
    private readonly storageWork?: (request: StorageRequest) => Promise<CheckpointResult | number>,
  ) {
    this.places = Array.from({ length: wanted }, (_, i) => ({ slot: i + 1, worker: undefined, serving: false, startedAt: 0, restartDelayMs: FIRST_RESTART_MS, restartTimer: undefined }));
  }

  get serving(): number {
    return this.places.filter((p) => p.serving).length;
  }

  /**
   * Forks every worker.
   * @returns the address they serve, once all N serve.
   * @throws Error when a worker exits before then (it could not open the database or bind the port).
   */
  start(): Promise<string> {
    const started = new Promise<string>((resolve, reject) => (this.starting = { resolve, reject }));
    for (const place of this.places) this.fork(place);
    this.onChange(0, this.wanted, false);
    return started;
  }

  /** Asks every serving worker for its metrics; a worker that does not answer in time is left out. */
  snapshots(): Promise<MetricSnapshot[]> {
    const asks = this.places.filter((p) => p.serving && p.worker).map((p) => new Promise<MetricSnapshot | undefined>((resolve) => {
      const id = ++this.requests;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.log.warn('metrics: a worker did not send its metrics in time; this scrape leaves it out', { slot: p.slot, pid: p.worker?.process.pid });
        resolve(undefined);
      }, SNAPSHOT_TIMEOUT_MS);
      this.pending.set(id, (snapshot) => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(snapshot);
      });
      if (!send(p.worker!, { sessiond: 'metrics', id })) this.pending.get(id)!(undefined);
    }));
    return Promise.all(asks).then((all) => all.filter((s): s is MetricSnapshot => s !== undefined));
  }

  /** Passes a signal on to every worker (SIGHUP: each reloads the principals). */
  signal(signal: NodeJS.Signals): void {
    for (const p of this.places) p.worker?.process.kill(signal);
  }

  /**
   * Tells every worker to shut down (each drains its calls, as one server does)
   * and waits for all to exit; past `deadlineMs` the rest are killed.
   * @returns whether every worker exited cleanly (status 0).
   */
  async stop(reason: string, deadlineMs: number): Promise<boolean> {
    this.stopping = true;
    let clean = true;
    for (const p of this.places) clearTimeout(p.restartTimer);
    const live = this.places.filter((p) => p.worker);
    const exits = live.map((p) => new Promise<void>((resolve) => {
      const serving = p.serving;
      p.worker!.once('exit', (code: number | null, signal: string | null) => {
        // A worker still starting has no calls to drain: SIGTERM ends it before it listens for the primary.
        if (code !== 0 && !(signal === 'SIGTERM' && !serving)) clean = false;
        resolve();
      });
    }));
    for (const p of live) if (!p.serving || !send(p.worker!, { sessiond: 'shutdown', reason })) p.worker!.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const p of this.places) {
        if (!p.worker) continue;
        this.log.warn('shutdown: a worker did not exit in time; killing it', { slot: p.slot, pid: p.worker.process.pid });
        p.worker.process.kill('SIGKILL');
      }
    }, deadlineMs);
    await Promise.all(exits);
    clearTimeout(timer);
    return clean;
  }

  /** Kills every worker at once (a second signal). */
  kill(): void {
    this.stopping = true;
    for (const p of this.places) p.worker?.process.kill('SIGKILL');
  }

  private fork(place: Place): void {
    place.restartTimer = undefined;
    const worker = cluster.fork({ [WORKER_SLOT_VARIABLE]: String(place.slot) });
    place.worker = worker;
    place.serving = false;
    place.startedAt = Date.now();
    worker.on('message', (message: unknown) => this.onMessage(place, worker, message));
    worker.on('exit', (code: number | null, signal: string | null) => this.onExit(place, worker, code, signal));
  }

  private onMessage(place: Place, worker: Worker, message: unknown): void {
    if (!isWorkerMessage(message) || place.worker !== worker) return;
    if (message.sessiond === 'metrics') {
      this.pending.get(message.id)?.(message.snapshot);
      return;
    }
    if (message.sessiond === 'storage') {
      const { id, request } = message;
      const work = this.storageWork ? this.storageWork(request) : Promise.reject(new Error(`no storage here for ${request.op}`));
      work.then(
        (result) => send(worker, { sessiond: 'storage', id, result }),
        (err: { kind?: string; message?: string; code?: string }) => send(worker, { sessiond: 'storage', id, error: { kind: err.kind ?? 'internal', message: err.message ?? String(err), code: err.code } }),
      );
      return;
    }
    place.serving = true;
    this.address = message.address;
    this.principals = message.principals;
    this.tellWorkers(false);
    if (!this.served && this.serving === this.wanted) {
      this.served = true;
      this.starting?.resolve(this.address);
    }
  }

  private onExit(place: Place, worker: Worker, code: number | null, signal: string | null): void {
    if (place.worker !== worker) return;
    place.worker = undefined;
    place.serving = false;
    const exit = { slot: place.slot, pid: worker.process.pid, code, signal };
    if (this.stopping) {
      this.log.info('shutdown: worker exited', exit);
      this.onChange(this.serving, this.wanted, false);
      return;
    }
    if (!this.served) {
      // A worker that cannot start (the port is taken, the database cannot be
      // opened) would fail the same way again: the start-up fails instead.
      this.starting?.reject(new Error(`worker ${place.slot} exited during start-up (${signal ?? `status ${code}`}); its log lines above say why`));
      return;
    }
    const delay = Date.now() - place.startedAt >= STEADY_MS ? FIRST_RESTART_MS : place.restartDelayMs;
    place.restartDelayMs = Math.min(delay * 2, MAX_RESTART_MS);
    this.log.error('worker exited; health is NOT_SERVING until it is replaced', { ...exit, restartInMs: delay });
    this.tellWorkers(true);
    place.restartTimer = setTimeout(() => {
      if (!this.stopping) this.fork(place);
    }, delay);
  }

  private tellWorkers(exited: boolean): void {
    const serving = this.serving;
    this.onChange(serving, this.wanted, exited);
    for (const p of this.places) if (p.worker) send(p.worker, { sessiond: 'workers', serving, wanted: this.wanted });
  }
}

/** Sends one message; false when the worker's channel is already closed (it is exiting). */
function send(worker: Worker, message: PrimaryMessage): boolean {
  if (!worker.isConnected()) return false;
  // The callback takes the error of a channel that closed meanwhile: the exit handler deals with the worker.
  worker.send(message, () => undefined);
  return true;
}
