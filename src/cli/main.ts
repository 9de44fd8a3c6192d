import { Command, CommanderError } from 'commander';
import { addAdminCommands } from './admin-commands';
import { addHealthCommand } from './health-command';
import { addKeysCommand } from './keys-command';
import { EXIT } from './run';
import { addSessionCommands } from './session-commands';

/**
 * The `sessiond` command: the server (`serve`, also what runs when no command
 * is given) and the operator client commands, which call a running server
 * through the generated gRPC client.
 */
export function buildProgram(): Command {
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
    // The server's flags are parsed, validated and documented by src/config.ts.
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .passThroughOptions()
    // Loaded only here: client commands need none of the server (SQLite, the app), and start faster without it.
    .action((flags: string[]) => (require('../serve') as typeof import('../serve')).serve(flags, process.env));

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
export async function main(argv: readonly string[]): Promise<void> {
  // `sessiond sessions list --all | head` closes the pipe early: stop quietly, as other CLIs do.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    process.exitCode = err.exitCode === 0 ? 0 : EXIT.usage;
  }
}

if (require.main === module) void main(process.argv.slice(2));
