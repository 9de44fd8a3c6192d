import { status, type ServiceError } from '@grpc/grpc-js';
import type { JsonValue } from '@bufbuild/protobuf';
import type { Command } from 'commander';
import type { SessiondClient } from '../client/client';
import { connect, type GlobalOptions } from './connect';

/** Exit codes of the client commands. */
export const EXIT = {
  ok: 0,
  /** The server answered with an error status (or, for health, not SERVING). */
  failed: 1,
  /** The server could not be reached at all. */
  unreachable: 2,
  /** The command line itself is wrong (sysexits' EX_USAGE). */
  usage: 64,
} as const;

export interface CommandContext<O> {
  readonly client: SessiondClient;
  readonly options: GlobalOptions & O;
  /** Prints the reply: its proto JSON with --json, else the human text. */
  print(json: () => JsonValue, human: () => string): void;
}

/** A problem with the command line found by an action (commander finds the others). */
export class UsageError extends Error {}

/**
 * Wraps a client command's action: connects with the command's options, runs
 * it, and turns failures into a one-line message on stderr and an exit code
 * (EXIT). The action returns its exit code (0 when it returns nothing).
 */
export function clientAction<O>(action: (ctx: CommandContext<O>, ...args: string[]) => Promise<number | void>) {
  return async (...params: unknown[]): Promise<void> => {
    const command = params[params.length - 1] as Command;
    const args = params.slice(0, -2).filter((a): a is string => typeof a === 'string');
    const options = command.optsWithGlobals<GlobalOptions & O>();
    let client: SessiondClient | undefined;
    try {
      client = connect(options);
      const c = client;
      const print = (json: () => JsonValue, human: () => string) =>
        void process.stdout.write(`${options.json ? JSON.stringify(json(), null, 2) : human()}\n`);
      process.exitCode = (await action({ client: c, options, print }, ...args)) ?? EXIT.ok;
    } catch (err) {
      process.exitCode = report(err, options.address, client);
    } finally {
      client?.close();
    }
  };
}

function report(err: unknown, address: string, client: SessiondClient | undefined): number {
  if (err instanceof UsageError) {
    process.stderr.write(`sessiond: ${err.message}\n`);
    return EXIT.usage;
  }
  if (!isServiceError(err)) {
    process.stderr.write(`sessiond: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.failed;
  }
  // A status from the server needs a connection; without one, grpc-js made the
  // status up (refused, unresolvable, handshake failed, or no connection in time).
  if ((err.code === status.UNAVAILABLE || err.code === status.DEADLINE_EXCEEDED) && !client?.connected()) {
    // grpc-js appends an empty "Resolution note: " when name resolution had nothing to say.
    const why = (err.details || status[err.code] || '').replace(/\.?\s*Resolution note:\s*$/, '');
    process.stderr.write(`sessiond: cannot reach the server at ${address}: ${why}\n`);
    return EXIT.unreachable;
  }
  process.stderr.write(`sessiond: ${status[err.code] ?? err.code}: ${err.details}\n`);
  return EXIT.failed;
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'details' in err;
}
