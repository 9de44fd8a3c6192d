import type { Metadata, ServerUnaryCall } from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { UnauthenticatedError } from '../domain/errors';
import { UNRESTRICTED, type Principal, type PrincipalEntry } from '../domain/principals';

/** What a call of any shape (unary or streaming) tells about its caller. */
export type IncomingCall = Pick<ServerUnaryCall<unknown, unknown>, 'metadata' | 'getPeer' | 'getAuthContext'>;

/** How callers are told apart when no principal is configured. */
export interface CallerPolicy {
  /** Serve every peer with every permission (--allow-unauthenticated); else loopback peers only (protected mode). */
  readonly allowUnauthenticated: boolean;
}

/**
 * Headers a forwarding proxy adds. A sidecar (Envoy, Istio, nginx) connects
 * to sessiond from loopback on behalf of remote callers, so a loopback peer
 * whose call carries one of these is a remote caller, not a local process.
 */
const PROXY_HEADER = /^(forwarded|via|x-real-ip|x-forwarded-.*|x-envoy-.*)$/;

const LOOPBACK = UNRESTRICTED('loopback');
const OPEN = UNRESTRICTED('unauthenticated');
const CACHE_LIMIT = 1024;

/**
 * Who is calling: the one place a call's credentials become a principal. It
 * decides nothing about sessions (the domain does); it only names the caller.
 * The set is replaced whole on a reload, and every cache with it, so that a
 * removed key stops working on the next call.
 */
export class Callers {
  private byKeyHash = new Map<string, Principal>();
  private byTlsIdentity = new Map<string, Principal>();
  /** Keys and certificates seen lately, so that a busy caller is not hashed or parsed on every call. */
  private recentKeys = new Map<string, Principal | undefined>();
  private recentCerts = new Map<string, Principal | undefined>();
  private count = 0;

  constructor(private readonly policy: CallerPolicy, entries: readonly PrincipalEntry[] = []) {
    this.use(entries);
  }

  /** Replaces every principal at once. */
  use(entries: readonly PrincipalEntry[]): void {
    const byKeyHash = new Map<string, Principal>();
    const byTlsIdentity = new Map<string, Principal>();
    for (const e of entries) {
      for (const h of e.apiKeySha256) byKeyHash.set(h.toLowerCase(), e.principal);
      for (const id of e.tlsIdentities) byTlsIdentity.set(id, e.principal);
    }
    this.byKeyHash = byKeyHash;
    this.byTlsIdentity = byTlsIdentity;
    this.recentKeys = new Map();
    this.recentCerts = new Map();
    this.count = entries.length;
  }

  /** How many principals are configured (0: protected mode, or open with allowUnauthenticated). */
  get size(): number {
    return this.count;
  }

  /**
   * The caller of `call`. A bearer key, when sent, decides; otherwise a
   * verified client certificate's SANs (URI, then DNS).
   * @throws UnauthenticatedError for no credentials, a key that is unknown (or
   *   was removed), a malformed authorization header, or a certificate that
   *   names no principal; never quoting the key.
   */
  identify(call: IncomingCall): Principal {
    if (this.count === 0) return this.withoutPrincipals(call);
    const header = call.metadata.get('authorization');
    if (header.length > 0) {
      if (header.length > 1) throw new UnauthenticatedError('send one authorization header, not several');
      const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(String(header[0]));
      if (!m) throw new UnauthenticatedError('authorization metadata must be "Bearer <api key>"');
      const found = this.byKey(m[1]!);
      if (!found) throw new UnauthenticatedError('the API key is not valid (unknown, or removed from the principals file)');
      return found;
    }
    const cert = call.getAuthContext().sslPeerCertificate;
    if (cert) {
      const found = this.byCertificate(cert);
      if (found) return found;
      throw new UnauthenticatedError(`the client certificate names no principal (its SANs: ${sansOf(cert).join(', ') || 'none'}); send an API key, or list one of them as a tls_identity`);
    }
    throw new UnauthenticatedError('this call needs credentials: the metadata "authorization: Bearer <api key>", or a client certificate of a principal');
  }

  private withoutPrincipals(call: IncomingCall): Principal {
    if (this.policy.allowUnauthenticated) return OPEN;
    if (isLoopbackPeer(call.getPeer()) && !viaProxy(call.metadata)) return LOOPBACK;
    throw new UnauthenticatedError(
      'no principals are configured, so only local callers are served (protected mode); a caller through a proxy is not local. Configure --principals-file (see docs/security.md)',
    );
  }

  private byKey(key: string): Principal | undefined {
    if (this.recentKeys.has(key)) return this.recentKeys.get(key);
    const found = this.byKeyHash.get(createHash('sha256').update(key, 'utf8').digest('hex'));
    // Unknown keys are not cached: a caller trying keys must not fill the cache.
    if (found) remember(this.recentKeys, key, found);
    return found;
  }

  private byCertificate(cert: PeerCertificate): Principal | undefined {
    const print = cert.fingerprint256;
    if (this.recentCerts.has(print)) return this.recentCerts.get(print);
    let found: Principal | undefined;
    for (const san of sansOf(cert)) {
      found = this.byTlsIdentity.get(san);
      if (found) break;
    }
    // The certificate was verified against the client CA, so its entries are bounded by what that CA signed.
    remember(this.recentCerts, print, found);
    return found;
  }
}

function remember<V>(cache: Map<string, V>, key: string, value: V): void {
  if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value!);
  cache.set(key, value);
}

/**
 * The URI and DNS subject alternative names of a certificate, URIs first.
 * Node writes them as `URI:x, DNS:y`, and quotes a value (JSON-style) that
 * holds a comma or a quote, so that a crafted name cannot pass for two.
 */
export function sansOf(cert: PeerCertificate): string[] {
  const text = cert.subjectaltname ?? '';
  const uris: string[] = [];
  const dns: string[] = [];
  for (const m of text.matchAll(/(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    let value = m[2]!;
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    if (m[1] === 'URI') uris.push(value);
    else if (m[1] === 'DNS') dns.push(value);
  }
  return [...uris, ...dns];
}

function viaProxy(metadata: Metadata): boolean {
  for (const key of Object.keys(metadata.getMap())) if (PROXY_HEADER.test(key)) return true;
  return false;
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
