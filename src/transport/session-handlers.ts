import {
  InvalidReason, SessionServiceService, type SessionServiceServer, type ValidateSessionResponse,
} from '../../generated/sessions/v1/session_service';
import type { SessionRecord } from '../domain/session';
import type { SessionManager, ValidateResult } from '../domain/session-manager';
import type { Logger } from '../server/log';
import { durationToMs, reasonToProto, sessionToProto } from './convert';
import { acceptPreEncoded, encodeListResponse, encodeSessionResponse, encodeValidateResponse, preEncoded } from './session-wire';
import type { Authorizer } from './authorize';
import type { OpenStreams } from './open-streams';
import { validateStreamHandler } from './validate-stream';
import { watchEventsHandler, type WatchSettings } from './watch-events';
import type { EventFeed } from '../domain/event-feed';

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

/**
 * sessions.v1.SessionService: proto in, domain call, proto out. Add with
 * sessionService. Every handler is built by the Authorizer, which names the
 * caller and checks its permission first; the domain applies its server_ids.
 */
export function sessionHandlers(
  sessions: SessionManager, auth: Authorizer, log: Logger, streams: OpenStreams, events: { feed: EventFeed; settings: WatchSettings },
): SessionServiceServer {
  const S = SessionServiceService;
  return {
    createSession: auth.unary(S.createSession, async (req, caller) => {
      const { session, token } = await sessions.create(caller, {
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
    getSession: auth.unary(S.getSession, (req, caller) => {
      const s = sessions.get(caller, req.id);
      return s instanceof Promise ? s.then((found) => withSession(found)) : withSession(s);
    }),
    // The hot path stays synchronous unless the call has to write a touch.
    validateSession: auth.unary(S.validateSession, (req, caller) => {
      const r = sessions.validate(caller, req.token, req.touch);
      return r instanceof Promise ? r.then(validateResponse) : validateResponse(r);
    }),
    validateSessionStream: validateStreamHandler(sessions, auth, log, streams),
    touchSession: auth.unary(S.touchSession, async (req, caller) => withSession(await sessions.touch(caller, req.id))),
    updateSession: auth.unary(S.updateSession, async (req, caller) => withSession(
      await sessions.update(caller, {
        id: req.id,
        attributes: req.attributes,
        merge: req.merge,
        removeAttributes: req.removeAttributes,
        etag: req.etag,
      }),
    )),
    rotateSessionToken: auth.unary(S.rotateSessionToken, async (req, caller) => {
      const { session, token } = await sessions.rotateToken(caller, req.id);
      return withSession(session, token);
    }),
    deleteSession: auth.unary(S.deleteSession, async (req, caller) => {
      await sessions.delete(caller, req.id, req.allowMissing);
      return {};
    }),
    listSessions: auth.unary(S.listSessions, async (req, caller) => {
      const page = await sessions.list(caller, {
        serverId: req.serverId,
        subject: req.subject,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      const bytes = encodeListResponse(page.sessions, page.nextPageToken, page.sequence);
      return bytes ? preEncoded(bytes) : { sessions: page.sessions.map(sessionToProto), nextPageToken: page.nextPageToken, sequence: page.sequence };
    }),
    revokeSessions: auth.unary(S.revokeSessions, async (req, caller) => ({
      revokedCount: await sessions.revokeMatching(caller, { serverId: req.serverId, subject: req.subject, exceptSessionId: req.exceptSessionId }),
    })),
    watchSessionEvents: watchEventsHandler(events.feed, auth, log, streams, events.settings),
  };
}
