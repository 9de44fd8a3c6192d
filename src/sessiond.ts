import { main } from './cli/main';

/**
 * The `sessiond` command (bin/sessiond.js): the CLI, with the server behind
 * `sessiond serve`. The server is loaded only for that command, so that the
 * client commands start without SQLite and the rest of the server.
 */
export function sessiond(argv: readonly string[]): Promise<void> {
  return main(argv, (flags, env) => (require('./server/serve') as typeof import('./server/serve')).serve(flags, env));
}
