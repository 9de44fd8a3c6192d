import { Server, ServerCredentials, type ChannelOptions } from '@grpc/grpc-js';
import { loadServerTls, type ServerTlsFiles } from '../shared/tls';

/** The connection limits the server's configuration sets (server/config.ts). */
export interface ChannelLimits {
  readonly maxMessageBytes: number;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly maxConcurrentStreams: number;
  readonly maxConnectionMemoryBytes: number;
  readonly maxConnectionIdleMs: number;
  readonly maxConnectionAgeMs: number;
  readonly maxConnectionAgeGraceMs: number;
}

/**
 * The longest delay a Node timer keeps (2^31-1 ms, about 24.8 days); a longer
 * one fires after 1 ms. grpc-js sets its connection timers from these options
 * as given, and takes exactly this value as "never" for the idle, age and
 * grace limits and the keepalive time.
 */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/** grpc-js draws the age timer up to 10 % longer, to spread reconnections. */
const AGE_JITTER = 1.1;

/**
 * grpc-js channel options made explicit, so that limits are ours and not a
 * library default (see grpc-js's server.js for each).
 */
export function serverChannelOptions(o: ChannelLimits): ChannelOptions {
  const timer = (ms: number) => Math.min(ms, LONGEST_TIMER_MS);
  const options: ChannelOptions = {
    'grpc.max_receive_message_length': o.maxMessageBytes,
    'grpc.max_send_message_length': o.maxMessageBytes,
    'grpc.keepalive_time_ms': timer(o.keepaliveTimeMs),
    'grpc.keepalive_timeout_ms': timer(o.keepaliveTimeoutMs),
    // Clients may ping idle connections every 10 s (their keepalive), instead
    // of grpc-js's default 5 min, beyond which it answers with GOAWAY.
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    // Sent in the server's SETTINGS; Node's default is no limit at all.
    'grpc.max_concurrent_streams': o.maxConcurrentStreams,
    // Node's maxSessionMemory, in whole megabytes of 10^6 bytes (it truncates
    // a fraction); grpc-js's default is no limit. Rounded up, so that a
    // connection may hold at least the bytes configured. Past it Node refuses
    // new streams on that connection.
    'grpc-node.max_session_memory': Math.max(1, Math.ceil(o.maxConnectionMemoryBytes / 1e6)),
    // Only read once the age limit sends GOAWAY; 0 closes at once, and a
    // missing option would let calls hold the connection for ever.
    'grpc.max_connection_age_grace_ms': timer(o.maxConnectionAgeGraceMs),
  };
  // grpc-js arms both timers for any value given, 0 included (a GOAWAY right
  // after the connection opens): "never" is the option left out.
  if (o.maxConnectionIdleMs > 0) options['grpc.max_connection_idle_ms'] = timer(o.maxConnectionIdleMs);
  if (o.maxConnectionAgeMs > 0) options['grpc.max_connection_age_ms'] = Math.min(o.maxConnectionAgeMs, Math.floor(LONGEST_TIMER_MS / AGE_JITTER));
  return options;
}

/**
 * Plaintext, TLS, or mTLS (TLS plus a required client certificate that chains
 * to the client CA). The files are read once, here, at start-up.
 * A verified client certificate names a principal only through the
 * principals file (transport/callers.ts); on its own it grants nothing.
 * @throws Error naming each file that is missing, unreadable or invalid.
 */
export function serverCredentials(tls: ServerTlsFiles | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const m = loadServerTls(tls);
  // checkClientCertificate=true fails the handshake unless the client presents a
  // certificate that verifies against rootCerts; with false, grpc-js would ask
  // for one but let in clients without one, or with one that does not verify.
  return ServerCredentials.createSsl(m.clientCa ?? null, [{ cert_chain: m.certChain, private_key: m.privateKey }], m.clientCa !== undefined);
}

/** "plaintext", "tls" or "mtls", for the start-up log. */
export function transportSecurity(tls: ServerTlsFiles | undefined): 'plaintext' | 'tls' | 'mtls' {
  if (!tls) return 'plaintext';
  return tls.clientCaFile ? 'mtls' : 'tls';
}

/**
 * Binds `server` to host:port.
 * @returns the port actually bound (the listen port may be 0).
 */
export function bind(server: Server, listen: string, credentials: ServerCredentials = ServerCredentials.createInsecure()): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(listen, credentials, (err, port) => {
      if (err) reject(new Error(`cannot listen on ${listen}: ${err.message}`, { cause: err }));
      else resolve(port);
    });
  });
}
