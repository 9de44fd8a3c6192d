import type { Metadata } from '@grpc/grpc-js';
import { createHash, timingSafeEqual } from 'node:crypto';
import { PermissionDeniedError, UnauthenticatedError } from '../domain/errors';

/**
 * Admin access, as API.md has it: with a configured token every call must
 * carry `authorization: Bearer <token>`; without one, only loopback peers get in.
 */
export class AdminAuth {
  private readonly tokenHash: Buffer | undefined;

  constructor(adminToken: string | undefined) {
    this.tokenHash = adminToken ? sha256(adminToken) : undefined;
  }

  /** @throws UnauthenticatedError without credentials, PermissionDeniedError for wrong ones or a remote peer. */
  check(metadata: Metadata, peer: string): void {
    if (!this.tokenHash) {
      if (!isLoopbackPeer(peer)) {
        throw new PermissionDeniedError('admin calls are accepted from loopback only when no admin token is configured (set SESSIOND_ADMIN_TOKEN)');
      }
      return;
    }
    const header = metadata.get('authorization')[0];
    if (header === undefined) throw new UnauthenticatedError('admin calls need the metadata "authorization: Bearer <admin token>"');
    const m = /^Bearer\s+(.+)$/i.exec(String(header).trim());
    if (!m) throw new UnauthenticatedError('authorization metadata must be "Bearer <admin token>"');
    // Hashing both sides gives equal lengths, which timingSafeEqual needs,
    // and keeps the comparison constant-time whatever the caller sends.
    if (!timingSafeEqual(sha256(m[1]!), this.tokenHash)) throw new PermissionDeniedError('the admin token is not valid');
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * grpc-js peers look like "127.0.0.1:5000", "[::1]:5000" or "::ffff:127.0.0.1:5000"-style forms:
 * a server call's getPeer() is `${remoteAddress}:${remotePort}` with IPv6 unbracketed ("::1:5000").
 */
export function isLoopbackPeer(peer: string): boolean {
  let host = peer.replace(/^(ipv4|ipv6):/, '');
  const bracketed = /^\[(.*)\](?::\d+)?$/.exec(host);
  if (bracketed) host = bracketed[1]!;
  // Drop the trailing port; a bare "::1" (no port) is kept whole.
  else if (host !== '::1') host = host.replace(/:\d+$/, '');
  host = host.replace(/^::ffff:/i, '');
  return host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
