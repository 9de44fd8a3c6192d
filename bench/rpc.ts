/*
 * Raw grpc-js unary calls with identity serializers: requests are encoded up
 * front (or cheaply per call) and answers are read only as far as the bench
 * needs, so that the load generator, which shares the machine with the server,
 * spends as little CPU per call as it does on the empty RPC.
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { Client, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';

const identity = (b: Buffer) => b;

/** Several client connections: one HTTP/2 connection is not the bottleneck. */
export class Channels {
  /** By address, then connection. */
  private readonly clients: Client[][];
  private readonly all: Client[];
  private next = 0;
  private readonly metadata = new Metadata();

  /**
   * `count` connections to each address. With several addresses (replicas
   * behind one load client) each call goes to the next address in turn, so
   * that even one worker spreads its calls over them all. With `apiKey`,
   * every call carries it as a bearer token; the bare baseline is sent the
   * same header, so that both servers parse the same bytes.
   */
  constructor(address: string | readonly string[], count: number, apiKey?: string) {
    if (apiKey !== undefined) this.metadata.set('authorization', `Bearer ${apiKey}`);
    const addresses = typeof address === 'string' ? [address] : address;
    // A local subchannel pool per client: grpc-js would otherwise share one
    // connection between clients with the same target and options.
    this.clients = addresses.map((a) => Array.from({ length: count }, () =>
      new Client(a, credentials.createInsecure(), {
        'grpc.use_local_subchannel_pool': 1,
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
      })));
    this.all = this.clients.flat();
  }

  /** Connects every channel (so that no window pays for a handshake). */
  ready(timeoutMs = 10_000): Promise<void[]> {
    return Promise.all(this.all.map((c) => new Promise<void>((resolve, reject) =>
      c.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())))));
  }

  /** Calls `path` on the channel of `worker`; `done` gets an error text, or the answer. */
  call(worker: number, path: string, request: Buffer, done: (error: string | undefined, answer: Buffer | undefined) => void): void {
    const byAddress = this.clients.length === 1 ? this.clients[0]! : this.clients[this.next++ % this.clients.length]!;
    byAddress[worker % byAddress.length]!.makeUnaryRequest(path, identity, identity, request, this.metadata, (err: ServiceError | null, res?: Buffer) =>
      err ? done(`${status[err.code] ?? err.code}: ${err.details}`, undefined) : done(undefined, res));
  }

  close(): void {
    for (const c of this.all) c.close();
  }
}

/** A ts-proto writer's bytes as a Buffer, without a copy. */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The first length-delimited field `field` of a message, or undefined. */
export function lengthDelimited(message: Uint8Array, field: number): Uint8Array | undefined {
  const reader = new BinaryReader(message);
  while (reader.pos < reader.len) {
    const [no, type] = reader.tag();
    if (no === field && type === WireType.LengthDelimited) return reader.bytes();
    reader.skip(type, no);
  }
  return undefined;
}

/** The string at a path of field numbers (`[1, 1]`: field 1 of the message in field 1). */
export function stringAt(message: Uint8Array, path: number[]): string | undefined {
  let m: Uint8Array | undefined = message;
  for (const field of path) {
    m = lengthDelimited(m, field);
    if (m === undefined) return undefined;
  }
  return Buffer.from(m.buffer, m.byteOffset, m.byteLength).toString('utf8');
}
