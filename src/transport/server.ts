import { Server, ServerCredentials, type ChannelOptions } from '@grpc/grpc-js';
import type { ServerOptions } from '../config';

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
 * Binds `server` to host:port.
 * @returns the port actually bound (the listen port may be 0).
 */
export function bind(server: Server, listen: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(listen, ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(new Error(`cannot listen on ${listen}: ${err.message}`, { cause: err }));
      else resolve(port);
    });
  });
}
