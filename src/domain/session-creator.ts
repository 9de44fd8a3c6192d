import type { Clock } from './clock';
import { AlreadyExistsError, UniqueViolationError } from './errors';
import { requireServerId, type Principal } from './principals';
import { createFingerprint, RecentCreates, replayKey, type CreateAnswer } from './recent-creates';
import { checkAttributes, checkIp, checkString, resolveDuration, sessionState, type SessionPolicy, type SessionRecord } from './session';
import type { SessionRepository } from './session-repository';
import { hashToken, newSessionId, newToken } from './tokens';

export interface CreateSessionInput {
  serverId: string;
  subject: string;
  attributes: Record<string, string>;
  ip: string;
  userAgent: string;
  /** undefined or 0: the policy default. */
  ttlMs?: number;
  idleTimeoutMs?: number;
  /** Idempotency key, unique per serverId; empty or undefined: none. */
  requestId?: string;
}

const MAX_REQUEST_ID_BYTES = 128;

/**
 * CreateSession, with its idempotency: a retry with a request_id answers the
 * first token again only to the same caller, for exactly the same request,
 * while the session still holds that token.
 */
export class SessionCreator {
  private readonly recentCreates: RecentCreates;

  constructor(
    private readonly repo: SessionRepository,
    private readonly clock: Clock,
    private readonly policy: SessionPolicy,
  ) {
    this.recentCreates = new RecentCreates(clock);
  }

  /**
   * @throws InvalidArgumentError; PermissionDeniedError for a server_id outside
   *   the caller's; AlreadyExistsError when `requestId` was used before and its
   *   token cannot be answered again (see replay); storage errors.
   */
  async create(caller: Principal, input: CreateSessionInput): Promise<CreateAnswer> {
    const p = this.policy;
    checkString('server_id', input.serverId, p.maxIdBytes, true);
    requireServerId(caller, input.serverId);
    const requestId = input.requestId ?? '';
    checkString('request_id', requestId, MAX_REQUEST_ID_BYTES);
    checkString('subject', input.subject, p.maxIdBytes);
    checkString('user_agent', input.userAgent, p.maxUserAgentBytes);
    checkIp(input.ip);
    checkAttributes('attributes', input.attributes, p);
    const ttl = resolveDuration('ttl', input.ttlMs, p.defaultTtlMs, p.maxTtlMs);
    const idle = resolveDuration('idle_timeout', input.idleTimeoutMs, p.defaultIdleTimeoutMs, p.maxTtlMs);
    const key = replayKey(caller.name, input.serverId, requestId);
    const fingerprint = requestId === '' ? '' : createFingerprint(input);
    if (requestId !== '') {
      const earlier = this.recentCreates.get(key);
      if (earlier) {
        const replayed = await this.replay(requestId, fingerprint, earlier);
        if (replayed) return replayed;
        // The earlier create's outcome was unknown and it did not commit: this one creates the session.
      }
    }
    const now = this.clock.now();
    const session: SessionRecord = {
      id: newSessionId(now),
      serverId: input.serverId,
      subject: input.subject,
      attributes: { ...input.attributes },
      ip: input.ip,
      userAgent: input.userAgent,
      createTime: now,
      updateTime: now,
      expireTime: now + ttl,
      idleExpireTime: Math.min(now + idle, now + ttl),
      lastActiveTime: now,
      idleTimeoutMs: idle,
      tokenRotateTime: now,
      revokeTime: null,
      version: 1,
    };
    const token = newToken();
    const tokenHash = hashToken(token);
    const created = this.insert(session, token, tokenHash, requestId, now);
    // A create whose outcome is unknown (PostgreSQL: the connection was lost before the commit was
    // confirmed) may have committed: a retry must then get this token, as after a timeout (docs/api.md).
    if (requestId !== '') this.recentCreates.put(key, fingerprint, created, { session, token });
    return created;
  }

  /**
   * The unique key on (server_id, request_id) decides a race between two
   * creates with one request_id, on this server or on another replica of the
   * same database: the loser finds the winner's session and is told so.
   */
  private async insert(session: SessionRecord, token: string, tokenHash: Buffer, requestId: string, now: number): Promise<CreateAnswer> {
    const max = this.policy.maxSessionsPerSubject;
    // A session without a subject belongs to no user: no limit counts it.
    const limit = max > 0 && session.subject !== '' ? { max, evict: this.policy.sessionLimitPolicy === 'evict-oldest', now } : undefined;
    try {
      await this.repo.insert(session, tokenHash, requestId || undefined, limit);
    } catch (err) {
      const stored = err instanceof UniqueViolationError && requestId !== '' ? await this.repo.findByRequestId(session.serverId, requestId) : undefined;
      if (!stored) throw err;
      throw new AlreadyExistsError(
        `request_id ${JSON.stringify(requestId)} already created session ${stored.id}; its token is not kept, so it cannot be returned again`,
      );
    }
    return { session, token };
  }

  /**
   * A retry of a create by the same caller: its answer again, token included,
   * only when it asks for exactly the same thing and the session still holds
   * that token (not rotated, not revoked, not expired).
   * @returns undefined when the earlier create's outcome was unknown and it is not stored: create anew.
   * @throws AlreadyExistsError otherwise.
   */
  private async replay(
    requestId: string, fingerprint: string, earlier: { fingerprint: string; answer: Promise<CreateAnswer>; unconfirmed?: boolean | undefined },
  ): Promise<CreateAnswer | undefined> {
    const shown = JSON.stringify(requestId);
    if (earlier.fingerprint !== fingerprint) {
      throw new AlreadyExistsError(`request_id ${shown} was already used for a create with other fields; a retry must repeat the request exactly (use a new request_id for a new session)`);
    }
    const answer = await earlier.answer;
    const now = this.clock.now();
    // Looked up by the token itself: a rotation in the same millisecond leaves every time as it was.
    const current = await this.repo.findByTokenHash(hashToken(answer.token));
    // Not stored: an unconfirmed create did not commit (the unique request_id still stops a duplicate if it commits late).
    if (!current && earlier.unconfirmed) return undefined;
    if (!current || current.id !== answer.session.id || sessionState(current, now) !== 'live') {
      throw new AlreadyExistsError(`request_id ${shown} created session ${answer.session.id}, which has since been rotated, revoked or expired: its first token is not returned again`);
    }
    return { session: current, token: answer.token };
  }
}
