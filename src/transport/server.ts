import { Server, ServerCredentials, type ChannelOptions } from '@grpc/grpc-js';
import type { ServerOptions } from '../config';
import { loadServerTls } from '../tls';

/** grpc-js channel options made explicit, so that limits are ours and not a library default. */
export function serverChannelOptions(o: ServerOptions): ChannelOptions {
  return {
    'grpc.max_receive_message_length': o.maxMessageBytes,
    'grpc.max_send_message_length': o.maxMessageBytes,
    'grpc.keepalive_time_ms': o.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs,
    // Clients may ping idle connections every 10 s (their keepalive), instead
    // of grpc-js's default 5 min, beyond which it answers with GOAWAY.
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  };
}

/**
 * Plaintext, TLS, or mTLS (TLS plus a required client certificate that chains
 * to the client CA). The files are read once, here, at start-up.
 * A verified client certificate does not make its holder an admin: AdminAuth
 * still asks for the admin token (or a loopback peer when none is set).
 * @throws Error naming each file that is missing, unreadable or invalid.
 */
export function serverCredentials(tls: ServerOptions['tls']): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const m = loadServerTls(tls);
  // checkClientCertificate=true fails the handshake unless the client presents a
  // certificate that verifies against rootCerts; with false, grpc-js would ask
  // for one but let in clients without one, or with one that does not verify.
  return ServerCredentials.createSsl(m.clientCa ?? null, [{ cert_chain: m.certChain, private_key: m.privateKey }], m.clientCa !== undefined);
}

/** "plaintext", "tls" or "mtls", for the start-up log. */
export function transportSecurity(tls: ServerOptions['tls']): 'plaintext' | 'tls' | 'mtls' {
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
