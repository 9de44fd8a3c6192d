import type { handleBidiStreamingCall } from '@grpc/grpc-js';
import {
  InvalidReason, type ValidateSessionStreamRequest, type ValidateSessionStreamResponse,
} from '../../generated/sessions/v1/session_service';
import type { SessionManager, ValidateResult } from '../domain/session-manager';
import type { Logger } from '../log';
import { reasonToProto, sessionToProto } from './convert';
import { toServiceError } from './status';

/**
 * The open validation streams, so that shutdown can close them: a gateway
 * keeps one open for good, and it would otherwise hold the drain until its
 * deadline on every SIGTERM.
 */
export class OpenStreams {
  private readonly closers = new Set<() => void>();

  add(close: () => void): () => void {
    this.closers.add(close);
    return () => this.closers.delete(close);
  }

  /** Stops reading every stream; each ends once its pending answers are written. */
  closeAll(): void {
    for (const close of [...this.closers]) close();
  }
}

/**
 * ValidateSessionStream: one answer per request, matched by correlation_id.
 * A bad request is answered with an error code and the stream goes on; only
 * the transport can end it. Reading pauses while the socket is backed up, so a
 * fast client cannot make the server buffer answers without bound.
 */
export function validateStreamHandler(
  sessions: SessionManager,
  log: Logger,
  open: OpenStreams,
): handleBidiStreamingCall<ValidateSessionStreamRequest, ValidateSessionStreamResponse> {
  return (call) => {
    let pending = 0;
    let ended = false;
    const finish = () => {
      if (ended && pending === 0) {
        forget();
        call.end();
      }
    };
    const forget = open.add(() => {
      // Requests already read are answered; nothing more is read.
      call.removeAllListeners('data');
      call.pause();
      ended = true;
      finish();
    });
    call.on('cancelled', () => forget());
    const answer = (res: ValidateSessionStreamResponse) => {
      pending--;
      if (call.cancelled || call.destroyed) return;
      if (!call.write(res)) {
        call.pause();
        call.once('drain', () => call.resume());
      }
      finish();
    };
    call.on('data', (req: ValidateSessionStreamRequest) => {
      pending++;
      const base = { correlationId: req.correlationId, valid: false, session: undefined, reason: InvalidReason.INVALID_REASON_UNSPECIFIED, errorCode: 0, errorMessage: '' };
      const build = (r: ValidateResult): ValidateSessionStreamResponse =>
        r.valid ? { ...base, valid: true, session: sessionToProto(r.session) } : { ...base, reason: reasonToProto(r.reason) };
      const failed = (err: unknown): ValidateSessionStreamResponse => {
        const se = toServiceError(err, 'ValidateSessionStream', log);
        return { ...base, errorCode: se.code, errorMessage: se.details };
      };
      const send = (res: ValidateSessionStreamResponse) => {
        try {
          answer(res);
        } catch (err) {
          log.error('could not write a validation answer', { method: 'ValidateSessionStream', err });
        }
      };
      // Most validations are reads answered synchronously: no promise hop per
      // message. Only a touch that writes goes through the group committer.
      let result: ValidateResult | Promise<ValidateResult>;
      let res: ValidateSessionStreamResponse;
      try {
        result = sessions.validate(req.token, req.touch);
        if (result instanceof Promise) {
          result.then(build).catch(failed).then(send);
          return;
        }
        res = build(result);
      } catch (err) {
        res = failed(err);
      }
      send(res);
    });
    call.on('end', () => {
      ended = true;
      finish();
    });
    // A cancelled stream emits 'error' on some grpc-js paths; nothing to answer then.
    call.on('error', () => undefined);
  };
}
