import { type GrpcObject, type ServiceClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { type Options } from '@grpc/proto-loader';
import { startTestServer, type TestServer } from './server';

export const LOADER: Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

export type Unary = (req: object, cb: (err: ServiceError | null, res: Record<string, any>) => void) => void;

/** Calls `method` on a dynamic client; resolves with the plain-object response. */
export function call(client: InstanceType<ServiceClientConstructor>, method: string, req: object): Promise<Record<string, any>> {
  const fn = (client as unknown as Record<string, Unary>)[method];
  if (typeof fn !== 'function') throw new Error(`no method ${method} on the dynamic client`);
  return new Promise((resolve, reject) => fn.call(client, req, (err, res) => (err ? reject(err) : resolve(res))));
}

export function service(pkg: GrpcObject, fullName: string): ServiceClientConstructor {
  let node: unknown = pkg;
  for (const part of fullName.split('.')) node = (node as Record<string, unknown>)[part];
  if (typeof node !== 'function') throw new Error(`${fullName} is not a service in the package`);
  return node as ServiceClientConstructor;
}

export function seconds(ts: { seconds: string; nanos: number } | null | undefined): number {
  if (!ts) throw new Error('timestamp missing');
  return Number(ts.seconds) + ts.nanos / 1e9;
}

export async function withServer(fn: (s: TestServer) => Promise<void>, env: Record<string, string> = {}): Promise<void> {
  const s = await startTestServer({ env });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}
