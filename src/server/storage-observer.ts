import type { CheckpointResult, WalSnapshot } from '../domain/storage-admin';
import type { Logger } from './log';
import type { Metrics } from './metrics/metrics';

/** The WAL warning fires past this many times the autocheckpoint threshold. */
export const WAL_WARN_MULTIPLE = 4;
/** While the WAL stays too large, the warning repeats at most this often. */
export const WAL_WARN_REPEAT_MS = 5 * 60_000;

/**
 * What the process reports about its storage beyond the RPCs: every
 * checkpoint (metrics and a log line) and a rate-limited warning when the WAL
 * grows past what the checkpoint policy should allow.
 */
export class StorageObserver {
  private lastAuto: CheckpointResult | undefined;
  private walWarnedAt: number | undefined;

  /**
   * @param walAutocheckpoint the configured threshold in frames; 0 (automatic
   *   checkpoints off, the operator checkpoints) disables the WAL warning.
   */
  constructor(
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly walAutocheckpoint: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * For SqliteStorage's onCheckpoint hook. Admin checkpoints log at info
   * (warn when busy); automatic ones at info, or at debug when they repeat the
   * last one's numbers (the worker retries every poll while a reader holds the
   * WAL). The shutdown checkpoint is logged as a step of the shutdown sequence.
   */
  checkpoint(r: CheckpointResult): void {
    this.metrics.checkpoint(r);
    if (r.trigger === 'shutdown') return;
    const checkpoint = { mode: r.mode, trigger: r.trigger, busy: r.busy, logFrames: r.logFrames, checkpointedFrames: r.checkpointedFrames, walBytes: r.walBytes, durationMs: round(r.durationMs) };
    if (r.trigger === 'auto') {
      const repeat = this.lastAuto?.logFrames === r.logFrames && this.lastAuto.checkpointedFrames === r.checkpointedFrames;
      this.lastAuto = r;
      if (repeat) this.log.debug('checkpoint', { checkpoint });
      else this.log.info('checkpoint', { checkpoint });
      return;
    }
    if (r.busy) this.log.warn('checkpoint could not complete: readers or writers in the way', { checkpoint });
    else this.log.info('checkpoint', { checkpoint });
  }

  /** Called by the health probe timer with a fresh snapshot; warns about WAL growth, at most every WAL_WARN_REPEAT_MS. */
  checkWal(wal: WalSnapshot): void {
    if (this.walAutocheckpoint <= 0) return;
    const limit = WAL_WARN_MULTIPLE * this.walAutocheckpoint;
    const now = this.now();
    if (wal.walFrames > limit) {
      if (this.walWarnedAt !== undefined && now - this.walWarnedAt < WAL_WARN_REPEAT_MS) return;
      this.walWarnedAt = now;
      this.log.warn('WAL is growing: checkpoints are not keeping up (a long-lived reader?)', {
        walFrames: wal.walFrames, walBytes: wal.walBytes, limitFrames: limit, walAutocheckpoint: this.walAutocheckpoint,
      });
    } else if (this.walWarnedAt !== undefined) {
      this.walWarnedAt = undefined;
      this.log.info('WAL back under its warning limit', { walFrames: wal.walFrames, walBytes: wal.walBytes, limitFrames: limit });
    }
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
