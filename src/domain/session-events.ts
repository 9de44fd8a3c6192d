/** What happened to a session, as SessionEvent.type names it. */
export type SessionEventType = 'CREATED' | 'UPDATED' | 'ROTATED' | 'REVOKED' | 'EXPIRED';

/** Why a session was revoked or expired (SessionEvent.cause); empty for the other types. */
export type EventCause = '' | 'delete' | 'revoke' | 'limit' | 'ttl' | 'idle';

/** One committed change, as the outbox stores it. */
export interface SessionEvent {
  readonly sequence: number;
  readonly type: SessionEventType;
  readonly sessionId: string;
  readonly serverId: string;
  readonly subject: string;
  /** Unix ms: when the event was written. */
  readonly time: number;
  readonly cause: EventCause;
}

/** The event a Modification makes, written in its transaction. */
export interface ModificationEvent {
  readonly type: 'UPDATED' | 'ROTATED' | 'REVOKED';
  readonly cause: EventCause;
  readonly time: number;
}

export interface EventPage {
  readonly events: SessionEvent[];
  /** The sequence of the last event committed (0: none yet). */
  readonly head: number;
  /** Events up to this sequence were pruned by retention (0: none). */
  readonly prunedThrough: number;
}

/** Which deadline ended a session that was never revoked. */
export function expiryCause(s: { expireTime: number; idleExpireTime: number }): EventCause {
  return s.expireTime <= s.idleExpireTime ? 'ttl' : 'idle';
}
