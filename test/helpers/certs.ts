import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Paths of PEM files made for one test run. */
export interface TestCerts {
  dir: string;
  /** The CA that signed server, client and the other leaf certificates below. */
  caCert: string;
  /** Server certificate for IP:127.0.0.1 and DNS:localhost, signed by the CA. */
  serverCert: string;
  serverKey: string;
  /** Server certificate for DNS:sessiond.example.internal only (no IP), signed by the CA. */
  namedServerCert: string;
  namedServerKey: string;
  /** Client certificate (CN=web-1, clientAuth), signed by the CA. */
  clientCert: string;
  clientKey: string;
  /** Client certificates from the CA naming a principal by SAN: a SPIFFE URI, and a DNS name. */
  uriClientCert: string;
  uriClientKey: string;
  dnsClientCert: string;
  dnsClientKey: string;
  /** A second CA that nothing here trusts, and certificates it signed. */
  otherCaCert: string;
  otherServerCert: string;
  otherServerKey: string;
  otherClientCert: string;
  otherClientKey: string;
  /** Removes the folder. */
  remove(): void;
}

/** The URI SAN of uriClientCert, and the DNS SAN of dnsClientCert. */
export const CLIENT_URI = 'spiffe://cluster.local/ns/ops/sa/cli';
export const CLIENT_DNS = 'backend.web.internal';

/** The only name in namedServerCert. */
export const NAMED_HOST = 'sessiond.example.internal';

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A fresh PKI in a temp folder, made with the openssl command line: two CAs
 * and server and client certificates from each (EC P-256, valid for a day).
 * @throws when openssl is not installed (.ci/run installs it).
 */
export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-certs-'));
  const ca = (name: string) => {
    openssl(dir, [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-keyout', `${name}.key`, '-out', `${name}.pem`, '-subj', `/CN=sessiond test ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
  };
  const leaf = (name: string, signer: string, cn: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), `${ext}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n`);
    openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
    openssl(dir, [
      'x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.pem`, '-CAkey', `${signer}.key`, '-CAcreateserial',
      '-days', '1', '-out', `${name}.pem`, '-extfile', `${name}.ext`,
    ]);
  };
  const SERVER = 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth';
  const CLIENT = 'extendedKeyUsage=clientAuth';
  ca('ca');
  ca('other-ca');
  leaf('server', 'ca', 'localhost', SERVER);
  leaf('named-server', 'ca', NAMED_HOST, `subjectAltName=DNS:${NAMED_HOST}\nextendedKeyUsage=serverAuth`);
  leaf('client', 'ca', 'web-1', CLIENT);
  leaf('uri-client', 'ca', 'ops-cli', `subjectAltName=URI:${CLIENT_URI}\n${CLIENT}`);
  leaf('dns-client', 'ca', 'web-backend', `subjectAltName=DNS:${CLIENT_DNS}\n${CLIENT}`);
  leaf('other-server', 'other-ca', 'localhost', SERVER);
  leaf('other-client', 'other-ca', 'web-1', CLIENT);
  const p = (f: string) => join(dir, f);
  return {
    dir,
    caCert: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    namedServerCert: p('named-server.pem'),
    namedServerKey: p('named-server.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    uriClientCert: p('uri-client.pem'),
    uriClientKey: p('uri-client.key'),
    dnsClientCert: p('dns-client.pem'),
    dnsClientKey: p('dns-client.key'),
    otherCaCert: p('other-ca.pem'),
    otherServerCert: p('other-server.pem'),
    otherServerKey: p('other-server.key'),
    otherClientCert: p('other-client.pem'),
    otherClientKey: p('other-client.key'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
