import { InvalidReason, ValidateSessionStreamAnswer } from '../../generated/sessions/v1/session_service';
import type { ValidateResult } from '../domain/session-manager';
import type { Logger } from '../server/log';
import { reasonToProto, sessionToProto } from './convert';
import { encodeStreamAnswer } from './session-wire';
import { toServiceError } from './status';

/** One validation's answer on ValidateSessionStream. */
export function answerOf(correlationId: number, r: ValidateResult): ValidateSessionStreamAnswer {
  return r.valid
    ? { correlationId, valid: true, session: sessionToProto(r.session), reason: InvalidReason.INVALID_REASON_UNSPECIFIED, errorCode: 0, errorMessage: '' }
    : { correlationId, valid: false, session: undefined, reason: reasonToProto(r.reason), errorCode: 0, errorMessage: '' };
}

/** A validation that failed: answered in-stream with the status it would have had, and the stream goes on. */
export function failedAnswer(log: Logger, correlationId: number, err: unknown): ValidateSessionStreamAnswer {
  const se = toServiceError(err, 'ValidateSessionStream', log);
  return { correlationId, valid: false, session: undefined, reason: InvalidReason.INVALID_REASON_UNSPECIFIED, errorCode: se.code, errorMessage: se.details };
}

/** An answer the fast path (session-wire.ts) does not cover, through the generated encoder. */
export function encodeAnswer(a: ValidateSessionStreamAnswer): Buffer {
  return Buffer.from(ValidateSessionStreamAnswer.encode(a).finish());
}

/** The answer's bytes: the fast path where it applies, else the generated encoder; a fault in either is a failed answer. */
export function encodedAnswer(log: Logger, id: number, r: ValidateResult): Buffer {
  try {
    return encodeStreamAnswer(id, r) ?? encodeAnswer(answerOf(id, r));
  } catch (err) {
    return encodeAnswer(failedAnswer(log, id, err));
  }
}
