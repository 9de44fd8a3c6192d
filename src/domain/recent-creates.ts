import { createHash } from 'node:crypto';
import type { Clock } from './clock';
import { OutcomeUnknownError } from './errors';
import type { SessionRecord } from './session';

export interface CreateAnswer {
  readonly session: SessionRecord;
  readonly token: string;
}

/** What a CreateSession asked for, as far as a retry must repeat it exactly. */
export interface CreateFields {
  readonly serverId: string;
  readonly subject: string;
  readonly attributes: Readonly<Record<string, string>>;
  readonly ip: string;
  readonly userAgent: string;
  readonly ttlMs?: number | undefined;
  readonly idleTimeoutMs?: number | undefined;
}

/** A hash of every field of a create, so that a retry is recognised as the same request and nothing else. */
export function createFingerprint(f: CreateFields): string {
  const attributes = Object.keys(f.attributes).sort().map((k) => [k, f.attributes[k]]);
  const canonical = JSON.stringify([f.serverId, f.subject, attributes, f.ip, f.userAgent, f.ttlMs || 0, f.idleTimeoutMs || 0]);
  return createHash('sha256').update(canonical).digest('base64url');
}

interface Entry {
  readonly fingerprint: string;
  readonly answer: Promise<CreateAnswer>;
  /** The create failed with its outcome unknown: `answer` is what it would have answered, if it was applied. */
  readonly unconfirmed?: boolean;
  expires: number;
}

/**
 * CreateSession answers kept for a short while, so that a client retrying
 * after a timeout gets the same session and token back; a retry that arrives
 * while the first create is still running joins it. Keyed by who asked (the
 * principal), the server_id and the request_id, and held with a fingerprint of
 * the whole request: another caller, or the same key with other fields, never
 * gets the token. It is memory only, on purpose: tokens are never written
 * anywhere in clear, so after a restart a retry finds the stored key and gets
 * ALREADY_EXISTS instead. Bounded in entries, oldest dropped first (a Map
 * keeps insertion order).
 */
export class RecentCreates {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly clock: Clock,
    private readonly ttlMs = 10 * 60_000,
    private readonly maxEntries = 10_000,
  ) {}

  get(key: string): { fingerprint: string; answer: Promise<CreateAnswer>; unconfirmed?: boolean | undefined } | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.expires <= this.clock.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return hit;
  }

  /**
   * Holds `answer` under `key` from now; a rejected answer is dropped, so that a retry tries again,
   * except one rejected with OutcomeUnknownError: then `ifApplied` is held, marked unconfirmed, so
   * that a retry can answer it (token included) if that write did commit.
   */
  put(key: string, fingerprint: string, answer: Promise<CreateAnswer>, ifApplied?: CreateAnswer): void {
    const now = this.clock.now();
    for (const [k, e] of this.entries) {
      if (this.entries.size < this.maxEntries && e.expires > now) break;
      this.entries.delete(k);
    }
    const entry: Entry = { fingerprint, answer, expires: now + this.ttlMs };
    this.entries.set(key, entry);
    answer.then(
      // The window starts when the answer exists, as a client's retry timer does.
      () => void (entry.expires = this.clock.now() + this.ttlMs),
      (err: unknown) => {
        if (this.entries.get(key) !== entry) return;
        if (err instanceof OutcomeUnknownError && ifApplied) {
          this.entries.set(key, { fingerprint, answer: Promise.resolve(ifApplied), unconfirmed: true, expires: this.clock.now() + this.ttlMs });
        } else this.entries.delete(key);
      },
    );
  }
}

/** The key of a create under RecentCreates: who asked, for which server, with which request_id. */
export function replayKey(principal: string, serverId: string, requestId: string): string {
  return `${principal}\0${serverId}\0${requestId}`;
}
