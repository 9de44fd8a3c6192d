import { Server } from '@grpc/grpc-js';
import { AdminServiceService } from '../generated/sessions/v1/admin_service';
import { SessionServiceService } from '../generated/sessions/v1/session_service';
import type { Config } from './config';
import { systemClock, type Clock } from './domain/clock';
import { SessionManager } from './domain/session-manager';
import type { Logger } from './log';
import { SqliteStorage } from './storage/sqlite/sqlite-storage';
import { Sweeper } from './sweeper';
import { AdminAuth } from './transport/admin-auth';
import { adminHandlers } from './transport/admin-handlers';
import { Health } from './transport/health';
import { addReflection } from './transport/reflection';
import { bind, serverChannelOptions } from './transport/server';
import { sessionHandlers } from './transport/session-handlers';
import { OpenStreams } from './transport/validate-stream';

export interface App {
  /** The port bound (useful with a listen port of 0). */
  readonly port: number;
  readonly address: string;
  readonly sessions: SessionManager;
  readonly storage: SqliteStorage;
  readonly health: Health;
  readonly sweeper: Sweeper;
  /** Runs the shutdown sequence once; later calls return the same promise. */
  shutdown(reason: string): Promise<void>;
  /** Cancels in-flight calls at once and skips the drain (a second signal). */
  forceShutdown(): void;
}

export interface AppOptions {
  clock?: Clock;
  log: Logger;
}

/**
 * Start-up in order: storage (open, verify pragmas, migrate) -> domain ->
 * gRPC services -> bind -> health SERVING -> background sweep and probe.
 * @throws Error when storage cannot be opened or the address cannot be bound;
 *   nothing is left open then.
 */
export async function startApp(config: Config, { clock = systemClock, log }: AppOptions): Promise<App> {
  const storage = SqliteStorage.open(config.storage);
  const sessions = new SessionManager(storage.sessions, storage.writes, clock, config.policy);
  const health = new Health(() => storage.walSnapshot());
  const server = new Server(serverChannelOptions(config.server));
  const streams = new OpenStreams();
  server.addService(SessionServiceService, sessionHandlers(sessions, log, streams));
  server.addService(
    AdminServiceService,
    adminHandlers({ sessions, storage, auth: new AdminAuth(config.server.adminToken), sweepBatchSize: config.sweepBatchSize }, log),
  );
  health.addToServer(server);
  if (config.server.reflection) addReflection(server);

  let port: number;
  try {
    port = await bind(server, config.server.listen);
  } catch (err) {
    server.forceShutdown();
    await storage.close();
    throw err;
  }

  const sweeper = new Sweeper(sessions, config.sweepIntervalMs, config.sweepBatchSize, log);
  let lastProblem: string | undefined;
  const probe = () => {
    const verdict = storage.probe();
    const problem = verdict.ok ? undefined : verdict.reason;
    if (problem !== lastProblem) {
      if (problem) log.error('storage unusable; health is NOT_SERVING', { problem });
      else log.info('storage usable again; health follows the lifecycle');
    }
    lastProblem = problem;
    health.setStorageProblem(problem);
  };
  probe();
  health.setPhase('serving');
  const probeTimer = setInterval(probe, config.healthProbeIntervalMs).unref();
  sweeper.start();

  const host = config.server.listen.slice(0, config.server.listen.lastIndexOf(':'));
  const address = `${host}:${port}`;
  log.info('serving', { address, db: config.storage.path, journalMode: storage.walSnapshot().journalMode });

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info('shutdown: health NOT_SERVING', { reason });
      health.setPhase('stopping');
      health.endWatches();
      streams.closeAll();
      log.info('shutdown: draining in-flight calls', { deadlineMs: config.server.drainTimeoutMs });
      const drained = await drain(server, config.server.drainTimeoutMs);
      if (!drained) log.warn('shutdown: drain deadline passed; cancelled the calls still running');
      clearInterval(probeTimer);
      await sweeper.stop();
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
    health,
    sweeper,
    shutdown,
    forceShutdown: () => server.forceShutdown(),
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
