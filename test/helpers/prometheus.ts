import { request, type Agent } from 'node:http';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * GETs `path` from the metrics endpoint; resolves with the status, content type and body.
 * A fresh connection each time unless an agent is given (one with keepAlive holds it open, as Prometheus does).
 */
export function httpGet(port: number, path = '/metrics', method = 'GET', agent: Agent | false = false): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Parses the Prometheus text exposition format (samples only; HELP and TYPE lines are skipped). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Scrapes and parses the endpoint. */
export async function scrape(port: number): Promise<Sample[]> {
  const r = await httpGet(port);
  if (r.status !== 200) throw new Error(`scrape answered ${r.status}: ${r.body}`);
  return parseExposition(r.body);
}

/**
 * The value of the one sample named `name` whose labels include `labels`;
 * undefined when there is none.
 * @throws when several samples match.
 */
export function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length > 1) throw new Error(`${hits.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return hits[0]?.value;
}

/** The metrics port a server process announced in its "serving" log line (SESSIOND_METRICS_LISTEN set). */
export function metricsPortOf(stderr: string): number {
  const m = /"msg":"serving".*?"metrics":"http:\/\/[^"]*:(\d+)\/metrics"/.exec(stderr);
  if (!m) throw new Error(`no metrics address in the serving line:\n${stderr}`);
  return Number(m[1]);
}
