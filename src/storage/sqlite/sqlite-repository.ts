import type { Modification, SessionFilter, SessionRepository, SubjectLimit, WriteOptions } from '../../domain/session-repository';
import type { SessionRecord } from '../../domain/session';
import type { SqliteSessionRepository } from './sqlite-session-repository';
import type { PurgeRunner, WriteRunner } from './write-runner';

const DURABLE = { durable: true } as const;

/**
 * The storage contract on SQLite: reads straight from the connection,
 * synchronously (no promise hop on the hot path); each write one unit of the
 * group committer, answered once its batch commits.
 */
export class SqliteRepository implements SessionRepository {
  readonly backend = 'sqlite';

  constructor(private readonly rows: SqliteSessionRepository, private readonly writes: WriteRunner, private readonly purger: PurgeRunner) {}

  insert(session: SessionRecord, tokenHash: Buffer, requestId?: string, limit?: SubjectLimit): Promise<readonly string[]> {
    return this.writes.run(() => this.rows.insert(session, tokenHash, requestId, limit));
  }

  findByRequestId(serverId: string, requestId: string): SessionRecord | undefined {
    return this.rows.findByRequestId(serverId, requestId);
  }

  findById(id: string): SessionRecord | undefined {
    return this.rows.findById(id);
  }

  findByTokenHash(tokenHash: Buffer): SessionRecord | undefined {
    return this.rows.findByTokenHash(tokenHash);
  }

  modify(id: string, change: (current: SessionRecord) => Modification | null, options?: WriteOptions): Promise<SessionRecord | undefined> {
    return this.writes.run(() => this.rows.modify(id, change), options);
  }

  revokeMatching(filter: SessionFilter, now: number, limit: number): Promise<number> {
    return this.writes.run(() => this.rows.revokeMatching(filter, now, limit), DURABLE);
  }

  list(filter: SessionFilter, cursor: number, limit: number, now: number) {
    return this.rows.list(filter, cursor, limit, now);
  }

  purgeBatch(now: number, limit: number): Promise<number> {
    return this.purger.purgeBatch(now, limit);
  }

  readEvents(after: number, limit: number) {
    return this.rows.events.read(after, limit);
  }

  pruneEvents(before: number, keep: number, limit: number): Promise<number> {
    return this.writes.run(() => this.rows.events.prune(before, keep, limit));
  }

  countSessions(now: number) {
    return this.rows.countSessions(now);
  }

  snapshot<T>(reads: () => T): T {
    return this.rows.snapshot(reads);
  }
}
