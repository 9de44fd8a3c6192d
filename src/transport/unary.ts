import type { handleUnaryCall, ServerUnaryCall } from '@grpc/grpc-js';
import type { Logger } from '../server/log';
import { toServiceError } from './status';

/**
 * Adapts a handler that returns (or resolves to) a response into grpc-js's
 * callback style. The callback is called exactly once; whatever the handler
 * throws or rejects with becomes a status through toServiceError, never an
 * unhandled rejection. Synchronous handlers answer without a promise hop.
 */
export function unary<Req, Res>(
  method: string,
  log: Logger,
  handler: (request: Req, call: ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let result: Res | Promise<Res>;
    try {
      result = handler(call.request, call);
    } catch (err) {
      callback(toServiceError(err, method, log));
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err, method, log)),
      );
    } else {
      callback(null, result);
    }
  };
}
