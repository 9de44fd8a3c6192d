import { Command, CommanderError } from 'commander';
import { addAdminCommands } from './admin-commands';
import { addHealthCommand } from './health-command';
import { addKeysCommand } from './keys-command';
import { EXIT } from './run';
import { addSessionCommands } from './session-commands';

/** Runs the server with its flags; src/sessiond.ts hands it in. */
export type ServeRunner = (flags: string[], env: NodeJS.ProcessEnv) => Promise<void>;

/**
 * The `sessiond` command: the server (`serve`, also what runs when no command
 * is given) and the operator client commands, which call a running server
 * through the generated gRPC client. The CLI ships without the server's code
 * (its import rules say so): `serve` runs whatever `runServer` it is given.
 */
export function buildProgram(runServer?: ServeRunner): Command {
  const program = new Command('sessiond')
    .description('gRPC session service on SQLite WAL: the server (serve, the default) and client commands for operators')
    // Options after a command belong to it: `sessiond serve --admin-token X` configures the server.
    .enablePositionalOptions()
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();

  program
    .command('serve', { isDefault: true })
    .description('run the server (the default when no command is given); `sessiond serve --help` lists its flags')
    .argument('[flags...]', 'server flags, e.g. --listen 0.0.0.0:50051 (each also a SESSIOND_* variable)')
    // The server's flags are parsed, validated and documented by src/server/config.ts.
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .passThroughOptions()
    .action((flags: string[]) => {
      if (runServer) return runServer(flags, process.env);
      process.stderr.write('sessiond: this CLI was started without the server (src/sessiond.ts starts both)\n');
      process.exitCode = EXIT.usage;
      return undefined;
    });

  addHealthCommand(program);
  addAdminCommands(program);
  addSessionCommands(program);
  addKeysCommand(program);
  program.commands.forEach(exitOverrideAll);
  return program;
}

function exitOverrideAll(command: Command): void {
  command.exitOverride();
  command.commands.forEach(exitOverrideAll);
}

/** Runs the CLI; usage errors exit 64 (help and version 0), client commands set their own exit code. */
export async function main(argv: readonly string[], runServer?: ServeRunner): Promise<void> {
  // `sessiond sessions list --all | head` closes the pipe early: stop quietly, as other CLIs do.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  try {
    await buildProgram(runServer).parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    process.exitCode = err.exitCode === 0 ? 0 : EXIT.usage;
  }
}

