import type { Clock } from './clock';
import type { SessionRecord } from './session';

export interface CreateAnswer {
  readonly session: SessionRecord;
  readonly token: string;
}

/**
 * CreateSession answers kept for a short while by idempotency key, so that a
 * client retrying after a timeout gets the same session and token back. It is
 * memory only, on purpose: tokens are never written anywhere in clear, so after
 * a restart a retry finds the stored key and gets ALREADY_EXISTS instead.
 * Bounded in entries, oldest dropped first (a Map keeps insertion order).
 */
export class RecentCreates {
  private readonly entries = new Map<string, { expires: number; answer: CreateAnswer }>();

  constructor(
    private readonly clock: Clock,
    private readonly ttlMs = 10 * 60_000,
    private readonly maxEntries = 10_000,
  ) {}

  get(serverId: string, requestId: string): CreateAnswer | undefined {
    const key = `${serverId}\0${requestId}`;
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.expires <= this.clock.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return hit.answer;
  }

  put(serverId: string, requestId: string, answer: CreateAnswer): void {
    const now = this.clock.now();
    for (const [key, e] of this.entries) {
      if (this.entries.size < this.maxEntries && e.expires > now) break;
      this.entries.delete(key);
    }
    this.entries.set(`${serverId}\0${requestId}`, { expires: now + this.ttlMs, answer });
  }
}
