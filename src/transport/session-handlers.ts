import { InvalidReason, type SessionServiceServer } from '../../generated/sessions/v1/session_service';
import type { SessionManager } from '../domain/session-manager';
import type { Logger } from '../log';
import { durationToMs, reasonToProto, sessionToProto } from './convert';
import { unary } from './unary';
import { validateStreamHandler } from './validate-stream';

/** sessions.v1.SessionService: proto in, domain call, proto out. */
export function sessionHandlers(sessions: SessionManager, log: Logger): SessionServiceServer {
  return {
    createSession: unary('CreateSession', log, (req) => {
      const { session, token } = sessions.create({
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
    validateSession: unary('ValidateSession', log, (req) => {
      const r = sessions.validate(req.token, req.touch);
      return r.valid
        ? { valid: true, session: sessionToProto(r.session), reason: InvalidReason.INVALID_REASON_UNSPECIFIED }
        : { valid: false, session: undefined, reason: reasonToProto(r.reason) };
    }),
    validateSessionStream: validateStreamHandler(sessions, log),
    touchSession: unary('TouchSession', log, (req) => ({ session: sessionToProto(sessions.touch(req.id)) })),
    updateSession: unary('UpdateSession', log, (req) => ({
      session: sessionToProto(
        sessions.update({
          id: req.id,
          attributes: req.attributes,
          merge: req.merge,
          removeAttributes: req.removeAttributes,
          etag: req.etag,
        }),
      ),
    })),
    rotateSessionToken: unary('RotateSessionToken', log, (req) => {
      const { session, token } = sessions.rotateToken(req.id);
      return { session: sessionToProto(session), token };
    }),
    deleteSession: unary('DeleteSession', log, (req) => {
      sessions.delete(req.id, req.allowMissing);
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
    revokeSessions: unary('RevokeSessions', log, (req) => ({
      revokedCount: sessions.revokeMatching({ serverId: req.serverId, subject: req.subject }),
    })),
  };
}
