import { Counter, Gauge } from 'prom-client';
import { systemClock } from '../domain/clock';
import { targetOf } from '../shared/database-url';
import { redactedConfig, type Config } from './config';
import { Fleet } from './fleet';
import { reportStartupFailure, type Logger } from './log';
import { Metrics } from './metrics/metrics';
import { startMetricsServer, type MetricsServer } from './metrics/metrics-server';
import { Sweeper } from './sweeper';
import { openStorage, sessionsOn, watchStorage } from './storage-setup';

/** A shutdown gives the workers their drain timeout and this much more to close their storage and exit. */
const WORKER_EXIT_GRACE_MS = 10_000;

/**
 * The primary of --workers N. It serves no call itself. In order: open the
 * storage (migrating it before any worker opens the file), fork the workers,
 * then run what must happen once per database, not once per worker: the
 * checkpoint worker and the final TRUNCATE checkpoint (SQLite), the sweep, the
 * storage gauges, and /metrics, summed over the workers.
 *
 * SIGTERM or SIGINT: every worker drains as one server does, and only once all
 * have closed their connections does the primary close its own, truncating the
 * WAL. SIGHUP is passed on to the workers (each reloads the principals).
 * Exit codes: 0 clean, 1 failed (a worker could not start, or did not exit cleanly).
 */
export async function runPrimary(config: Config, log: Logger): Promise<void> {
  log.info('starting', { config: redactedConfig(config), workers: config.workers });
  const metrics = new Metrics();
  let opened;
  try {
    opened = await openStorage(config, log, metrics);
  } catch (err) {
    reportStartupFailure(log, err);
    process.exit(1);
  }
  const { storage, sqlite, observer } = opened;
  const { sessions, feed } = sessionsOn(storage, config, systemClock);
  const sweeper = new Sweeper(sessions, config.sweepIntervalMs, config.sweepBatchSize, log, metrics, feed);
  // The workers' checkpoints and purge batches, on this storage's checkpoint worker thread.
  const fleet = new Fleet(config.workers, log, fleetMetrics(metrics), sqlite && ((r) => (r.op === 'checkpoint' ? sqlite.checkpoint(r.mode, r.trigger) : sqlite.purgeBatch(r.now, r.limit))));
  watchStorage(metrics, storage, sessions, () => fleet.serving === fleet.wanted);

  let metricsServer: MetricsServer | undefined;
  let walTimer: NodeJS.Timeout | undefined;
  let shuttingDown: Promise<void> | undefined;
  const shutdown = (reason: string, code: number): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info('shutdown: workers draining', { reason, deadlineMs: config.server.drainTimeoutMs });
      const clean = await fleet.stop(reason, config.server.drainTimeoutMs + WORKER_EXIT_GRACE_MS);
      log.info('shutdown: every worker has exited', { clean });
      clearInterval(walTimer);
      await sweeper.stop();
      await metricsServer?.close();
      // Only now is the file no worker's: the final checkpoint runs inside close().
      const final = await storage.close();
      if (final) log.info('shutdown: checkpoint', { checkpoint: final });
      log.info('shutdown: database closed');
      process.exit(clean ? code : 1);
    })().catch((err: unknown) => {
      log.error('shutdown failed', { err });
      process.exit(1);
    });
    return shuttingDown;
  };
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      log.warn('second signal: killing the workers and exiting now', { signal });
      fleet.kill();
      process.exit(1);
    }
    void shutdown(signal, 0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => fleet.signal('SIGHUP'));
  process.on('unhandledRejection', (reason) => log.error('unhandled promise rejection (a bug); still serving', { err: reason }));
  process.on('uncaughtException', (err, origin) => {
    log.error('uncaught exception (a bug); shutting down', { err, origin });
    setTimeout(() => process.exit(1), config.server.drainTimeoutMs + 2 * WORKER_EXIT_GRACE_MS).unref();
    void shutdown('uncaught exception', 1);
  });

  let address: string;
  try {
    address = await fleet.start();
    if (config.metricsListen) {
      metrics.enableProcessMetrics();
      metricsServer = await startMetricsServer(config.metricsListen, { exposition: async () => metrics.exposition(await fleet.snapshots()) }, log);
    }
  } catch (err) {
    if (shuttingDown) return;
    reportStartupFailure(log, err);
    void shutdown('start-up failed', 1);
    return;
  }
  if (shuttingDown) return;
  sweeper.start();
  if (storage.wal) {
    const wal = storage.wal;
    walTimer = setInterval(() => observer.checkWal(wal.walSnapshot()), config.healthProbeIntervalMs).unref();
  }
  log.info('serving', {
    address, workers: config.workers, storage: storage.backend,
    ...(config.postgres ? { database: targetOf(config.postgres.url) } : { db: config.storage.path }),
    principals: fleet.principals, metrics: metricsServer && `http://${metricsServer.address}/metrics`,
  });
}

/** The group's own metrics, on the primary's registry: how many workers serve, and their exits. */
function fleetMetrics(metrics: Metrics): (serving: number, wanted: number, exited: boolean) => void {
  const registers = [metrics.registry];
  const serving = new Gauge({ name: 'sessiond_workers_serving', help: 'With --workers: worker processes serving; health is NOT_SERVING while fewer than sessiond_workers.', registers });
  const wanted = new Gauge({ name: 'sessiond_workers', help: 'With --workers: the worker processes configured.', registers });
  const exits = new Counter({ name: 'sessiond_worker_exits_total', help: 'With --workers: worker processes that exited while the group was serving (each one is restarted).', registers });
  return (n, of, exited) => {
    serving.set(n);
    wanted.set(of);
    if (exited) exits.inc();
  };
}

