import { ConfigError, helpText, loadConfig, redactedConfig } from './config';
import { createLogger } from './log';
import { startApp } from './app';

/** start-up: config -> storage -> server -> signals. Exit codes: 0 clean, 1 failed, 2 bad config. */
async function main(): Promise<void> {
  let invocation;
  try {
    invocation = loadConfig(process.argv.slice(2), process.env);
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
  log.info('starting', { config: redactedConfig(config), pid: process.pid });

  let app;
  try {
    app = await startApp(config, { log });
  } catch (err) {
    log.error('start-up failed', { err });
    process.stderr.write(`sessiond: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
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
}

void main();
