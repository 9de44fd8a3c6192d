import type { WalIndexCounts } from './wal-index';

/** Longest one write waits for the checkpointer to catch up. */
export const MAX_WAIT_MS = 200;

/**
 * Decides, before each group-commit batch, whether writes should wait for the
 * checkpoint worker. SQLite rewinds the WAL to its start only when a write
 * transaction begins after every frame was copied back; writes that never
 * pause (a bulk purge) otherwise grow it without bound, and the eventual
 * truncation blocks the event loop for seconds.
 *
 * So once more than `lagLimit` frames wait to be copied, a write waits until
 * the WAL is fully copied back (its own BEGIN then rewinds the log) or
 * MAX_WAIT_MS passes. If a whole wait saw no progress at all (a reader pins
 * an old snapshot and no checkpoint can finish), waiting cannot help: writes
 * go on unhindered until the checkpointer moves again.
 */
export class WalPressure {
  private waitingSince: number | undefined;
  private backfilledAtStart = 0;
  private stuckAt: number | undefined;

  constructor(
    private readonly lagLimit: number,
    private readonly read: () => WalIndexCounts,
    private readonly checkpointerRunning: () => boolean,
    private readonly now: () => number = () => performance.now(),
  ) {}

  shouldWait(): boolean {
    if (!this.checkpointerRunning()) return false;
    const { frames, backfilled } = this.read();
    const lag = frames - backfilled;
    if (this.waitingSince === undefined) {
      if (lag <= this.lagLimit) {
        this.stuckAt = undefined;
        return false;
      }
      if (this.stuckAt !== undefined && this.stuckAt === backfilled) return false;
      this.stuckAt = undefined;
      this.waitingSince = this.now();
      this.backfilledAtStart = backfilled;
      return true;
    }
    if (lag <= 0) {
      this.waitingSince = undefined;
      return false;
    }
    if (this.now() - this.waitingSince >= MAX_WAIT_MS) {
      this.waitingSince = undefined;
      if (backfilled === this.backfilledAtStart) this.stuckAt = backfilled;
      return false;
    }
    return true;
  }
}
