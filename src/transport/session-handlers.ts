import { InvalidReason, type SessionServiceServer, type ValidateSessionResponse } from '../../generated/sessions/v1/session_service';
import type { SessionManager, ValidateResult } from '../domain/session-manager';
import type { Logger } from '../log';
import { durationToMs, reasonToProto, sessionToProto } from './convert';
import { unary } from './unary';
import { validateStreamHandler, type OpenStreams } from './validate-stream';

function validateResponse(r: ValidateResult): ValidateSessionResponse {
  return r.valid
    ? { valid: true, session: sessionToProto(r.session), reason: InvalidReason.INVALID_REASON_UNSPECIFIED }
    : { valid: false, session: undefined, reason: reasonToProto(r.reason) };
}

/** sessions.v1.SessionService: proto in, domain call, proto out. */
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
      return { session: sessionToProto(session), token };
    }),
    getSession: unary('GetSession', log, (req) => ({ session: sessionToProto(sessions.get(req.id)) })),
    // The hot path stays synchronous unless the call has to write a touch.
    validateSession: unary('ValidateSession', log, (req) => {
      const r = sessions.validate(req.token, req.touch);
      return r instanceof Promise ? r.then(validateResponse) : validateResponse(r);
    }),
    validateSessionStream: validateStreamHandler(sessions, log, streams),
    touchSession: unary('TouchSession', log, async (req) => ({ session: sessionToProto(await sessions.touch(req.id)) })),
    updateSession: unary('UpdateSession', log, async (req) => ({
      session: sessionToProto(
        await sessions.update({
          id: req.id,
          attributes: req.attributes,
          merge: req.merge,
          removeAttributes: req.removeAttributes,
          etag: req.etag,
        }),
      ),
    })),
    rotateSessionToken: unary('RotateSessionToken', log, async (req) => {
      const { session, token } = await sessions.rotateToken(req.id);
      return { session: sessionToProto(session), token };
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
      return { sessions: page.sessions.map(sessionToProto), nextPageToken: page.nextPageToken };
    }),
    revokeSessions: unary('RevokeSessions', log, async (req) => ({
      revokedCount: await sessions.revokeMatching({ serverId: req.serverId, subject: req.subject }),
    })),
  };
}
