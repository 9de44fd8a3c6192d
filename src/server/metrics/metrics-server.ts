import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log';
import type { Metrics } from './metrics';

export interface MetricsServer {
  /** The port bound (the configured port may be 0). */
  readonly port: number;
  /** host:port as bound, for the log. */
  readonly address: string;
  /** Stops listening and closes open scrape connections. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Serves the Prometheus text exposition at GET /metrics on plain HTTP.
 * Anything else is 404 (405 for other methods on /metrics).
 * @param listen host:port, as validated by the config loader ("[::1]:9464" for IPv6).
 * @throws Error naming the address when it cannot be bound.
 */
export async function startMetricsServer(listen: string, metrics: Pick<Metrics, 'exposition'>, log: Logger): Promise<MetricsServer> {
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    metrics.exposition().then(
      ({ contentType, body }) => {
        res.writeHead(200, { 'content-type': contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        log.error('metrics: collection failed', { err });
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('metrics collection failed; the server log has the details\n');
      },
    );
  });
  // A scraper that stops reading must not pin a connection for good.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  await listenOn(server, host, Number(listen.slice(colon + 1)), listen);
  server.on('error', (err) => log.error('metrics: server error', { err }));
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    port,
    address: `${listen.slice(0, colon)}:${port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        // close() waits for keep-alive connections, which Prometheus holds open between scrapes.
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function listenOn(server: Server, host: string, port: number, listen: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new Error(`cannot serve metrics on ${listen}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
