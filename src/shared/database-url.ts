/*
 * libpq-style database URLs (postgres://user:password@h1:5432,h2:5432/db?...),
 * read here once for every use: checking one without quoting it, masking
 * its password, and naming its hosts and database where that is safe.
 */

interface Parts {
  readonly scheme: string | undefined;
  /** host[:port] entries, as written. */
  readonly hosts: string[];
  readonly database: string;
}

function parts(url: string): Parts {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  const rest = scheme === undefined ? url : url.slice(scheme.length + 3);
  const authority = rest.split(/[/?#]/, 1)[0]!;
  const hostList = authority.slice(authority.lastIndexOf('@') + 1);
  const database = /^[^/?#]*\/([^?#]*)/.exec(rest)?.[1] ?? '';
  return { scheme, hosts: hostList === '' ? [] : hostList.split(','), database };
}

/** What is wrong with a database URL, in words that never include the URL or its password; undefined when it looks usable. */
export function databaseUrlProblem(url: string): string | undefined {
  const { scheme, hosts } = parts(url);
  if (scheme !== 'postgres' && scheme !== 'postgresql') return `must start with postgres:// or postgresql:// (got ${scheme ? `${scheme}://` : 'no scheme'})`;
  if (hosts.length === 0 || hosts.some((h) => h === '' || /\s/.test(h))) return 'names no host (postgres://user:password@host:5432/database)';
  for (const h of hosts) {
    const port = /:(\d*)$/.exec(h.replace(/^\[[^\]]*\]/, ''))?.[1];
    if (port !== undefined && (port === '' || Number(port) < 1 || Number(port) > 65535)) return 'has a host with a port that is not 1-65535';
  }
  return undefined;
}

/** The URL with its password replaced, for logs. */
export function redactedUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/?#]*):[^@/?#]*@/i, '$1:[redacted]@')
    .replace(/([?&]password=)[^&#]*/gi, '$1[redacted]');
}

/** The URL's hosts and database, without user, password or parameters: safe to log and to answer. */
export function targetOf(url: string): string {
  const { hosts, database } = parts(url);
  return `${hosts.join(',')}/${decodeURIComponent(database)}`;
}
