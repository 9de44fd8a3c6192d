import type { App } from './app';
import type { Logger } from './log';
import { isPrimaryMessage, type WorkerMessage } from './worker-messages';

/**
 * A worker's side of --workers: it tells the primary it serves, follows what
 * the primary says of the group, answers its metrics requests, and shuts down
 * on its order. When the primary is gone (killed), node:cluster exits the
 * worker at once as its IPC channel closes: no worker outlives its primary,
 * and what it had committed is on disk as after any crash.
 * @param stop the server's own shutdown, as a signal runs it.
 */
export function followPrimary(app: App, log: Logger, stop: (reason: string) => void): void {
  const send = (m: WorkerMessage) => {
    if (process.connected) process.send!(m, undefined, undefined, () => undefined);
  };
  process.on('message', (m: unknown) => {
    if (!isPrimaryMessage(m)) return;
    switch (m.sessiond) {
      case 'workers':
        app.health.setWorkersProblem(m.serving < m.wanted ? `${m.serving} of ${m.wanted} workers serving` : undefined);
        break;
      case 'metrics':
        app.metrics.snapshot().then(
          (snapshot) => send({ sessiond: 'metrics', id: m.id, snapshot }),
          (err: unknown) => {
            log.error('metrics: collection failed', { err });
            send({ sessiond: 'metrics', id: m.id, snapshot: undefined });
          },
        );
        break;
      case 'shutdown':
        stop(`primary: ${m.reason}`);
        break;
    }
  });
  send({ sessiond: 'serving', address: app.address, principals: app.principalCount() });
}
