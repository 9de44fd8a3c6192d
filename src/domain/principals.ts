import { NotFoundError, PermissionDeniedError } from './errors';
import type { ServerIdSet } from './session-repository';

/*
 * Who may call, and what each caller may see. The transport says who is
 * calling (a Principal); the rules of what a principal may do with a session
 * live here and in SessionManager, never in a handler.
 */

export const PERMISSIONS = ['sessions.validate', 'sessions.read', 'sessions.write', 'sessions.events', 'admin'] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** What a permission in the file grants besides itself: reading sessions includes validating tokens. */
const IMPLIES: Partial<Record<Permission, readonly Permission[]>> = { 'sessions.read': ['sessions.validate'] };

/**
 * The server_ids a principal may act for: exact names, prefixes ("web-*"), or
 * every one ("*"). A `*` anywhere but at the end is refused when the file is
 * read, so a pattern means one thing only.
 */
export class ServerIdScope {
  readonly all: boolean;
  private readonly exact: ReadonlySet<string>;
  private readonly prefixes: readonly string[];

  constructor(patterns: readonly string[]) {
    this.all = patterns.includes('*');
    this.exact = new Set(patterns.filter((p) => !p.endsWith('*')));
    this.prefixes = patterns.filter((p) => p.endsWith('*') && p !== '*').map((p) => p.slice(0, -1));
  }

  includes(serverId: string): boolean {
    if (this.all || this.exact.has(serverId)) return true;
    for (const p of this.prefixes) if (serverId.startsWith(p)) return true;
    return false;
  }

  /** The set as storage filters on it; undefined when every server_id is in scope. */
  get set(): ServerIdSet | undefined {
    return this.all ? undefined : { exact: [...this.exact], prefixes: this.prefixes };
  }
}

export interface Principal {
  /** Named in logs and in refusals; never a secret. */
  readonly name: string;
  readonly permissions: ReadonlySet<Permission>;
  readonly scope: ServerIdScope;
}

/** A principal with the credentials that name it: API key hashes and TLS identities. */
export interface PrincipalEntry {
  readonly principal: Principal;
  /** Lower-case hex SHA-256 of each API key that authenticates it. */
  readonly apiKeySha256: readonly string[];
  /** Subject alternative names (URI or DNS) of verified client certificates that authenticate it. */
  readonly tlsIdentities: readonly string[];
}

export function principal(name: string, permissions: readonly Permission[], serverIds: readonly string[]): Principal {
  const granted = new Set<Permission>();
  for (const p of permissions) {
    granted.add(p);
    for (const q of IMPLIES[p] ?? []) granted.add(q);
  }
  return Object.freeze({ name, permissions: granted, scope: new ServerIdScope(serverIds) });
}

/** Every permission on every server_id: the caller of protected mode (a loopback peer) and of --allow-unauthenticated. */
export const UNRESTRICTED = (name: string): Principal => principal(name, PERMISSIONS, ['*']);

/** @throws PermissionDeniedError unless `caller` holds `permission` (what `what` needs). */
export function requirePermission(caller: Principal, permission: Permission, what: string): void {
  if (!caller.permissions.has(permission)) {
    throw new PermissionDeniedError(`principal ${caller.name} lacks the permission ${permission}, which ${what} needs`);
  }
}

/**
 * For a server_id the caller names itself (a create, a list or revoke filter):
 * acting for another backend is refused outright.
 * @throws PermissionDeniedError
 */
export function requireServerId(caller: Principal, serverId: string): void {
  if (!caller.scope.includes(serverId)) {
    throw new PermissionDeniedError(`principal ${caller.name} may not act for server_id ${JSON.stringify(serverId.slice(0, 64))}`);
  }
}

/**
 * For a session found by id: another backend's session is answered exactly
 * as a missing one, so that its existence is not revealed.
 * @throws NotFoundError (from `notFound`) when it is outside the caller's server_ids.
 */
export function requireVisible(caller: Principal, serverId: string, notFound: () => NotFoundError): void {
  if (!caller.scope.includes(serverId)) throw notFound();
}
