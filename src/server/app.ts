import { Server } from '@grpc/grpc-js';
import { AdminServiceService } from '../../generated/sessions/v1/admin_service';
import type { Config } from './config';
import { systemClock, type Clock } from '../domain/clock';
import type { SessionManager } from '../domain/session-manager';
import type { Logger } from './log';
import { Metrics } from './metrics/metrics';
import { startMetricsServer, type MetricsServer } from './metrics/metrics-server';
import type { SqliteStorage, StorageHooks } from '../storage/sqlite/sqlite-storage';
import type { StorageBackend } from '../domain/storage-admin';
import { targetOf } from '../shared/database-url';
import { Sweeper } from './sweeper';
import { openStorage, sessionsOn, watchStorage } from './storage-setup';
import { PrincipalsSource } from './principals-source';
import { adminHandlers } from '../transport/admin-handlers';
import { Authorizer } from '../transport/authorize';
import { Callers } from '../transport/callers';
import { callObserver } from '../transport/call-observer';
import { addBenchService } from '../transport/bench-service';
import { Health } from '../transport/health';
import { addReflection } from '../transport/reflection';
import { SafeDecodingServer } from '../transport/request-decoding';
import { bind, serverChannelOptions, serverCredentials, transportSecurity } from '../transport/server';
import { sessionHandlers, sessionService } from '../transport/session-handlers';
import { OpenStreams } from '../transport/open-streams';
import type { PrimaryStorage } from './worker-messages';

export interface App {
  /** The port bound (useful with a listen port of 0). */
  readonly port: number;
  readonly address: string;
  readonly sessions: SessionManager;
  readonly storage: StorageBackend;
  /** The same storage when the backend is SQLite, with its SQLite-only parts; undefined on PostgreSQL. */
  readonly sqlite: SqliteStorage | undefined;
  readonly health: Health;
  readonly sweeper: Sweeper;
  /** This server's Prometheus registry (served over HTTP when metricsListen is set). */
  readonly metrics: Metrics;
  /** The port of the /metrics endpoint; undefined when metrics are not served. */
  readonly metricsPort: number | undefined;
  /** Runs the shutdown sequence once; later calls return the same promise. */
  shutdown(reason: string): Promise<void>;
  /** Cancels in-flight calls at once and skips the drain (a second signal). */
  forceShutdown(): void;
  /** Principals in force now (0: protected mode). */
  principalCount(): number;
  /** Reads the principals file again (SIGHUP); on a problem the principals in force stay. @returns whether the new set is in force. */
  reloadPrincipals(reason: string): boolean;
}

export interface AppOptions {
  clock?: Clock;
  log: Logger;
  /** A disk of the test's own for the syncs after COMMIT; never set in production. */
  storageHooks?: Pick<StorageHooks, 'fsync'>;
  /**
   * A worker of --workers, in its place (1..N): it serves the port and leaves
   * the checkpoints, the sweep, the storage gauges and /metrics to the
   * primary (cluster-primary.ts).
   */
  worker?: { slot: number; primary: PrimaryStorage };
}

/**
 * Start-up in order: TLS files -> storage (open, verify pragmas, migrate) -> domain ->
 * gRPC services -> bind -> health SERVING -> background sweep and probe.
 * @throws Error when storage cannot be opened or the address cannot be bound;
 *   nothing is left open then.
 */
export async function startApp(config: Config, { clock = systemClock, log, storageHooks, worker }: AppOptions): Promise<App> {
  // TLS files first: a bad one fails start-up before the database is opened.
  const credentials = serverCredentials(config.server.tls);
  const metrics = new Metrics();
  const callers = new Callers({ allowUnauthenticated: config.server.allowUnauthenticated });
  // Streams are made further down; a reload only happens once the server is serving.
  let streams: OpenStreams | undefined;
  const principals = new PrincipalsSource(config.server, callers, log, metrics, () => streams?.recheckAll());
  // Before storage: a principals file that changed since the config was checked fails start-up with nothing opened.
  principals.start();
  if (callers.size === 0) {
    if (config.server.allowUnauthenticated) log.warn('no principals and allow-unauthenticated: every caller that reaches the port may do anything', { listen: config.server.listen });
    else log.info('protected mode: no principals are configured, so only loopback callers are served', { listen: config.server.listen });
  }
  let opened;
  try {
    opened = await openStorage(config, log, metrics, { primary: worker?.primary, hooks: storageHooks });
  } catch (err) {
    principals.stop();
    throw err;
  }
  const { storage, sqlite, observer: storageObserver } = opened;
  const { sessions, feed } = sessionsOn(storage, config, clock);
  const auth = new Authorizer(callers, log);
  const health = new Health(() => storage.healthFacts(), worker);
  // Undecodable request bytes get INVALID_ARGUMENT, never INTERNAL (see request-decoding.ts).
  // Every call of every service, unary or streaming, is counted and timed by the call observer.
  const server = new SafeDecodingServer(serverChannelOptions(config.server), callObserver(metrics, log, config.slowCallThresholdMs));
  streams = new OpenStreams(config.server.maxMessageBytes);
  server.addService(sessionService, sessionHandlers(sessions, auth, log, streams, { feed, settings: config.events }));
  server.addService(AdminServiceService, adminHandlers({ sessions, storage, auth, sweepBatchSize: config.sweepBatchSize, metrics }, log));
  health.addToServer(server);
  if (config.server.reflection) addReflection(server);
  if (config.benchService) addBenchService(server);

  if (!worker) watchStorage(metrics, storage, sessions, () => health.status === 'SERVING');

  let port: number;
  let metricsServer: MetricsServer | undefined;
  try {
    port = await bind(server, config.server.listen, credentials);
    if (config.metricsListen) metrics.enableProcessMetrics();
    if (config.metricsListen && !worker) metricsServer = await startMetricsServer(config.metricsListen, metrics, log);
  } catch (err) {
    server.forceShutdown();
    principals.stop();
    await storage.close();
    throw err;
  }

  const sweeper = new Sweeper(sessions, config.sweepIntervalMs, config.sweepBatchSize, log, metrics, feed);
  let lastProblem: string | undefined;
  let probing = false;
  const probe = async () => {
    // A probe of an unreachable database may take up to the connect timeout: never two at once.
    if (probing) return;
    probing = true;
    try {
      const verdict = await storage.probe();
      const problem = verdict.ok ? undefined : verdict.reason;
      if (problem !== lastProblem) {
        if (problem) log.error('storage unusable; health is NOT_SERVING', { problem });
        else log.info('storage usable again; health follows the lifecycle');
      }
      lastProblem = problem;
      health.setStorageProblem(problem);
      if (storage.wal && !worker) storageObserver.checkWal(storage.wal.walSnapshot());
    } finally {
      probing = false;
    }
  };
  await probe();
  health.setPhase('serving');
  const probeTimer = setInterval(() => void probe(), config.healthProbeIntervalMs).unref();
  if (!worker) sweeper.start();

  const host = config.server.listen.slice(0, config.server.listen.lastIndexOf(':'));
  const address = `${host}:${port}`;
  log.info(worker ? 'worker serving' : 'serving', {
    ...worker, address, storage: storage.backend, ...(sqlite ? { db: config.storage.path, journalMode: sqlite.walSnapshot().journalMode } : { database: targetOf(config.postgres!.url) }), transport: transportSecurity(config.server.tls),
    principals: callers.size, metrics: metricsServer && `http://${metricsServer.address}/metrics`,
  });

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info('shutdown: health NOT_SERVING', { reason });
      health.setPhase('stopping');
      health.endWatches();
      streams.closeAll();
      feed.wakeAll();
      log.info('shutdown: draining in-flight calls', { deadlineMs: config.server.drainTimeoutMs });
      const drained = await drain(server, config.server.drainTimeoutMs);
      if (!drained) log.warn('shutdown: drain deadline passed; cancelled the calls still running');
      clearInterval(probeTimer);
      principals.stop();
      await sweeper.stop();
      log.info('shutdown: sweep and health probe stopped');
      if (metricsServer) {
        await metricsServer.close();
        log.info('shutdown: metrics server stopped');
      }
      // Writes still queued were answered by the drain or cancelled with it; the
      // committer empties before the final checkpoint, which runs inside close().
      const final = await storage.close();
      if (final) log.info('shutdown: checkpoint', { checkpoint: final });
      log.info('shutdown: database closed');
    })();
    return shuttingDown;
  };

  return {
    port,
    address,
    sessions,
    storage,
    sqlite,
    health,
    sweeper,
    metrics,
    metricsPort: metricsServer?.port,
    shutdown,
    forceShutdown: () => server.forceShutdown(),
    principalCount: () => callers.size,
    reloadPrincipals: (reason) => principals.reload(reason),
  };
}

/** tryShutdown stops new calls and waits for running ones; past the deadline, forceShutdown cancels them. */
function drain(server: Server, deadlineMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve(false);
    }, deadlineMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
