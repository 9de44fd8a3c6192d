import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * TLS material from PEM files, shared by the server (config validation and
 * start-up) and the client helper. No gRPC here: the callers turn the bytes
 * into grpc-js credentials. Every problem names the setting and the path, so
 * that a start-up failure says which file to fix.
 */

/** The server's files: its certificate chain and key, and for mTLS the CA(s) client certificates must chain to. */
export interface ServerTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile?: string | undefined;
}

/** Any of a certificate chain, its key and a CA bundle (the client's view, or the server's with the client CA). */
export interface TlsFileSet {
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  readonly caFile?: string | undefined;
}

export interface TlsMaterial {
  readonly certChain?: Buffer;
  readonly privateKey?: Buffer;
  readonly ca?: Buffer;
}

export interface ServerTlsMaterial {
  readonly certChain: Buffer;
  readonly privateKey: Buffer;
  readonly clientCa: Buffer | undefined;
}

/** The labels the problems use for each file (the setting names, or the client's option names). */
export interface TlsLabels {
  cert: string;
  key: string;
  ca: string;
}

const SERVER_LABELS: TlsLabels = { cert: 'tls-cert', key: 'tls-key', ca: 'tls-client-ca' };

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

interface Checked<T> {
  bytes?: Buffer;
  parsed?: T;
  problem?: string;
}

function read(label: string, path: string): { bytes?: Buffer; problem?: string } {
  try {
    return { bytes: readFileSync(path) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return { problem: `${label} ${path}: cannot read the file (${code}${code === 'EISDIR' ? ': a directory' : ''})` };
  }
}

/** A PEM file with one or more certificates (a chain or a CA bundle); the first is returned parsed. */
function checkCertificates(label: string, path: string): Checked<X509Certificate> {
  const { bytes, problem } = read(label, path);
  if (!bytes) return { problem: problem! };
  const blocks = bytes.toString('latin1').match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) return { problem: `${label} ${path}: no PEM certificate ("-----BEGIN CERTIFICATE-----") in the file` };
  const parsed: X509Certificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      parsed.push(new X509Certificate(block));
    } catch {
      return { problem: `${label} ${path}: certificate ${i + 1} of ${blocks.length} is not a valid X.509 certificate` };
    }
  }
  return { bytes, parsed: parsed[0]! };
}

/** A PEM private key, unencrypted (the server has no way to ask for a passphrase). */
function checkPrivateKey(label: string, path: string): Checked<KeyObject> {
  const { bytes, problem } = read(label, path);
  if (!bytes) return { problem: problem! };
  try {
    return { bytes, parsed: createPrivateKey(bytes) };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_MISSING_PASSPHRASE') return { problem: `${label} ${path}: the private key is encrypted; give an unencrypted PEM key (e.g. openssl pkey -in key.pem -out plain.pem)` };
    return { problem: `${label} ${path}: not a PEM private key` };
  }
}

/**
 * Reads and checks whichever files are given: each on its own, then that the
 * key belongs to the chain's first (leaf) certificate. Pairing rules (a cert
 * needs its key) are the caller's, which knows the names to use.
 * @returns every problem (each naming the file's label and path) and the bytes of the good files.
 */
export function readTlsFiles(files: TlsFileSet, labels: TlsLabels): { material: TlsMaterial; problems: string[] } {
  const problems: string[] = [];
  const material: { certChain?: Buffer; privateKey?: Buffer; ca?: Buffer } = {};
  const cert = files.certFile ? checkCertificates(labels.cert, files.certFile) : undefined;
  const key = files.keyFile ? checkPrivateKey(labels.key, files.keyFile) : undefined;
  const ca = files.caFile ? checkCertificates(labels.ca, files.caFile) : undefined;
  for (const c of [cert, key, ca]) if (c?.problem) problems.push(c.problem);
  if (cert?.parsed && key?.parsed && !cert.parsed.checkPrivateKey(key.parsed)) {
    problems.push(`${labels.key} ${files.keyFile} is not the private key of the certificate in ${labels.cert} ${files.certFile}`);
  }
  if (cert?.bytes) material.certChain = cert.bytes;
  if (key?.bytes) material.privateKey = key.bytes;
  if (ca?.bytes) material.ca = ca.bytes;
  return { material, problems };
}

/**
 * Reads the server's TLS files (at start-up; they are not watched, so a renewed
 * certificate takes a restart).
 * @throws Error listing every problem when a file is missing, unreadable or not what it should be.
 */
export function loadServerTls(files: ServerTlsFiles): ServerTlsMaterial {
  const { material, problems } = readTlsFiles({ certFile: files.certFile, keyFile: files.keyFile, caFile: files.clientCaFile }, SERVER_LABELS);
  if (problems.length > 0) throw new TlsFilesError(problems);
  return { certChain: material.certChain!, privateKey: material.privateKey!, clientCa: material.ca };
}

/** Problems with whichever server TLS files are given, named by their settings (for config validation). */
export function checkServerTlsFiles(files: { certFile?: string | undefined; keyFile?: string | undefined; clientCaFile?: string | undefined }): string[] {
  return readTlsFiles({ certFile: files.certFile, keyFile: files.keyFile, caFile: files.clientCaFile }, SERVER_LABELS).problems;
}

/** One or more TLS files that cannot be used; the message lists each, with its path. */
export class TlsFilesError extends Error {
  constructor(readonly problems: string[]) {
    super(`cannot use the TLS files:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'TlsFilesError';
  }
}
