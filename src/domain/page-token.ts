import { createHash } from 'node:crypto';
import { InvalidArgumentError } from './errors';
import type { SessionFilter } from './session-repository';

/*
 * Page tokens are opaque to clients (AIP-158) but carry no secret: a keyset
 * cursor plus a tag of the filters they were issued for, so that a token
 * replayed with other filters is refused instead of silently skipping rows.
 * The checksum catches truncated or hand-edited tokens.
 */
const VERSION = 'p1';

function filterTag(filter: SessionFilter): string {
  return createHash('sha256').update(`${filter.serverId}\0${filter.subject}`).digest('base64url').slice(0, 11);
}

function checksum(body: string): string {
  return createHash('sha256').update(body).digest('base64url').slice(0, 6);
}

export function encodePageToken(cursor: number, filter: SessionFilter): string {
  const body = `${VERSION}.${cursor.toString(36)}.${filterTag(filter)}`;
  return Buffer.from(`${body}.${checksum(body)}`).toString('base64url');
}

/** @throws InvalidArgumentError when the token is malformed or was issued for other filters. */
export function decodePageToken(token: string, filter: SessionFilter): number {
  if (token === '') return 0;
  const bad = (why: string) => new InvalidArgumentError('page_token', `page_token ${why}`);
  if (token.length > 200 || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad('is malformed');
  const parts = Buffer.from(token, 'base64url').toString('utf8').split('.');
  if (parts.length !== 4 || parts[0] !== VERSION) throw bad('is malformed');
  const [version, cursorText, tag, sum] = parts as [string, string, string, string];
  if (checksum(`${version}.${cursorText}.${tag}`) !== sum) throw bad('is malformed');
  if (tag !== filterTag(filter)) throw bad('was issued for other filters (server_id/subject must match the first request)');
  const cursor = parseInt(cursorText, 36);
  if (!/^[0-9a-z]{1,11}$/.test(cursorText) || !Number.isSafeInteger(cursor)) throw bad('is malformed');
  return cursor;
}
