import type { Clock } from './clock';
import { AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from './errors';
import { RecentCreates } from './recent-creates';
import { decodePageToken, encodePageToken } from './page-token';
import {
  checkAttributes, checkIp, checkString, etagOf, resolveDuration, sessionState, touchedIdleExpiry,
  type SessionPolicy, type SessionRecord, type SessionState,
} from './session';
import type { PurgeRunner, SessionFilter, SessionRepository, WriteRunner } from './session-repository';
import { hashToken, ID_PATTERN, newSessionId, newToken } from './tokens';

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

export interface UpdateSessionInput {
  id: string;
  attributes: Record<string, string>;
  merge: boolean;
  removeAttributes: string[];
  /** Empty: unconditional. */
  etag: string;
}

export interface ListSessionsInput extends SessionFilter {
  pageSize: number;
  pageToken: string;
}

export type InvalidReason = Exclude<SessionState, 'live'> | 'not-found';

export type ValidateResult =
  | { valid: true; session: SessionRecord }
  | { valid: false; reason: InvalidReason };

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;
/** Far above any real token; bounds the hashing work an abusive caller can ask for. */
const MAX_TOKEN_BYTES = 512;
const MAX_REQUEST_ID_BYTES = 128;

/**
 * The session rules: everything between a request that transport has decoded
 * and the repository; no gRPC, no SQLite. Reads are synchronous; every write
 * is one unit handed to the WriteRunner, and resolves once committed.
 */
export class SessionManager {
  private readonly recentCreates: RecentCreates;
  /** Creates under way by idempotency key, so that a concurrent retry joins the first. */
  private readonly creating = new Map<string, Promise<{ session: SessionRecord; token: string }>>();

  constructor(
    private readonly repo: SessionRepository,
    private readonly writes: WriteRunner,
    private readonly clock: Clock,
    readonly policy: SessionPolicy,
    /** Where purge batches run; without one, through `writes` like any other write. */
    private readonly purger?: PurgeRunner,
  ) {
    this.recentCreates = new RecentCreates(clock);
  }

  /**
   * @throws InvalidArgumentError; AlreadyExistsError when `requestId` was used
   *   before and its answer is no longer cached; storage errors.
   */
  async create(input: CreateSessionInput): Promise<{ session: SessionRecord; token: string }> {
    const p = this.policy;
    checkString('server_id', input.serverId, p.maxIdBytes, true);
    const requestId = input.requestId ?? '';
    checkString('request_id', requestId, MAX_REQUEST_ID_BYTES);
    const key = `${input.serverId}\0${requestId}`;
    if (requestId !== '') {
      const cached = this.recentCreates.get(input.serverId, requestId) ?? this.creating.get(key);
      if (cached) return cached;
    }
    checkString('subject', input.subject, p.maxIdBytes);
    checkString('user_agent', input.userAgent, p.maxUserAgentBytes);
    checkIp(input.ip);
    checkAttributes('attributes', input.attributes, p);
    const ttl = resolveDuration('ttl', input.ttlMs, p.defaultTtlMs, p.maxTtlMs);
    const idle = resolveDuration('idle_timeout', input.idleTimeoutMs, p.defaultIdleTimeoutMs, p.maxTtlMs);
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
    const created = this.writes.run(() => {
      // Checked inside the write unit, so no other create can slip in between.
      const earlier = requestId === '' ? undefined : this.repo.findByRequestId(input.serverId, requestId);
      if (earlier) {
        throw new AlreadyExistsError(
          `request_id ${JSON.stringify(requestId)} already created session ${earlier.id}; its token is not kept, so it cannot be returned again`,
        );
      }
      this.repo.insert(session, tokenHash, requestId || undefined);
      return { session, token };
    });
    if (requestId === '') return created;
    this.creating.set(key, created);
    try {
      const answer = await created;
      this.recentCreates.put(input.serverId, requestId, answer);
      return answer;
    } finally {
      this.creating.delete(key);
    }
  }

  /** @throws InvalidArgumentError for a malformed id, NotFoundError unless live. */
  get(id: string): SessionRecord {
    checkId(id);
    const s = this.repo.findById(id);
    if (!s || sessionState(s, this.clock.now()) !== 'live') throw notFound(id);
    return s;
  }

  /**
   * Resolves a token. Unknown and dead tokens are a normal answer, not an error.
   * @throws InvalidArgumentError only for an empty or oversized token.
   */
  validate(token: string, touch: boolean): ValidateResult | Promise<ValidateResult> {
    if (token.length === 0) throw new InvalidArgumentError('token', 'token is required');
    if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) {
      throw new InvalidArgumentError('token', `token is over ${MAX_TOKEN_BYTES} bytes`);
    }
    const now = this.clock.now();
    const found = this.repo.findByTokenHash(hashToken(token));
    if (!found) return { valid: false, reason: 'not-found' };
    const state = sessionState(found, now);
    if (state !== 'live') return { valid: false, reason: state };
    if (!touch || touchedIdleExpiry(found, now, this.policy) === undefined) return { valid: true, session: found };
    return this.touchLive(found.id, now).then((touched) =>
      // The session died between the read and the touch (revoked by another call): report it as such.
      touched ? { valid: true, session: touched } : { valid: false, reason: 'revoked' },
    );
  }

  /**
   * Runs `validations` (calls of validate) against one snapshot of storage:
   * cheaper per validation than each on its own, and all of them see the same
   * state. Touches they start are written afterwards, as usual.
   */
  inSnapshot<T>(validations: () => T): T {
    return this.repo.snapshot(validations);
  }

  /** @throws InvalidArgumentError, NotFoundError unless live. */
  async touch(id: string): Promise<SessionRecord> {
    checkId(id);
    const now = this.clock.now();
    // A throttled touch writes nothing, so it is answered from a read and
    // never waits for the write lock.
    const current = this.repo.findById(id);
    if (!current || sessionState(current, now) !== 'live') throw notFound(id);
    if (touchedIdleExpiry(current, now, this.policy) === undefined) return current;
    const touched = await this.touchLive(id, now);
    if (!touched) throw notFound(id);
    return touched;
  }

  /** @throws InvalidArgumentError, NotFoundError, FailedPreconditionError on a stale etag. */
  async update(input: UpdateSessionInput): Promise<SessionRecord> {
    checkId(input.id);
    checkAttributes('attributes', input.attributes, this.policy);
    if (!input.merge && input.removeAttributes.length > 0) {
      throw new InvalidArgumentError('remove_attributes', 'remove_attributes needs merge=true (a replace already drops every key not given)');
    }
    for (const key of input.removeAttributes) checkString('remove_attributes', key, this.policy.maxAttributeKeyBytes);
    const now = this.clock.now();
    const stored = await this.writes.run(() => this.repo.modify(input.id, (current) => {
      if (sessionState(current, now) !== 'live') throw notFound(input.id);
      if (input.etag !== '' && input.etag !== etagOf(current)) {
        throw new FailedPreconditionError(
          `etag ${JSON.stringify(input.etag.slice(0, 64))} is stale: the session is at ${etagOf(current)}; read it again and retry`,
        );
      }
      const attributes = input.merge ? { ...current.attributes, ...input.attributes } : { ...input.attributes };
      for (const key of input.removeAttributes) delete attributes[key];
      checkAttributes('attributes', attributes, this.policy);
      return { next: { ...current, attributes, updateTime: now, version: current.version + 1 } };
    }));
    if (!stored) throw notFound(input.id);
    return stored;
  }

  /** @throws InvalidArgumentError, NotFoundError unless live. */
  async rotateToken(id: string): Promise<{ session: SessionRecord; token: string }> {
    checkId(id);
    const now = this.clock.now();
    const token = newToken();
    const tokenHash = hashToken(token);
    const stored = await this.writes.run(() => this.repo.modify(id, (current) => {
      if (sessionState(current, now) !== 'live') throw notFound(id);
      return { next: { ...current, tokenRotateTime: now }, tokenHash };
    }));
    if (!stored) throw notFound(id);
    return { session: stored, token };
  }

  /** @throws InvalidArgumentError, NotFoundError unless live or allowMissing. */
  async delete(id: string, allowMissing: boolean): Promise<void> {
    checkId(id);
    const now = this.clock.now();
    const revoked = await this.writes.run(() => {
      let live = false;
      this.repo.modify(id, (current) => {
        if (sessionState(current, now) !== 'live') return null;
        live = true;
        return { next: { ...current, revokeTime: now } };
      });
      return live;
    });
    if (!revoked && !allowMissing) throw notFound(id);
  }

  /** @throws InvalidArgumentError for a bad page size or page token. */
  list(input: ListSessionsInput): { sessions: SessionRecord[]; nextPageToken: string } {
    const filter: SessionFilter = { serverId: input.serverId, subject: input.subject };
    checkString('server_id', filter.serverId, this.policy.maxIdBytes);
    checkString('subject', filter.subject, this.policy.maxIdBytes);
    if (!Number.isInteger(input.pageSize) || input.pageSize < 0 || input.pageSize > MAX_PAGE_SIZE) {
      throw new InvalidArgumentError('page_size', `page_size must be between 0 and ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}); got ${input.pageSize}`);
    }
    const cursor = decodePageToken(input.pageToken, filter);
    const page = this.repo.list(filter, cursor, input.pageSize || DEFAULT_PAGE_SIZE, this.clock.now());
    return {
      sessions: page.sessions,
      nextPageToken: page.nextCursor === undefined ? '' : encodePageToken(page.nextCursor, filter),
    };
  }

  /** @throws InvalidArgumentError when neither filter is set. */
  revokeMatching(filter: SessionFilter): Promise<number> {
    if (filter.serverId === '' && filter.subject === '') {
      throw new InvalidArgumentError('server_id', 'set server_id or subject (or both): revoking every session needs a filter');
    }
    checkString('server_id', filter.serverId, this.policy.maxIdBytes);
    checkString('subject', filter.subject, this.policy.maxIdBytes);
    const now = this.clock.now();
    return this.writes.run(() => this.repo.revokeMatching(filter, now));
  }

  /**
   * Deletes dead sessions in batches of `batchSize`, yielding to the event loop
   * between batches so that calls keep being served during a large purge.
   * Batches go to the PurgeRunner when there is one. An aborted signal stops it
   * between batches (at shutdown).
   */
  async purgeExpired(batchSize: number, signal?: AbortSignal): Promise<{ purged: number; batches: number }> {
    let purged = 0;
    let batches = 0;
    for (;;) {
      const now = this.clock.now();
      const n = this.purger
        ? await this.purger.purgeBatch(now, batchSize)
        : await this.writes.run(() => this.repo.purgeBatch(now, batchSize));
      if (n > 0) batches++;
      purged += n;
      if (n < batchSize || signal?.aborted) return { purged, batches };
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  counts(): { live: number; dead: number } {
    return this.repo.countSessions(this.clock.now());
  }

  private touchLive(id: string, now: number): Promise<SessionRecord | undefined> {
    return this.writes.run(() => {
      let live = false;
      const stored = this.repo.modify(id, (current) => {
        if (sessionState(current, now) !== 'live') return null;
        live = true;
        const idleExpireTime = touchedIdleExpiry(current, now, this.policy);
        if (idleExpireTime === undefined) return null;
        return { next: { ...current, idleExpireTime, lastActiveTime: now } };
      });
      return live ? stored : undefined;
    });
  }
}

function checkId(id: string): void {
  if (id.length === 0) throw new InvalidArgumentError('id', 'id is required');
  if (!ID_PATTERN.test(id)) throw new InvalidArgumentError('id', `id ${JSON.stringify(id.slice(0, 64))} is not a session id (22 base64url characters)`);
}

function notFound(id: string): NotFoundError {
  return new NotFoundError(`session ${id} not found (never created, expired, or revoked)`);
}
