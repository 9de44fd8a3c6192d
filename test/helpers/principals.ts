import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { apiKeySha256, newApiKey } from '../../src/shared/api-keys';
import type { Permission } from '../../src/domain/principals';

export interface PrincipalSpec {
  name: string;
  permissions: Permission[];
  serverIds: string[];
  /** SANs of client certificates that name this principal. */
  tlsIdentity?: string[];
  /** false: no API key (a certificate-only principal). */
  key?: boolean;
}

/** A principals file written for a test, and the fresh key of each principal that has one. */
export interface PrincipalsFile {
  path: string;
  keys: Record<string, string>;
}

/**
 * Writes `specs` as a principals file in `dir` (YAML, as operators write it),
 * each with the key it has in `reuse`, or a new one.
 */
export function writePrincipals(dir: string, specs: PrincipalSpec[], name = 'principals.yaml', reuse: Record<string, string> = {}): PrincipalsFile {
  const keys: Record<string, string> = {};
  const principals = specs.map((p) => {
    const entry: Record<string, unknown> = { name: p.name, server_ids: p.serverIds, permissions: p.permissions };
    if (p.key !== false) {
      keys[p.name] = reuse[p.name] ?? newApiKey();
      entry['api_key_sha256'] = [apiKeySha256(keys[p.name]!)];
    }
    if (p.tlsIdentity) entry['tls_identity'] = p.tlsIdentity;
    return entry;
  });
  const path = join(dir, name);
  writeFileSync(path, stringify({ principals }, { aliasDuplicateObjects: false }), { mode: 0o600 });
  return { path, keys };
}

/** One principal with every permission on every server_id: the caller of tests that are not about permissions. */
export const EVERYTHING: PrincipalSpec = {
  name: 'test-everything',
  permissions: ['sessions.read', 'sessions.write', 'sessions.events', 'admin'],
  serverIds: ['*'],
};
