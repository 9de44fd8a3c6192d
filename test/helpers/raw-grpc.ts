import { connect, constants, type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2';

/*
 * gRPC over HTTP/2 by hand (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md),
 * for requests no generated client would send: garbage in a frame, truncated
 * frames, a compressed flag without grpc-encoding. And protobuf wire format by
 * hand (https://protobuf.dev/programming-guides/encoding/), for bytes no
 * encoder would write: invalid UTF-8, out-of-range int64s, unknown fields.
 */

export interface RawAnswer {
  /** grpc-status from the trailers (or trailers-only headers); -1 when the stream broke without one. */
  code: number;
  details: string;
  /** The response messages, without their 5-byte prefixes. */
  messages: Buffer[];
  headers: Record<string, unknown>;
}

/** A 5-byte length-prefixed message: the compressed flag, then the big-endian length. */
export function frame(payload: Uint8Array, opts: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = opts.compressed ? 1 : 0;
  head.writeUInt32BE(opts.declaredLength ?? payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** One HTTP/2 connection for raw calls; close() when done. */
export class RawGrpc {
  private readonly session: ClientHttp2Session;

  constructor(address: string) {
    this.session = connect(`http://${address}`);
    this.session.on('error', () => undefined);
  }

  /**
   * POSTs `body` (already framed) to `path` and half-closes. Resolves with the
   * status the server sent, whatever it was.
   */
  call(path: string, body: Uint8Array | Uint8Array[], extraHeaders: OutgoingHttpHeaders = {}, timeoutMs = 10_000): Promise<RawAnswer> {
    const chunks = Array.isArray(body) ? body : [body];
    return new Promise((resolve, reject) => {
      const req = this.session.request({
        [constants.HTTP2_HEADER_METHOD]: 'POST',
        [constants.HTTP2_HEADER_PATH]: path,
        [constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
        te: 'trailers',
        ...extraHeaders,
      });
      const timer = setTimeout(() => {
        req.close();
        reject(new Error(`no answer from ${path} within ${timeoutMs}ms`));
      }, timeoutMs);
      let headers: Record<string, unknown> = {};
      let trailers: Record<string, unknown> | undefined;
      const data: Buffer[] = [];
      req.on('response', (h) => (headers = { ...h }));
      req.on('trailers', (t) => (trailers = { ...t }));
      req.on('data', (c: Buffer) => data.push(c));
      req.on('error', () => undefined);
      req.on('close', () => {
        clearTimeout(timer);
        const source = trailers ?? headers;
        const code = source['grpc-status'] === undefined ? -1 : Number(source['grpc-status']);
        const details = decodeURIComponent(String(source['grpc-message'] ?? ''));
        resolve({ code, details, messages: splitFrames(Buffer.concat(data)), headers });
      });
      for (const c of chunks) req.write(c);
      req.end();
    });
  }

  close(): void {
    this.session.close();
  }
}

function splitFrames(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos + 5 <= buf.length) {
    const len = buf.readUInt32BE(pos + 1);
    out.push(buf.subarray(pos + 5, pos + 5 + len));
    pos += 5 + len;
  }
  return out;
}

// ------------------------------------------------------------------ protobuf wire format

export function varint(value: bigint | number): Buffer {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return Buffer.from(out);
}

export function tag(field: number, wireType: number): Buffer {
  return varint((BigInt(field) << 3n) | BigInt(wireType));
}

/** A varint field (int32, int64, uint64, bool, enum); negative numbers as 10-byte two's complement. */
export function vfield(field: number, value: bigint | number): Buffer {
  return Buffer.concat([tag(field, 0), varint(value)]);
}

/** A length-delimited field: a string given as text or raw bytes, or a nested message. */
export function lfield(field: number, bytes: string | Uint8Array): Buffer {
  const b = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : Buffer.from(bytes);
  return Buffer.concat([tag(field, 2), varint(b.length), b]);
}

/** A map<string,string> entry as field `field`. */
export function mapEntry(field: number, key: string | Uint8Array, value: string | Uint8Array): Buffer {
  return lfield(field, Buffer.concat([lfield(1, key), lfield(2, value)]));
}

/** google.protobuf.Duration. */
export function duration(seconds: bigint | number, nanos = 0): Buffer {
  return Buffer.concat([seconds === 0 ? Buffer.alloc(0) : vfield(1, seconds), nanos === 0 ? Buffer.alloc(0) : vfield(2, nanos)]);
}

export function message(...fields: Uint8Array[]): Buffer {
  return Buffer.concat(fields);
}
