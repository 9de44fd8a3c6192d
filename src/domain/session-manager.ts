import type { Clock } from './clock';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from './errors';
import { requireServerId, type Principal } from './principals';
import type { CreateAnswer } from './recent-creates';
import { SessionCreator, type CreateSessionInput } from './session-creator';
import type { ListSessionsInput, RevokeFilter, SessionLimits, UpdateSessionInput, ValidateResult } from './session-requests';
import { decodePageToken, encodePageToken } from './page-token';
import {
  checkAttributes, checkString, encodedSizeBound, etagOf, sessionState, touchedIdleExpiry,
  type SessionPolicy, type SessionRecord,
} from './session';
import type { MaybePromise, SessionFilter, SessionRepository } from './session-repository';
import { hashToken, ID_PATTERN, newToken } from './tokens';


export type { CreateSessionInput } from './session-creator';
export type { InvalidReason, ListSessionsInput, RevokeFilter, SessionLimits, UpdateSessionInput, ValidateResult } from './session-requests';

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;
/** Far above any real token; bounds the hashing work an abusive caller can ask for. */
export const MAX_TOKEN_BYTES = 512;

/**
 * The session rules: everything between a request that transport has decoded
 * and the repository; no gRPC, no database. Reads answer synchronously when
 * the repository does (SQLite), so the hot path takes no promise hop there;
 * writes resolve once committed.
 *
 * Every call names its caller, and the caller's server_ids bound what it sees:
 * creating for another server_id, or naming one in a filter, is
 * PERMISSION_DENIED; another backend's session named by id is NOT_FOUND,
 * exactly as a missing one (its existence is not revealed), and its token
 * validates as not found.
 */
export class SessionManager {
  private readonly creator: SessionCreator;
  private readonly revokeBatchSize: number;
  private readonly maxPageBytes: number;

  constructor(
    private readonly repo: SessionRepository,
    private readonly clock: Clock,
    readonly policy: SessionPolicy,
    limits: SessionLimits = {},
  ) {
    this.creator = new SessionCreator(repo, clock, policy);
    this.revokeBatchSize = limits.revokeBatchSize ?? 500;
    this.maxPageBytes = limits.maxPageBytes ?? 256 * 1024;
  }

  /**
   * @throws InvalidArgumentError; PermissionDeniedError for a server_id outside
   *   the caller's; AlreadyExistsError when `requestId` was used before and its
   *   token cannot be answered again (see SessionCreator); storage errors.
   */
  create(caller: Principal, input: CreateSessionInput): Promise<CreateAnswer> {
    return this.creator.create(caller, input);
  }

  /** @throws InvalidArgumentError for a malformed id, NotFoundError unless live and the caller's. */
  get(caller: Principal, id: string): MaybePromise<SessionRecord> {
    checkId(id);
    return then(this.repo.findById(id), (s) => {
      if (!s || !caller.scope.includes(s.serverId) || sessionState(s, this.clock.now()) !== 'live') throw notFound(id);
      return s;
    });
  }

  /**
   * Resolves a token. Unknown and dead tokens, and tokens of sessions outside
   * the caller's server_ids, are a normal answer (not found), not an error.
   * @throws InvalidArgumentError only for an empty or oversized token.
   */
  validate(caller: Principal, token: string, touch: boolean): ValidateResult | Promise<ValidateResult> {
    if (token.length === 0) throw new InvalidArgumentError('token', 'token is required');
    if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) {
      throw new InvalidArgumentError('token', `token is over ${MAX_TOKEN_BYTES} bytes`);
    }
    const now = this.clock.now();
    const found = this.repo.findByTokenHash(hashToken(token));
    return found instanceof Promise ? found.then((f) => this.judge(caller, f, now, touch)) : this.judge(caller, found, now, touch);
  }

  private judge(caller: Principal, found: SessionRecord | undefined, now: number, touch: boolean): ValidateResult | Promise<ValidateResult> {
    if (!found || !caller.scope.includes(found.serverId)) return { valid: false, reason: 'not-found' };
    const state = sessionState(found, now);
    if (state !== 'live') return { valid: false, reason: state };
    if (!touch || touchedIdleExpiry(found, now, this.policy) === undefined) return { valid: true, session: found };
    return this.touchLive(caller, found.id, now).then((touched) =>
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

  /** @throws InvalidArgumentError, NotFoundError unless live and the caller's. */
  async touch(caller: Principal, id: string): Promise<SessionRecord> {
    checkId(id);
    const now = this.clock.now();
    // A throttled touch writes nothing, so it is answered from a read and
    // never waits for the write lock.
    const current = await this.repo.findById(id);
    if (!current || !caller.scope.includes(current.serverId) || sessionState(current, now) !== 'live') throw notFound(id);
    if (touchedIdleExpiry(current, now, this.policy) === undefined) return current;
    const touched = await this.touchLive(caller, id, now);
    if (!touched) throw notFound(id);
    return touched;
  }

  /** @throws InvalidArgumentError, NotFoundError, FailedPreconditionError on a stale etag. */
  async update(caller: Principal, input: UpdateSessionInput): Promise<SessionRecord> {
    checkId(input.id);
    checkAttributes('attributes', input.attributes, this.policy);
    if (!input.merge && input.removeAttributes.length > 0) {
      throw new InvalidArgumentError('remove_attributes', 'remove_attributes needs merge=true (a replace already drops every key not given)');
    }
    for (const key of input.removeAttributes) checkString('remove_attributes', key, this.policy.maxAttributeKeyBytes);
    const now = this.clock.now();
    const stored = await this.repo.modify(input.id, (current) => {
      if (!caller.scope.includes(current.serverId) || sessionState(current, now) !== 'live') throw notFound(input.id);
      if (input.etag !== '' && input.etag !== etagOf(current)) {
        throw new FailedPreconditionError(
          `etag ${JSON.stringify(input.etag.slice(0, 64))} is stale: the session is at ${etagOf(current)}; read it again and retry`,
        );
      }
      const attributes = input.merge ? { ...current.attributes, ...input.attributes } : { ...input.attributes };
      for (const key of input.removeAttributes) delete attributes[key];
      checkAttributes('attributes', attributes, this.policy);
      return { next: { ...current, attributes, updateTime: now, version: current.version + 1 }, event: { type: 'UPDATED', cause: '', time: now } };
    });
    if (!stored) throw notFound(input.id);
    return stored;
  }

  /** Durable before it resolves, at every synchronous setting. @throws InvalidArgumentError, NotFoundError unless live and the caller's. */
  async rotateToken(caller: Principal, id: string): Promise<CreateAnswer> {
    checkId(id);
    const now = this.clock.now();
    const token = newToken();
    const tokenHash = hashToken(token);
    const stored = await this.repo.modify(id, (current) => {
      if (!caller.scope.includes(current.serverId) || sessionState(current, now) !== 'live') throw notFound(id);
      return { next: { ...current, tokenRotateTime: now }, tokenHash, event: { type: 'ROTATED', cause: '', time: now } };
    }, DURABLE);
    if (!stored) throw notFound(id);
    return { session: stored, token };
  }

  /**
   * Durable before it resolves, at every synchronous setting. Another
   * backend's session counts as missing.
   * @throws InvalidArgumentError, NotFoundError unless live and the caller's, or allowMissing.
   */
  async delete(caller: Principal, id: string, allowMissing: boolean): Promise<void> {
    checkId(id);
    const now = this.clock.now();
    let live = false;
    await this.repo.modify(id, (current) => {
      // Set on every call of change: a backend that retries calls it again.
      live = caller.scope.includes(current.serverId) && sessionState(current, now) === 'live';
      return live ? { next: { ...current, revokeTime: now }, event: { type: 'REVOKED', cause: 'delete', time: now } } : null;
    }, DURABLE);
    if (!live && !allowMissing) throw notFound(id);
  }

  /**
   * A page of the caller's live sessions: at most page_size, and fewer when
   * their encoded size would reach maxPageBytes (one session at least), so
   * that every page fits in a response and a listing always gets to its end.
   * @throws InvalidArgumentError for a bad page size or page token; PermissionDeniedError for a server_id outside the caller's.
   */
  async list(caller: Principal, input: ListSessionsInput): Promise<{ sessions: SessionRecord[]; nextPageToken: string; sequence: number }> {
    const filter: SessionFilter = { serverId: input.serverId, subject: input.subject };
    checkString('server_id', filter.serverId, this.policy.maxIdBytes);
    checkString('subject', filter.subject, this.policy.maxIdBytes);
    if (filter.serverId !== '') requireServerId(caller, filter.serverId);
    if (!Number.isInteger(input.pageSize) || input.pageSize < 0 || input.pageSize > MAX_PAGE_SIZE) {
      throw new InvalidArgumentError('page_size', `page_size must be between 0 and ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}); got ${input.pageSize}`);
    }
    const cursor = decodePageToken(input.pageToken, filter);
    const page = await this.repo.list({ ...filter, within: caller.scope.set }, cursor, input.pageSize || DEFAULT_PAGE_SIZE, this.clock.now());
    let bytes = 0;
    let taken = 0;
    for (const s of page.sessions) {
      bytes += encodedSizeBound(s);
      if (taken > 0 && bytes > this.maxPageBytes) break;
      taken++;
    }
    const cut = taken < page.sessions.length;
    const nextCursor = cut ? page.cursors[taken - 1] : page.nextCursor;
    return {
      sessions: cut ? page.sessions.slice(0, taken) : page.sessions,
      nextPageToken: nextCursor === undefined ? '' : encodePageToken(nextCursor, filter),
      sequence: page.sequence,
    };
  }

  /**
   * Revokes the caller's live sessions that match, in write units of
   * revokeBatchSize sessions each (other calls are served between them), each
   * durable before the next. A failure part-way leaves the batches before it
   * revoked; a retry revokes the rest.
   * @throws InvalidArgumentError when neither filter is set; PermissionDeniedError for a server_id outside the caller's.
   */
  async revokeMatching(caller: Principal, input: RevokeFilter): Promise<number> {
    if (input.serverId === '' && input.subject === '') {
      throw new InvalidArgumentError('server_id', 'set server_id or subject (or both): revoking every session needs a filter');
    }
    checkString('server_id', input.serverId, this.policy.maxIdBytes);
    checkString('subject', input.subject, this.policy.maxIdBytes);
    if (input.serverId !== '') requireServerId(caller, input.serverId);
    const exceptId = input.exceptSessionId ?? '';
    if (exceptId !== '') checkId(exceptId, 'except_session_id');
    const filter: SessionFilter = { serverId: input.serverId, subject: input.subject, within: caller.scope.set, exceptId: exceptId || undefined };
    let revoked = 0;
    for (;;) {
      const n = await this.repo.revokeMatching(filter, this.clock.now(), this.revokeBatchSize);
      revoked += n;
      if (n < this.revokeBatchSize) return revoked;
    }
  }

  /**
   * Deletes dead sessions in batches of `batchSize`, yielding to the event loop
   * between batches so that calls keep being served during a large purge.
   * An aborted signal stops it between batches (at shutdown).
   */
  async purgeExpired(batchSize: number, signal?: AbortSignal): Promise<{ purged: number; batches: number }> {
    let purged = 0;
    let batches = 0;
    for (;;) {
      const now = this.clock.now();
      const n = await this.repo.purgeBatch(now, batchSize);
      if (n > 0) batches++;
      purged += n;
      if (n < batchSize || signal?.aborted) return { purged, batches };
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  counts(): MaybePromise<{ live: number; dead: number }> {
    return this.repo.countSessions(this.clock.now());
  }

  private async touchLive(caller: Principal, id: string, now: number): Promise<SessionRecord | undefined> {
    let live = false;
    const stored = await this.repo.modify(id, (current) => {
      live = caller.scope.includes(current.serverId) && sessionState(current, now) === 'live';
      const idleExpireTime = live ? touchedIdleExpiry(current, now, this.policy) : undefined;
      if (idleExpireTime === undefined) return null;
      return { next: { ...current, idleExpireTime, lastActiveTime: now } };
    });
    return live ? stored : undefined;
  }
}

const DURABLE = { durable: true } as const;

/** `f` of a value, synchronously when it is one, else once its promise settles. */
function then<T, R>(value: MaybePromise<T>, f: (v: T) => R): MaybePromise<R> {
  return value instanceof Promise ? value.then(f) : f(value);
}

function checkId(id: string, field = 'id'): void {
  if (id.length === 0) throw new InvalidArgumentError(field, `${field} is required`);
  if (!ID_PATTERN.test(id)) throw new InvalidArgumentError(field, `${field} ${JSON.stringify(id.slice(0, 64))} is not a session id (22 base64url characters)`);
}

function notFound(id: string): NotFoundError {
  return new NotFoundError(`session ${id} not found (never created, expired, or revoked)`);
}
