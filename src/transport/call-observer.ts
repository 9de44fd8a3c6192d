import { status, type ServerInterceptingCallInterface, type ServerMethodDefinition } from '@grpc/grpc-js';
import type { Logger } from '../server/log';
import type { Metrics, RpcMetrics, RpcType } from '../server/metrics/metrics';

/**
 * What the call gate (request-decoding.ts) tells about one call, whatever the
 * service (sessions, admin, health, reflection) and whatever its shape: every
 * message received and sent, and how it ended. It sees method names, codes
 * and timings only: never a request or a reply, so never a token.
 */
export interface CallWatch {
  received(): void;
  sent(): void;
  /** The status the server sent. */
  ended(code: status): void;
  /**
   * grpc-js notifies a cancel after every call, also after its status went
   * out; it counts only when no status came first.
   */
  cancelled(): void;
}

export type CallWatcher = (method: ServerMethodDefinition<unknown, unknown>, call: ServerInterceptingCallInterface) => CallWatch;

/**
 * Counts calls and messages, times each call to its status, and logs unary
 * calls slower than `slowCallMs` (0: never). One object per call, with the
 * method's metrics looked up once per method.
 */
export function callObserver(metrics: Metrics, log: Logger, slowCallMs: number): CallWatcher {
  return (method, call) => {
    const type: RpcType = method.requestStream
      ? method.responseStream ? 'bidi_stream' : 'client_stream'
      : method.responseStream ? 'server_stream' : 'unary';
    return new ObservedCall(metrics.rpc(method.path, type), type === 'unary' ? slowCallMs : 0, log, method.path, call);
  };
}

class ObservedCall implements CallWatch {
  private readonly started = performance.now();
  private finished = false;

  constructor(
    private readonly rpc: RpcMetrics,
    private readonly slowCallMs: number,
    private readonly log: Logger,
    private readonly path: string,
    private readonly call: ServerInterceptingCallInterface,
  ) {
    rpc.started();
  }

  received(): void {
    this.rpc.received();
  }

  sent(): void {
    this.rpc.sent();
  }

  ended(code: status): void {
    if (this.finished) return;
    this.finished = true;
    const ms = performance.now() - this.started;
    this.rpc.handled(code, ms / 1000);
    if (this.slowCallMs > 0 && ms >= this.slowCallMs) {
      this.log.warn('slow call', { method: this.path, code: status[code], durationMs: Math.round(ms * 10) / 10, thresholdMs: this.slowCallMs, peer: this.call.getPeer() });
    }
  }

  // A cancel that no status preceded: the client cancelled, or grpc-js itself answered DEADLINE_EXCEEDED.
  cancelled(): void {
    if (!this.finished) this.ended(deadlinePassed(this.call.getDeadline()) ? status.DEADLINE_EXCEEDED : status.CANCELLED);
  }
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
