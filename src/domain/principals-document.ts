import { PERMISSIONS, principal, type Permission, type PrincipalEntry } from './principals';

/*
 * The principals file's document, once parsed (server/principals-file.ts
 * reads the file; `sessiond keys generate` checks the entry it prints with
 * the same rules). Every problem is listed, each naming the entry and the
 * field, and none quotes a key hash: a hash is not a key, but there is no
 * reason to print it either.
 */

export interface PrincipalsRead {
  readonly entries: PrincipalEntry[];
  readonly problems: string[];
}

const FIELDS = ['name', 'api_key_sha256', 'tls_identity', 'server_ids', 'permissions'] as const;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/i;
const MAX_SERVER_ID_BYTES = 256;

/** The parsed document as principals, or the problems that stop it being one. */
export function principalsFromDocument(doc: unknown): PrincipalsRead {
  const problems: string[] = [];
  if (!isObject(doc) || !Array.isArray(doc['principals'])) {
    return { entries: [], problems: ['the file must be a mapping with a list "principals" (see docs/security.md)'] };
  }
  for (const key of Object.keys(doc)) if (key !== 'principals') problems.push(`unknown top-level field ${JSON.stringify(key)}`);
  const entries: PrincipalEntry[] = [];
  const names = new Set<string>();
  const keyOwners = new Map<string, string>();
  const identityOwners = new Map<string, string>();
  for (const [i, raw] of (doc['principals'] as unknown[]).entries()) {
    const label = isObject(raw) && typeof raw['name'] === 'string' && raw['name'] !== '' ? `principals[${i}] (${raw['name'].slice(0, 64)})` : `principals[${i}]`;
    const before = problems.length;
    const bad = (field: string, what: string) => problems.push(`${label}: ${field}: ${what}`);
    if (!isObject(raw)) {
      problems.push(`${label}: must be a mapping with name, server_ids, permissions and api_key_sha256 or tls_identity`);
      continue;
    }
    for (const key of Object.keys(raw)) {
      if (!(FIELDS as readonly string[]).includes(key)) bad(key, `unknown field (the fields are ${FIELDS.join(', ')})`);
    }
    const name = raw['name'];
    if (typeof name !== 'string' || !NAME.test(name)) bad('name', 'required: letters, digits and ._:@/- (at most 128), starting with a letter or digit');
    else if (names.has(name)) bad('name', 'another principal has this name');
    else names.add(name);

    const keys = stringList(raw['api_key_sha256']);
    const identities = stringList(raw['tls_identity']);
    if (keys === undefined) bad('api_key_sha256', 'must be a string or a list of strings');
    if (identities === undefined) bad('tls_identity', 'must be a string or a list of strings');
    if ((keys ?? []).length === 0 && (identities ?? []).length === 0) problems.push(`${label}: needs api_key_sha256 or tls_identity (or both): a principal nobody can authenticate as is a mistake`);
    for (const [k, h] of (keys ?? []).entries()) {
      if (!SHA256_HEX.test(h)) bad(`api_key_sha256[${k}]`, 'is not 64 hex digits (the SHA-256 of the key, as `sessiond keys generate` prints it; never the key itself)');
      else if (keyOwners.has(h.toLowerCase())) bad(`api_key_sha256[${k}]`, `the same key is also listed for ${keyOwners.get(h.toLowerCase())}`);
      else keyOwners.set(h.toLowerCase(), String(name));
    }
    for (const [k, id] of (identities ?? []).entries()) {
      if (id.trim() === '' || id !== id.trim()) bad(`tls_identity[${k}]`, 'must be a SAN without surrounding spaces (a URI such as spiffe://... or a DNS name)');
      else if (identityOwners.has(id)) bad(`tls_identity[${k}]`, `the same identity is also listed for ${identityOwners.get(id)}`);
      else identityOwners.set(id, String(name));
    }

    const serverIds = stringList(raw['server_ids']);
    if (serverIds === undefined || serverIds.length === 0) bad('server_ids', 'required: a list of server_ids, "prefix-*" patterns, or "*" for all');
    for (const [k, p] of (serverIds ?? []).entries()) {
      const problem = serverIdPatternProblem(p);
      if (problem) bad(`server_ids[${k}]`, problem);
    }

    const permissions = stringList(raw['permissions']);
    if (permissions === undefined || permissions.length === 0) bad('permissions', `required: a list of ${PERMISSIONS.join(', ')}`);
    for (const [k, p] of (permissions ?? []).entries()) {
      if (!(PERMISSIONS as readonly string[]).includes(p)) bad(`permissions[${k}]`, `${JSON.stringify(p.slice(0, 64))} is not one of ${PERMISSIONS.join(', ')}`);
    }

    if (problems.length > before) continue;
    entries.push({
      principal: principal(name as string, permissions as Permission[], serverIds!),
      apiKeySha256: keys!.map((h) => h.toLowerCase()),
      tlsIdentities: identities!,
    });
  }
  return { entries: problems.length > 0 ? [] : entries, problems };
}

function serverIdPatternProblem(p: string): string | undefined {
  if (p === '') return 'must not be empty';
  if (Buffer.byteLength(p) > MAX_SERVER_ID_BYTES) return `longer than ${MAX_SERVER_ID_BYTES} bytes`;
  if (p.includes('\0')) return 'must not contain NUL';
  if (p.slice(0, -1).includes('*')) return `${JSON.stringify(p.slice(0, 64))}: "*" may only end a pattern ("web-*") or stand alone ("*": every server_id)`;
  return undefined;
}

/** A string as a list of one; a list of strings as it is; anything else undefined. Absent: an empty list. */
function stringList(v: unknown): string[] | undefined {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
