import { hash, randomFillSync } from 'node:crypto';

/** 256 bits from the CSPRNG: twice the 128 the OWASP session cheat sheet asks for. */
const TOKEN_BYTES = 32;
/**
 * 128 bits: the creation time in milliseconds (48 bits, big-endian), then 80
 * random bits. Ids are public, but must not be guessable: 80 bits are not. The
 * time first keeps new ids next to each other in the id index (as UUIDv7
 * does), so a create dirties the one B-tree leaf that recent ids share instead
 * of a random one: less CPU per row inserted, and fewer WAL frames per create
 * to write and then to checkpoint.
 */
const ID_TIME_BYTES = 6;
const ID_RANDOM_BYTES = 10;
const MAX_ID_TIME = 2 ** (8 * ID_TIME_BYTES) - 1;

export const TOKEN_LENGTH = Math.ceil((TOKEN_BYTES * 4) / 3);
export const ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;

/**
 * CSPRNG bytes drawn from a pool refilled 4 KiB at a time, as Node's own
 * randomUUID does: a randomBytes call has a fixed cost far above that of the
 * few bytes a token or id needs, and the pool pays it once per refill. Bytes
 * are zeroed as they are handed out, so the pool never holds a token already
 * issued.
 */
class RandomPool {
  private readonly pool = Buffer.alloc(4096);
  private offset = this.pool.length;

  base64url(bytes: number): string {
    const start = this.take(bytes);
    const text = this.pool.toString('base64url', start, this.offset);
    this.pool.fill(0, start, this.offset);
    return text;
  }

  /** `bytes` random bytes copied into `into` at `at`, zeroed in the pool. */
  copy(bytes: number, into: Buffer, at: number): void {
    const start = this.take(bytes);
    this.pool.copy(into, at, start, this.offset);
    this.pool.fill(0, start, this.offset);
  }

  private take(bytes: number): number {
    if (this.offset + bytes > this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const start = this.offset;
    this.offset += bytes;
    return start;
  }
}

const random = new RandomPool();

/** A new secret session token, base64url without padding (43 characters). */
export function newToken(): string {
  return random.base64url(TOKEN_BYTES);
}

const idBytes = Buffer.alloc(ID_TIME_BYTES + ID_RANDOM_BYTES);

/** A new public session id for a session created at `nowMs`, base64url without padding (22 characters). */
export function newSessionId(nowMs: number = Date.now()): string {
  idBytes.writeUIntBE(Math.min(MAX_ID_TIME, Math.max(0, Math.floor(nowMs))), 0, ID_TIME_BYTES);
  random.copy(ID_RANDOM_BYTES, idBytes, ID_TIME_BYTES);
  const id = idBytes.toString('base64url');
  idBytes.fill(0);
  return id;
}

/**
 * The only form in which a token is stored or compared. Lookups go by this
 * hash through a unique index, so no secret is ever compared byte by byte in JS.
 */
export function hashToken(token: string): Buffer {
  // One-shot: no Hash object per call (ValidateSession's hot path).
  return hash('sha256', token, 'buffer');
}
