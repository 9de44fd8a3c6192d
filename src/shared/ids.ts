/**
 * The public shape of a session id, for clients and the CLI: 22 base64url
 * characters (128 bits). The server owns the format (domain/tokens.ts makes
 * and checks ids, and imports nothing outside domain/); a test holds the two
 * patterns equal.
 */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;
