/*
 * The bench's baseline: a bare @grpc/grpc-js server with one unary RPC,
 * Ping(Empty) returns (Empty), and nothing else (no interceptors, no metrics,
 * no caller check, no strict decoding, grpc-js's default channel options).
 * Whatever a sessiond call costs above this is sessiond's, not the transport's.
 * It runs as its own process, started by bench/server-process.ts the way the
 * sessiond server is (compiled, or under tsx), so that both pay the same
 * loader costs, and announces its port in a log line shaped like sessiond's.
 */
import { Server, ServerCredentials, type handleUnaryCall, type ServiceDefinition } from '@grpc/grpc-js';

export const BARE_SERVICE = 'bench.bare.v1.Bare';
export const BARE_PING_PATH = `/${BARE_SERVICE}/Ping`;

/** The empty message. Its proto encoding is no bytes; unknown fields, if any, are skipped, as proto3 does. */
type Empty = Record<string, never>;
const EMPTY_BYTES = Buffer.alloc(0);
const EMPTY: Empty = {};

const definition: ServiceDefinition = {
  Ping: {
    path: BARE_PING_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: (_m: Empty) => EMPTY_BYTES,
    requestDeserialize: (_b: Buffer): Empty => EMPTY,
    responseSerialize: (_m: Empty) => EMPTY_BYTES,
    responseDeserialize: (_b: Buffer): Empty => EMPTY,
    originalName: 'ping',
  },
};

function main(): void {
  const listen = process.env['BARE_LISTEN'] ?? '127.0.0.1:0';
  const server = new Server();
  const ping: handleUnaryCall<Empty, Empty> = (_call, callback) => callback(null, EMPTY);
  server.addService(definition, { Ping: ping });
  server.bindAsync(listen, ServerCredentials.createInsecure(), (err, port) => {
    if (err) {
      process.stderr.write(`${JSON.stringify({ msg: 'cannot listen', listen, error: err.message })}\n`);
      process.exit(1);
    }
    const host = listen.slice(0, listen.lastIndexOf(':'));
    process.stderr.write(`${JSON.stringify({ msg: 'serving', address: `${host}:${port}` })}\n`);
  });
  // SIGTERM ends the process as sessiond's does (exit 0), so that --cpu-prof writes its profile.
  process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
}

if (require.main === module) main();
