import { FailedPreconditionError, StorageError, StorageFullError, StorageUnavailableError } from '../domain/errors';
import type { CheckpointResult } from '../domain/storage-admin';
import type { App } from './app';
import type { Logger } from './log';
import { isPrimaryMessage, type ErrorData, type PrimaryStorage, type StorageRequest, type WorkerMessage } from './worker-messages';


/**
 * A worker's side of --workers. It listens from the start, so that the
 * storage can hand the primary its checkpoints and purge batches: they run
 * on the primary's checkpoint worker thread, where a TRUNCATE that waits for
 * readers, or a batch of a few hundred deletes, blocks no worker's event loop.
 * Once serving (follow), it tells the primary so, follows what the primary
 * says of the group, answers its metrics requests, and shuts down on its
 * order. When the primary is gone (killed), node:cluster exits the worker at
 * once as its IPC channel closes: no worker outlives its primary, and what it
 * had committed is on disk as after any crash.
 */
export class PrimaryLink {
  private requests = 0;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private app: App | undefined;
  private stop: ((reason: string) => void) | undefined;
  private log: Logger | undefined;

  readonly storage: PrimaryStorage = {
    checkpoint: (mode, trigger) => this.ask({ op: 'checkpoint', mode, trigger }) as Promise<CheckpointResult>,
    purgeBatch: (now, limit) => this.ask({ op: 'purge', now, limit }) as Promise<number>,
  };

  constructor() {
    process.on('message', (m: unknown) => this.onMessage(m));
  }

  /** @param stop the server's own shutdown, as a signal runs it. */
  follow(app: App, log: Logger, stop: (reason: string) => void): void {
    this.app = app;
    this.log = log;
    this.stop = stop;
    send({ sessiond: 'serving', address: app.address, principals: app.principalCount() });
  }

  private ask(request: StorageRequest): Promise<unknown> {
    const id = ++this.requests;
    return new Promise((resolve, reject) => {
      if (!process.connected) {
        reject(new StorageUnavailableError('the primary process is gone; nothing was done'));
        return;
      }
      this.pending.set(id, { resolve, reject });
      send({ sessiond: 'storage', id, request });
    });
  }

  private onMessage(m: unknown): void {
    if (!isPrimaryMessage(m)) return;
    const app = this.app;
    switch (m.sessiond) {
      case 'storage': {
        const waiter = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error) waiter?.reject(toError(m.error));
        else waiter?.resolve(m.result);
        break;
      }
      case 'workers':
        app?.health.setWorkersProblem(m.serving < m.wanted ? `${m.serving} of ${m.wanted} workers serving` : undefined);
        break;
      case 'metrics':
        if (!app) break;
        app.metrics.snapshot().then(
          (snapshot) => send({ sessiond: 'metrics', id: m.id, snapshot }),
          (err: unknown) => {
            this.log?.error('metrics: collection failed', { err });
            send({ sessiond: 'metrics', id: m.id, snapshot: undefined });
          },
        );
        break;
      case 'shutdown':
        this.stop?.(`primary: ${m.reason}`);
        break;
    }
  }
}

function send(m: WorkerMessage): void {
  if (process.connected) process.send!(m, undefined, undefined, () => undefined);
}

/** The primary's error again, with the kind that decides its status (errors map to codes in transport/status.ts). */
function toError(e: ErrorData): Error {
  switch (e.kind) {
    case 'failed-precondition': return new FailedPreconditionError(e.message);
    case 'unavailable': return new StorageUnavailableError(e.message);
    case 'resource-exhausted': return new StorageFullError(e.message);
    default: return new StorageError(e.message, e.code);
  }
}
