import { ServerInterceptingCall, status, type ServerInterceptor } from '@grpc/grpc-js';
import type { Logger } from '../server/log';
import type { Metrics, RpcType } from '../server/metrics/metrics';

/**
 * The one place every call is observed, whatever the service (sessions,
 * admin, health, reflection) and whatever its shape (unary or streaming):
 * a grpc-js server interceptor. It counts calls and messages, times each call
 * to its status, and logs unary calls slower than `slowCallMs` (0: never).
 * It sees method names, codes and timings only: never a request or a reply,
 * so never a token.
 */
export function callObserver(metrics: Metrics, log: Logger, slowCallMs: number): ServerInterceptor {
  return (method, call) => {
    const type: RpcType = method.requestStream
      ? method.responseStream ? 'bidi_stream' : 'client_stream'
      : method.responseStream ? 'server_stream' : 'unary';
    const rpc = metrics.rpc(method.path, type);
    const started = performance.now();
    rpc.started();
    let finished = false;
    const finish = (code: status) => {
      if (finished) return;
      finished = true;
      const ms = performance.now() - started;
      rpc.handled(code, ms / 1000);
      if (slowCallMs > 0 && type === 'unary' && ms >= slowCallMs) {
        log.warn('slow call', { method: method.path, code: status[code], durationMs: Math.round(ms * 10) / 10, thresholdMs: slowCallMs, peer: call.getPeer() });
      }
    };
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMessage: (message, nextMessage) => {
            rpc.received();
            nextMessage(message);
          },
          // grpc-js notifies a cancel after every call, also after its status
          // went out; it counts only when no status came first: the client
          // cancelled, or grpc-js itself answered DEADLINE_EXCEEDED.
          onCancel: () => finish(deadlinePassed(call.getDeadline()) ? status.DEADLINE_EXCEEDED : status.CANCELLED),
        }),
      sendMessage: (message, next) => {
        rpc.sent();
        next(message);
      },
      sendStatus: (s, next) => {
        finish(s.code);
        next(s);
      },
    });
  };
}

/**
 * A client cancels at its deadline, and its RST_STREAM can arrive a moment
 * before the server's own timer (set from grpc-timeout when the headers came)
 * fires: a cancel this close to the deadline is the deadline.
 */
const DEADLINE_SLACK_MS = 20;

function deadlinePassed(deadline: Date | number): boolean {
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) && ms - DEADLINE_SLACK_MS <= Date.now();
}
