import cluster from 'node:cluster';
import { startApp } from './app';
import { runPrimary } from './cluster-primary';
import { PrimaryLink } from './cluster-worker';
import { ConfigError, helpText, loadConfig, redactedConfig, WORKER_SLOT_VARIABLE } from './config';
import { tuneGc } from './gc-tuning';
import { createLogger, reportStartupFailure } from './log';

/**
 * The server, as `sessiond serve` and `node src/main.ts` run it:
 * config -> storage -> server -> signals. Exit codes: 0 clean, 1 failed,
 * 2 bad config. With --workers above 1, this process is the primary
 * (cluster-primary.ts), and each worker it forks runs this again to serve.
 * @param argv the server's flags (no subcommand), as loadConfig reads them.
 */
export async function serve(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<void> {
  tuneGc();
  let invocation;
  try {
    invocation = loadConfig(argv, env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sessiond: ${err.message}\nRun with --help for every setting.\n`);
      process.exit(2);
    }
    throw err;
  }
  if (invocation.help) {
    process.stdout.write(`${helpText()}\n`);
    return;
  }
  const { config } = invocation;
  const log = createLogger(config.logLevel);
  if (config.workers > 1 && cluster.isPrimary) return runPrimary(config, log);
  const link = config.workers > 1 ? new PrimaryLink() : undefined;
  const worker = link && { slot: Number(env[WORKER_SLOT_VARIABLE]) || cluster.worker!.id, primary: link.storage };
  // pino adds pid and hostname to every line; the admin token is masked here and by the logger's redact paths.
  if (!worker) log.info('starting', { config: redactedConfig(config) });

  let app;
  try {
    app = await startApp(config, { log, worker });
  } catch (err) {
    reportStartupFailure(log, err);
    process.exit(1);
  }

  let signals = 0;
  const onSignal = (signal: string) => {
    signals++;
    if (signals > 1) {
      log.warn('second signal: exiting now', { signal });
      app.forceShutdown();
      process.exit(1);
    }
    app.shutdown(signal).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Keys rotate without a restart; a file that fails to load leaves the principals in force.
  process.on('SIGHUP', () => void app.reloadPrincipals('SIGHUP'));
  // The primary's order, or its loss, shuts a worker down as a signal would; a second one changes nothing.
  link?.follow(app, log, (reason) => signals === 0 && onSignal(reason));

  // Safety nets. Handlers turn every fault into a status (transport/unary.ts,
  // validate-stream.ts); these catch what escapes anyway, which is a bug.
  // A rejection nobody handled is logged and the server keeps serving: every
  // write is a synchronous SQLite transaction, committed or rolled back before
  // any promise settles, so a lost rejection cannot leave storage half-written,
  // and exiting would cut every other call and validation stream in flight.
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled promise rejection (a bug); still serving', { err: reason });
  });
  // An uncaught exception may have left any in-memory state half-updated: log
  // it and shut down in the usual order (NOT_SERVING, drain, checkpoint,
  // close), exit 1 so that a supervisor restarts the process. A second one, or
  // a shutdown that overruns the drain timeout by 10 s, exits at once.
  let failed = false;
  process.on('uncaughtException', (err, origin) => {
    log.error('uncaught exception (a bug); shutting down', { err, origin });
    if (failed) process.exit(1);
    failed = true;
    setTimeout(() => process.exit(1), config.server.drainTimeoutMs + 10_000);
    app.shutdown('uncaught exception').then(
      () => process.exit(1),
      (shutdownErr: unknown) => {
        log.error('shutdown failed', { err: shutdownErr });
        process.exit(1);
      },
    );
  });
}
