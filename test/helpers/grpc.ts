import type { ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';

/** Asserts that `p` rejects with gRPC `code`, and that the message matches `message` when given. */
export async function rejectsWithCode(t: ExecutionContext, p: Promise<unknown>, code: status, message?: RegExp): Promise<ServiceError> {
  const err = (await t.throwsAsync(p)) as ServiceError | undefined;
  if (!err) throw new Error('expected a rejection');
  t.is(err.code, code, `expected ${status[code]}, got ${status[err.code]}: ${err.details}`);
  if (message) t.regex(err.details, message);
  return err;
}
