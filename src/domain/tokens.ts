import { createHash, randomBytes } from 'node:crypto';

/** 256 bits from the CSPRNG: twice the 128 the OWASP session cheat sheet asks for. */
const TOKEN_BYTES = 32;
/** 128 bits: ids are public, but must not be guessable or sequential either. */
const ID_BYTES = 16;

export const TOKEN_LENGTH = Math.ceil((TOKEN_BYTES * 4) / 3);
export const ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;

/** A new secret session token, base64url without padding (43 characters). */
export function newToken(): string {
  return randomBytes(TOKEN_BYTES).toString('base64url');
}

/** A new public session id, base64url without padding (22 characters). */
export function newSessionId(): string {
  return randomBytes(ID_BYTES).toString('base64url');
}

/**
 * The only form in which a token is stored or compared. Lookups go by this
 * hash through a unique index, so no secret is ever compared byte by byte in JS.
 */
export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}
