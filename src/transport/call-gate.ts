import {
  status,
  type Deadline, type Metadata, type ServerInterceptingCall, type ServerInterceptingCallInterface, type ServerInterceptor, type ServerMethodDefinition,
} from '@grpc/grpc-js';
import type { CallWatch, CallWatcher } from './call-observer';
import { ItemLimitExceeded } from './stream-request';

/** What a deserializer returns for bytes that are not the message it expects (request-decoding.ts). */
export class MalformedRequest {
  constructor(readonly reason: string) {}
}

// grpc-js exports the interface of an intercepting call, not the types it is made of.
type Call = ServerInterceptingCallInterface;
type InterceptingServerListener = Parameters<Call['start']>[0];
type PartialStatusObject = Parameters<Call['sendStatus']>[0];

/**
 * The server's one interceptor. grpc-js's ServerInterceptingCall builds a
 * responder, a listener and a closure per event for every interceptor of every
 * call; this gate is one object per call that is both the call the handler
 * sees and the listener grpc-js delivers to, with a CallWatch (metrics, slow
 * calls) beside it.
 *
 * It answers INVALID_ARGUMENT, before any handler runs, for a request message
 * that did not decode, for a unary request stream that ends without a
 * complete message (a truncated frame; grpc-js would say UNIMPLEMENTED), and
 * for a second message on a unary call. A bad message on ValidateSessionStream
 * ends that stream: without its correlation_id it cannot be answered in-stream.
 * One over the item limit goes on to the handler, which ends the stream once
 * it has answered the messages before it.
 *
 * After either refusal it asks grpc-js for no more request messages. The
 * handler's stream asks for the next message as soon as it has taken one
 * (until it holds 16, even while paused), and grpc-js then reads and decodes
 * the next DATA frame: messages behind a refused one would be decoded for a
 * stream that is about to end. Only the rest of the frame that completed the
 * refused message is decoded still, as grpc-js decodes a frame's messages
 * together.
 */
export function callGate(watcher: CallWatcher | undefined): ServerInterceptor {
  // grpc-js's type asks for its ServerInterceptingCall class; the server only uses the interface.
  return (method, next) => new GatedCall(method, next, watcher?.(method, next)) as unknown as ServerInterceptingCall;
}

class GatedCall implements ServerInterceptingCallInterface, InterceptingServerListener {
  private listener: InterceptingServerListener | undefined;
  private received = 0;
  private refused = false;
  // As grpc-js's own listeners do: once cancelled, later events are dropped.
  private cancelled = false;

  constructor(
    private readonly method: ServerMethodDefinition<unknown, unknown>,
    private readonly next: ServerInterceptingCallInterface,
    private readonly watch: CallWatch | undefined,
  ) {}

  start(listener: InterceptingServerListener): void {
    this.listener = listener;
    this.next.start(this);
  }

  onReceiveMetadata(metadata: Metadata): void {
    if (!this.cancelled) this.listener!.onReceiveMetadata(metadata);
  }

  onReceiveMessage(message: unknown): void {
    if (this.cancelled) return;
    this.watch?.received();
    this.received++;
    if (message instanceof ItemLimitExceeded) {
      this.refused = true;
      this.listener!.onReceiveMessage(message);
    } else if (message instanceof MalformedRequest) {
      this.refused = true;
      this.reject(`the request is not a valid ${messageName(this.method.path)} message: ${message.reason}`);
    } else if (!this.method.requestStream && this.received > 1) {
      this.reject(`${this.method.path} takes exactly one request message`);
    } else {
      this.listener!.onReceiveMessage(message);
    }
  }

  onReceiveHalfClose(): void {
    if (this.cancelled) return;
    if (!this.method.requestStream && this.received === 0) {
      this.reject('the request ended before a complete message arrived (a truncated gRPC frame?)');
    } else {
      this.listener!.onReceiveHalfClose();
    }
  }

  onCancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.watch?.cancelled();
    this.listener!.onCancel();
  }

  sendMetadata(metadata: Metadata): void {
    this.next.sendMetadata(metadata);
  }

  sendMessage(message: unknown, callback: () => void): void {
    this.watch?.sent();
    this.next.sendMessage(message, callback);
  }

  sendStatus(s: PartialStatusObject): void {
    this.watch?.ended(s.code);
    this.next.sendStatus(s);
  }

  startRead(): void {
    if (!this.refused) this.next.startRead();
  }

  getPeer(): string {
    return this.next.getPeer();
  }

  getDeadline(): Deadline {
    return this.next.getDeadline();
  }

  getHost(): string {
    return this.next.getHost();
  }

  getAuthContext(): ReturnType<Call['getAuthContext']> {
    return this.next.getAuthContext();
  }

  getConnectionInfo(): ReturnType<Call['getConnectionInfo']> {
    return this.next.getConnectionInfo();
  }

  getMetricsRecorder(): ReturnType<Call['getMetricsRecorder']> {
    return this.next.getMetricsRecorder();
  }

  private reject(details: string): void {
    this.sendStatus({ code: status.INVALID_ARGUMENT, details });
  }
}

function messageName(path: string): string {
  return `${path.slice(1).replace('/', '.')} request`;
}
