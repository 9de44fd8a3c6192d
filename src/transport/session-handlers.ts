import {
  InvalidReason, SessionServiceService, type SessionServiceServer, type ValidateSessionResponse,
} from '../../generated/sessions/v1/session_service';
import type { SessionRecord } from '../domain/session';
import type { SessionManager, ValidateResult } from '../domain/session-manager';
import type { Logger } from '../log';
import { durationToMs, reasonToProto, sessionToProto } from './convert';
import { acceptPreEncoded, encodeListResponse, encodeSessionResponse, encodeValidateResponse, preEncoded } from './session-wire';
import { unary } from './unary';
import { validateStreamHandler, type OpenStreams } from './validate-stream';

function validateResponse(r: ValidateResult): ValidateSessionResponse {
  const bytes = encodeValidateResponse(r);
  if (bytes) return preEncoded(bytes);
  return r.valid
    ? { valid: true, session: sessionToProto(r.session), reason: InvalidReason.INVALID_REASON_UNSPECIFIED }
    : { valid: false, session: undefined, reason: reasonToProto(r.reason) };
}

/** { session } or { session, token }, pre-encoded when session-wire covers the record. */
function withSession<T>(session: SessionRecord, token?: string): T {
  const bytes = encodeSessionResponse(session, token);
  if (bytes) return preEncoded(bytes);
  return (token === undefined ? { session: sessionToProto(session) } : { session: sessionToProto(session), token }) as T;
}

/**
 * The service definition sessionHandlers are written for: some answers are
 * pre-encoded Buffers (session-wire.ts), which it lets through.
 */
export const sessionService = acceptPreEncoded(SessionServiceService);

/** sessions.v1.SessionService: proto in, domain call, proto out. Add with sessionService. */
export function sessionHandlers(sessions: SessionManager, log: Logger, streams: OpenStreams): SessionServiceServer {
  return {
    createSession: unary('CreateSession', log, async (req) => {
      const { session, token } = await sessions.create({
        serverId: req.serverId,
        subject: req.subject,
        attributes: req.attributes,
        ip: req.ip,
        userAgent: req.userAgent,
        ttlMs: durationToMs('ttl', req.ttl),
        idleTimeoutMs: durationToMs('idle_timeout', req.idleTimeout),
        requestId: req.requestId,
      });
      return withSession(session, token);
    }),
    getSession: unary('GetSession', log, (req) => withSession(sessions.get(req.id))),
    // The hot path stays synchronous unless the call has to write a touch.
    validateSession: unary('ValidateSession', log, (req) => {
      const r = sessions.validate(req.token, req.touch);
      return r instanceof Promise ? r.then(validateResponse) : validateResponse(r);
    }),
    validateSessionStream: validateStreamHandler(sessions, log, streams),
    touchSession: unary('TouchSession', log, async (req) => withSession(await sessions.touch(req.id))),
    updateSession: unary('UpdateSession', log, async (req) => withSession(
      await sessions.update({
        id: req.id,
        attributes: req.attributes,
        merge: req.merge,
        removeAttributes: req.removeAttributes,
        etag: req.etag,
      }),
    )),
    rotateSessionToken: unary('RotateSessionToken', log, async (req) => {
      const { session, token } = await sessions.rotateToken(req.id);
      return withSession(session, token);
    }),
    deleteSession: unary('DeleteSession', log, async (req) => {
      await sessions.delete(req.id, req.allowMissing);
      return {};
    }),
    listSessions: unary('ListSessions', log, (req) => {
      const page = sessions.list({
        serverId: req.serverId,
        subject: req.subject,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      const bytes = encodeListResponse(page.sessions, page.nextPageToken);
      return bytes ? preEncoded(bytes) : { sessions: page.sessions.map(sessionToProto), nextPageToken: page.nextPageToken };
    }),
    revokeSessions: unary('RevokeSessions', log, async (req) => ({
      revokedCount: await sessions.revokeMatching({ serverId: req.serverId, subject: req.subject }),
    })),
  };
}
