/*
 * The hot path's choices (raw-array row reads, one-shot hashing, session-wire.ts
 * encoding, one snapshot per stream batch, pooled random bytes, time-ordered
 * ids), each measured against the plain way in one run, in-process (no gRPC,
 * no server), on the filled database: the two ways alternate round by round,
 * and each figure is the median CPU time (process.cpuUsage) per operation.
 * CPU time, not wall time, so that other work on the machine weighs less; the
 * medians still move between runs, so compare rows of one run.
 */
import Database from 'better-sqlite3';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { ValidateSessionResponse } from '../generated/sessions/v1/session_service';
import { systemClock } from '../src/domain/clock';
import { UNRESTRICTED } from '../src/domain/principals';
import { DEFAULT_POLICY } from '../src/domain/session';
import { SessionManager } from '../src/domain/session-manager';
import { hashToken, newSessionId, newToken } from '../src/domain/tokens';
import { DEFAULT_STORAGE_OPTIONS } from '../src/storage/sqlite/pragmas';
import { COLUMNS } from '../src/storage/sqlite/sqlite-session-repository';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage';
import { sessionToProto } from '../src/transport/convert';
import { encodeValidateResponse } from '../src/transport/session-wire';
import { tokenOf } from './fill';

export interface MicroRow {
  change: string;
  before: string;
  after: string;
  beforeUs: number;
  afterUs: number;
}


/** Median CPU microseconds per op of each variant, alternating variants every round. */
function alternate(rounds: number, ops: number, variants: ((i: number) => unknown)[]): number[] {
  const samples: number[][] = variants.map(() => []);
  for (let r = 0; r < rounds + 1; r++) {
    variants.forEach((fn, k) => {
      const start = process.cpuUsage();
      for (let i = 0; i < ops; i++) fn(i);
      const used = process.cpuUsage(start);
      // The first round warms up (JIT, caches) and is not counted.
      if (r > 0) samples[k]!.push((used.user + used.system) / ops);
    });
  }
  return samples.map((s) => s.sort((a, b) => a - b)[Math.floor(s.length / 2)]!);
}

export async function measureMicro(dbPath: string, liveSessions: number, smoke: boolean, log: (line: string) => void): Promise<MicroRow[]> {
  const ops = smoke ? 1000 : 5000;
  const rounds = smoke ? 2 : 9;
  const rows: MicroRow[] = [];
  const add = (change: string, before: string, after: string, [b, a]: number[]) => {
    rows.push({ change, before, after, beforeUs: b!, afterUs: a! });
    log(`  ${change}: ${b!.toFixed(1)} -> ${a!.toFixed(1)} us`);
  };
  const pick = () => Math.floor(Math.random() * liveSessions);
  const tokens = Array.from({ length: ops }, () => tokenOf('live', pick()));
  const hashes = tokens.map(hashToken);

  const db = new Database(dbPath, { readonly: true });
  const storage = SqliteStorage.open({ ...DEFAULT_STORAGE_OPTIONS, path: dbPath, checkpointWorker: false });
  try {
    db.pragma(`cache_size = ${DEFAULT_STORAGE_OPTIONS.cacheSize}`);
    const named = db.prepare<[Buffer], unknown>(`SELECT ${COLUMNS} FROM sessions WHERE token_hash = ?`);
    const raw = db.prepare<[Buffer], unknown[]>(`SELECT ${COLUMNS} FROM sessions WHERE token_hash = ?`).raw(true);
    add('session row read by token hash', 'named-column object', 'raw array', alternate(rounds, ops, [(i) => named.get(hashes[i]!), (i) => raw.get(hashes[i]!)]));

    add('token hash (SHA-256)', 'createHash().update().digest()', 'crypto.hash() one-shot', alternate(rounds, ops, [
      (i) => createHash('sha256').update(tokens[i]!, 'utf8').digest(),
      (i) => hashToken(tokens[i]!),
    ]));

    const records = hashes.map((h) => storage.sessions.findByTokenHash(h)!);
    add('ValidateSession answer encoding', 'sessionToProto + generated encoder', 'session-wire.ts', alternate(rounds, ops, [
      (i) => ValidateSessionResponse.encode({ valid: true, session: sessionToProto(records[i]!), reason: 0 }).finish(),
      (i) => encodeValidateResponse({ valid: true, session: records[i]! }),
    ]));

    // A stream message carries a batch of validations; 16 per snapshot here.
    const BATCH = 16;
    add('token lookups of a stream batch', 'a read transaction each', `one snapshot per ${BATCH}`, alternate(rounds, ops, [
      (i) => storage.sessions.findByTokenHash(hashes[i]!),
      (i) => {
        if (i % BATCH === 0) storage.sessions.snapshot(() => {
          for (let j = i; j < Math.min(i + BATCH, ops); j++) storage.sessions.findByTokenHash(hashes[j]!);
        });
      },
    ]));

    add('new token and id (CSPRNG)', 'two randomBytes calls', 'pooled draw', alternate(rounds, ops, [
      () => randomBytes(32).toString('base64url') + randomBytes(16).toString('base64url'),
      () => newToken() + newSessionId(),
    ]));

    // Creates, 16 rows a transaction as group commit makes them, on a copy of
    // the filled database (the unary part measures the original afterwards).
    const copy = `${dbPath}-micro-creates`;
    db.exec(`VACUUM INTO '${copy.replaceAll("'", "''")}'`);
    const w = new Database(copy);
    try {
      w.pragma('journal_mode = WAL');
      w.pragma('synchronous = NORMAL');
      w.pragma(`cache_size = ${DEFAULT_STORAGE_OPTIONS.cacheSize}`);
      const insert = w.prepare(`INSERT INTO sessions (id, token_hash, server_id, subject, attributes, ip, user_agent, create_time,
        update_time, expire_time, idle_expire_time, last_active_time, idle_timeout_ms, token_rotate_time, revoke_time, version, dead_at, request_id)
        VALUES (?, ?, ?, ?, '{"role":"member"}', '203.0.113.9', 'sessiond-bench/1', ?, ?, ?, ?, ?, 3600000, ?, NULL, 1, ?, NULL)`);
      const BATCH = 16;
      const create = (id: (now: number) => string) => (i: number) => {
        if (i % BATCH === 0) w.exec('BEGIN');
        const now = Date.now();
        insert.run(id(now), randomBytes(32), `web-${i % 8}`, `user-${i % 25_000}`, now, now, now + 86_400_000, now + 3_600_000, now, now, now + 3_600_000);
        if (i % BATCH === BATCH - 1 || i === ops - 1) w.exec('COMMIT');
      };
      add('CreateSession row insert (the id index)', '128 random bits', 'creation time first (tokens.ts)', alternate(rounds, ops, [
        create(() => randomBytes(16).toString('base64url')),
        create((now) => newSessionId(now)),
      ]));
    } finally {
      w.close();
      for (const suffix of ['', '-wal', '-shm']) rmSync(`${copy}${suffix}`, { force: true });
    }

    // For scale: the whole validation, domain rules included, as the server runs it.
    const sessions = new SessionManager(storage.repository, systemClock, DEFAULT_POLICY);
    const [all] = alternate(rounds, ops, [(i) => encodeValidateResponse(sessions.validate(UNRESTRICTED('bench'), tokens[i]!, false) as never)]);
    rows.push({ change: 'ValidateSession in-process, all of it (for scale)', before: '', after: 'now', beforeUs: Number.NaN, afterUs: all! });
    log(`  ValidateSession in-process: ${all!.toFixed(1)} us`);
  } finally {
    db.close();
    await storage.close();
  }
  return rows;
}
