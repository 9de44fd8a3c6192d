import { AdminServiceService, type AdminServiceServer } from '../../generated/sessions/v1/admin_service';
import { InvalidArgumentError } from '../domain/errors';
import type { SessionManager } from '../domain/session-manager';
import type { CheckpointResult, StorageAdmin } from '../domain/storage-admin';
import type { Logger } from '../server/log';
import type { Metrics } from '../server/metrics/metrics';
import type { Authorizer } from './authorize';
import { checkpointModeFromProto, checkpointModeToProto, msToDuration } from './convert';

const MAX_PURGE_BATCH = 10_000;

/** sessions.v1.AdminService: every call authorized first (the admin permission), then proto <-> domain. */
export function adminHandlers(
  deps: { sessions: SessionManager; storage: StorageAdmin; auth: Authorizer; sweepBatchSize: number; metrics?: Metrics },
  log: Logger,
): AdminServiceServer {
  const { sessions, storage, auth } = deps;
  const A = AdminServiceService;
  return {
    checkpoint: auth.unary(A.checkpoint, async (req) => {
      // Logged and counted where storage records every checkpoint (StorageObserver).
      const result = await storage.checkpoint(checkpointModeFromProto(req.mode), 'admin');
      return {
        mode: checkpointModeToProto(result.mode),
        busy: result.busy,
        logFrames: result.logFrames,
        checkpointedFrames: result.checkpointedFrames,
        walBytes: result.walBytes,
        duration: msToDuration(result.durationMs),
      };
    }),
    getStorageStatus: auth.unary(A.getStorageStatus, () => {
      const s = storage.status();
      const counts = sessions.counts();
      return {
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
        liveSessions: counts.live,
        expiredSessions: counts.dead,
        lastCheckpoint: s.lastCheckpoint && checkpointRecord(s.lastCheckpoint),
        schemaVersion: s.schemaVersion,
      };
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
