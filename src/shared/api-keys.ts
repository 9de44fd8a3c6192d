import { createHash, randomBytes } from 'node:crypto';

/*
 * API keys, shared by the server (which stores and compares only their
 * SHA-256) and the CLI (which makes new ones). Keys are 256 bits from the
 * CSPRNG, so a fast hash is enough: there is nothing to brute-force.
 */

const KEY_BYTES = 32;
/** Makes a key recognisable in a leaked log or a secret scanner, as GitHub's and Stripe's prefixes do. */
export const API_KEY_PREFIX = 'sk_sessiond_';

export function newApiKey(): string {
  return `${API_KEY_PREFIX}${randomBytes(KEY_BYTES).toString('base64url')}`;
}

/** The lower-case hex SHA-256 that the principals file lists for `key`. */
export function apiKeySha256(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}
