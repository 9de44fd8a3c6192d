import type { handleBidiStreamingCall } from '@grpc/grpc-js';
import {
  InvalidReason, type ValidateSessionStreamRequest, type ValidateSessionStreamResponse,
} from '../../generated/sessions/v1/session_service';
import type { SessionManager } from '../domain/session-manager';
import type { Logger } from '../log';
import { reasonToProto, sessionToProto } from './convert';
import { toServiceError } from './status';

/**
 * ValidateSessionStream: one answer per request, matched by correlation_id.
 * A bad request is answered with an error code and the stream goes on; only
 * the transport can end it. Reading pauses while the socket is backed up, so a
 * fast client cannot make the server buffer answers without bound.
 */
export function validateStreamHandler(
  sessions: SessionManager,
  log: Logger,
): handleBidiStreamingCall<ValidateSessionStreamRequest, ValidateSessionStreamResponse> {
  return (call) => {
    let pending = 0;
    let ended = false;
    const finish = () => {
      if (ended && pending === 0) call.end();
    };
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
      Promise.resolve()
        .then(() => sessions.validate(req.token, req.touch))
        .then(
          (r) => answer(r.valid ? { ...base, valid: true, session: sessionToProto(r.session) } : { ...base, reason: reasonToProto(r.reason) }),
          (err: unknown) => {
            const se = toServiceError(err, 'ValidateSessionStream', log);
            answer({ ...base, errorCode: se.code, errorMessage: se.details });
          },
        );
    });
    call.on('end', () => {
      ended = true;
      finish();
    });
    // A cancelled stream emits 'error' on some grpc-js paths; nothing to answer then.
    call.on('error', () => undefined);
  };
}
