import { InvalidArgumentError, Option, type Command } from 'commander';
import { SessiondClient, tlsCredentials } from '../client/client';
import { parseDuration } from '../shared/units';

/** The options every client command takes, as commander parses them. */
export interface GlobalOptions {
  /** host:port of the server (or any grpc-js target, e.g. dns:host:port). */
  readonly address: string;
  /** The caller's API key, sent as the bearer token on every call. */
  readonly apiKey?: string | undefined;
  /** Sent as the bearer token on admin calls, in place of apiKey. */
  readonly adminToken?: string | undefined;
  /** Deadline of each call, in ms. */
  readonly timeout: number;
  /** Print replies as proto JSON. */
  readonly json?: boolean | undefined;
  /** TLS with the system's trusted roots (implied by any tls file option). */
  readonly tls?: boolean | undefined;
  /** PEM CA bundle that signed the server's certificate. */
  readonly tlsCa?: string | undefined;
  /** PEM client certificate chain and its key, for a server that requires mTLS. */
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
  /** The name the server's certificate must carry, when not the address's host. */
  readonly tlsServerName?: string | undefined;
}

export const DEFAULT_ADDRESS = '127.0.0.1:50051';
export const DEFAULT_TIMEOUT = '10s';

/**
 * Declares the connection and output options on a client command. Each client
 * command carries them itself (rather than the program): `sessiond` alone runs
 * the server, whose own flags, --admin-token among them, must reach it untouched.
 */
export function withGlobalOptions(command: Command): Command {
  return command
    .addOption(new Option('--address <host:port>', 'server to call').env('SESSIOND_ADDRESS').default(DEFAULT_ADDRESS))
    .addOption(new Option('--api-key <key>', 'API key of a principal, sent on every call (prefer the variable: flags show in ps)').env('SESSIOND_API_KEY'))
    .addOption(new Option('--admin-token <token>', 'key sent on admin calls in place of --api-key (prefer the variable: flags show in ps)').env('SESSIOND_ADMIN_TOKEN'))
    .addOption(new Option('--timeout <duration>', 'deadline of each call (e.g. 500ms, 5s)').default(parseTimeout(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT).argParser(parseTimeout))
    .option('--json', 'print the reply as proto JSON (as grpcurl does), for scripts')
    // The variables differ from the flags where the server's own settings
    // (SESSIOND_TLS_CERT, SESSIOND_TLS_KEY: its certificate) would collide.
    .option('--tls', "connect with TLS, verifying the server with the system's trusted roots (implied by --tls-ca, --tls-cert, --tls-key)")
    .addOption(new Option('--tls-ca <file>', "PEM CA bundle that signed the server's certificate (turns TLS on)").env('SESSIOND_TLS_CA'))
    .addOption(new Option('--tls-cert <file>', 'PEM client certificate chain, for a server that requires mTLS; needs --tls-key').env('SESSIOND_TLS_CLIENT_CERT'))
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert (unencrypted)').env('SESSIOND_TLS_CLIENT_KEY'))
    .addOption(
      new Option('--tls-server-name <name>', "name the server's certificate must carry, when it is not the address's host (e.g. 127.0.0.1 in a pod)").env(
        'SESSIOND_TLS_SERVER_NAME',
      ),
    );
}

function parseTimeout(text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) throw new InvalidArgumentError('not a positive duration (e.g. 500ms, 5s, 1m)');
  return ms;
}

/**
 * The one place the CLI's connection settings become a client: the address,
 * the API key and the admin token, the deadline and TLS.
 * @throws Error naming each TLS file that cannot be used.
 */
export function connect(options: GlobalOptions): SessiondClient {
  const tls = Boolean(options.tls || options.tlsCa || options.tlsCert || options.tlsKey);
  const serverName = options.tlsServerName || undefined;
  return new SessiondClient(options.address, {
    apiKey: options.apiKey || undefined,
    adminToken: options.adminToken || undefined,
    defaultDeadlineMs: options.timeout,
    ...(tls ? { credentials: tlsCredentials({ caFile: options.tlsCa, certFile: options.tlsCert, keyFile: options.tlsKey }) } : {}),
    // grpc-js checks the certificate against this name instead of the target's host (and sends it as SNI).
    ...(tls && serverName ? { channelOptions: { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName } } : {}),
  });
}
