import { AdminServiceService, GetStorageStatusResponse, type AdminServiceServer } from '../../generated/sessions/v1/admin_service';
import { FailedPreconditionError, InvalidArgumentError } from '../domain/errors';
import type { SessionManager } from '../domain/session-manager';
import type { AnyStorageStatus, CheckpointResult, StorageBackend } from '../domain/storage-admin';
import type { Logger } from '../server/log';
import type { Metrics } from '../server/metrics/metrics';
import type { Authorizer } from './authorize';
import { checkpointModeFromProto, checkpointModeToProto, msToDuration } from './convert';

const MAX_PURGE_BATCH = 10_000;

/** sessions.v1.AdminService: every call authorized first (the admin permission), then proto <-> domain. */
export function adminHandlers(
  deps: { sessions: SessionManager; storage: StorageBackend; auth: Authorizer; sweepBatchSize: number; metrics?: Metrics },
  log: Logger,
): AdminServiceServer {
  const { sessions, storage, auth } = deps;
  const A = AdminServiceService;
  return {
    checkpoint: auth.unary(A.checkpoint, async (req) => {
      const mode = checkpointModeFromProto(req.mode);
      const wal = capability(storage, storage.wal, "Checkpoint runs SQLite's WAL checkpoints", 'which runs its own checkpoints (see GetStorageStatus)');
      // Logged and counted where storage records every checkpoint (StorageObserver).
      const result = await wal.checkpoint(mode, 'admin');
      return {
        mode: checkpointModeToProto(result.mode),
        busy: result.busy,
        logFrames: result.logFrames,
        checkpointedFrames: result.checkpointedFrames,
        walBytes: result.walBytes,
        duration: msToDuration(result.durationMs),
      };
    }),
    getStorageStatus: auth.unary(A.getStorageStatus, async () => {
      const [s, counts] = await Promise.all([storage.status(), sessions.counts()]);
      return GetStorageStatusResponse.fromPartial({ ...statusFields(s), liveSessions: counts.live, expiredSessions: counts.dead });
    }),
    backup: auth.unary(A.backup, async () => {
      const files = capability(storage, storage.files, "Backup works on SQLite's database file", FILES_ELSEWHERE);
      const r = await files.backup();
      log.info('backup', { path: r.path, bytes: r.bytes, sha256: r.sha256, durationMs: Math.round(r.durationMs) });
      return { path: r.path, bytes: r.bytes, sha256: r.sha256, time: new Date(r.time), duration: msToDuration(r.durationMs) };
    }),
    integrityCheck: auth.unary(A.integrityCheck, async (req) => {
      const files = capability(storage, storage.files, "IntegrityCheck works on SQLite's database file", FILES_ELSEWHERE);
      const r = await files.integrityCheck(req.full);
      if (r.problems.length > 0) log.error('integrity check found problems', { check: r.check, problems: r.problems.slice(0, 10) });
      return { ok: r.problems.length === 0, problems: [...r.problems], check: r.check, duration: msToDuration(r.durationMs) };
    }),
    purgeExpiredSessions: auth.unary(A.purgeExpiredSessions, async (req) => {
      if (req.batchSize < 0 || req.batchSize > MAX_PURGE_BATCH) {
        throw new InvalidArgumentError('batch_size', `batch_size must be between 0 and ${MAX_PURGE_BATCH} (0: the server's sweep batch size); got ${req.batchSize}`);
      }
      const started = performance.now();
      let r;
      try {
        r = await sessions.purgeExpired(req.batchSize || deps.sweepBatchSize);
      } catch (err) {
        deps.metrics?.purge('admin', undefined, performance.now() - started);
        throw err;
      }
      const durationMs = performance.now() - started;
      deps.metrics?.purge('admin', r.purged, durationMs);
      log.info('purge', { trigger: 'admin', ...r, durationMs: Math.round(durationMs) });
      return { purgedCount: r.purged, batches: r.batches };
    }),
  };
}

function checkpointRecord(c: CheckpointResult) {
  return {
    time: new Date(c.time),
    mode: checkpointModeToProto(c.mode),
    busy: c.busy,
    logFrames: c.logFrames,
    checkpointedFrames: c.checkpointedFrames,
    trigger: c.trigger,
  };
}

function statusFields(s: AnyStorageStatus): Partial<GetStorageStatusResponse> {
  if (s.backend === 'postgres') {
    return {
      backend: s.backend,
      schemaVersion: s.schemaVersion,
      postgres: {
        target: s.target,
        serverVersion: s.serverVersion,
        primary: s.primary,
        poolSize: s.poolSize,
        poolOpen: s.poolOpen,
        queriesInFlight: s.queriesInFlight,
        tableBytes: s.tableBytes,
        indexBytes: s.indexBytes,
      },
    };
  }
  return {
    backend: s.backend,
    path: s.path,
    journalMode: s.journalMode,
    synchronous: s.synchronous,
    cacheSize: s.cacheSize,
    busyTimeoutMs: s.busyTimeoutMs,
    walAutocheckpoint: s.walAutocheckpoint,
    journalSizeLimit: s.journalSizeLimit,
    walFrames: s.walFrames,
    walCheckpointedFrames: s.walCheckpointedFrames,
    walBytes: s.walBytes,
    databaseBytes: s.databaseBytes,
    pageSize: s.pageSize,
    pageCount: s.pageCount,
    freelistCount: s.freelistCount,
    maxDatabaseBytes: s.maxDatabaseBytes,
    lastCheckpoint: s.lastCheckpoint && checkpointRecord(s.lastCheckpoint),
    schemaVersion: s.schemaVersion,
  };
}

const FILES_ELSEWHERE = "whose backups and checks are the database operator's (pg_basebackup, pg_amcheck, the operator's own)";

/** A capability of the SQLite backend, or FAILED_PRECONDITION saying what the call does and who does it on this backend. */
function capability<T>(storage: StorageBackend, present: T | undefined, does: string, elsewhere: string): T {
  if (present === undefined) throw new FailedPreconditionError(`${does}; this server stores sessions in ${storage.backend}, ${elsewhere}`);
  return present;
}
