/*
 * The lookup half of a streamed validation batch, as sessiond runs it (hash,
 * one indexed read per token inside one snapshot, the domain's liveness
 * rules, the answer's encoding), on a connection of its own. The experiment
 * server (bench/stream-threads-server.ts) runs it on its main thread or in
 * each of its worker threads (bench/stream-lookup-worker.ts).
 */
import Database from 'better-sqlite3';
import { systemClock } from '../src/domain/clock';
import { UNRESTRICTED } from '../src/domain/principals';
import { DEFAULT_POLICY } from '../src/domain/session';
import { SessionManager } from '../src/domain/session-manager';
import type { SessionRepository } from '../src/domain/session-repository';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { SqliteEventLog } from '../src/storage/sqlite/sqlite-events';
import { SqliteSessionRepository } from '../src/storage/sqlite/sqlite-session-repository';
import { encodedAnswer } from '../src/transport/stream-answers';
import { encodeStreamAnswers } from '../src/transport/session-wire';
import { silentLogger } from '../src/server/log';

/** One request message's validations, as the main thread hands them over. */
export interface LookupBatch {
  seq: number;
  ids: number[];
  tokens: string[];
}

export class StreamLookup {
  private readonly db: Database.Database;
  private readonly sessions: SessionManager;
  // The bench's backend principal has every server_id: the scope check runs, and passes.
  private readonly caller = UNRESTRICTED('bench-backend');

  /** @param readonly a worker's connection: it never writes, so SQLite refuses it any write. */
  constructor(path: string, readonly: boolean) {
    this.db = new Database(path, { readonly, fileMustExist: true });
    this.db.pragma(`cache_size = ${DEFAULT_STORAGE_OPTIONS.cacheSize}`);
    this.db.pragma(`busy_timeout = ${DEFAULT_STORAGE_OPTIONS.busyTimeoutMs}`);
    // The events log's statements are only prepared here: reads never run them.
    const rows = new SqliteSessionRepository(this.db, new SqliteEventLog(this.db, true));
    // Validations without touch need only these two; anything else is a bug of the experiment.
    const repo = {
      backend: 'sqlite',
      findByTokenHash: (h: Buffer) => rows.findByTokenHash(h),
      snapshot: <T>(reads: () => T) => rows.snapshot(reads),
    } as unknown as SessionRepository;
    this.sessions = new SessionManager(repo, systemClock, DEFAULT_POLICY);
  }

  /** The batch's ValidateSessionStreamResponse, encoded. */
  answer(ids: readonly number[], tokens: readonly string[]): Buffer {
    const out: Buffer[] = new Array<Buffer>(tokens.length);
    this.sessions.inSnapshot(() => {
      for (let i = 0; i < tokens.length; i++) {
        out[i] = encodedAnswer(silentLogger, ids[i]!, this.sessions.validate(this.caller, tokens[i]!, false) as never);
      }
    });
    return encodeStreamAnswers(out);
  }

  close(): void {
    this.db.close();
  }
}
