import { type ExecutionContext } from 'ava';
import { status, type ServiceError } from '@grpc/grpc-js';
import { startTestServer, type TestServer } from './server';
import type { Session } from '../../src/client';

export const MIN = 60_000;
export const HOUR = 60 * MIN;
export const DAY = 24 * HOUR;

/** Limits stated in the proto comments (server defaults). */
export const MAX_ID_BYTES = 256;
export const MAX_USER_AGENT_BYTES = 1024;
export const MAX_ATTRIBUTES = 64;
export const MAX_KEY_BYTES = 256;
export const MAX_VALUE_BYTES = 4096;
export const MAX_TTL_MS = 30 * DAY;

export const ms = (d: Date | undefined): number => {
  if (!d) throw new Error('timestamp unset');
  return d.getTime();
};

export async function server(t: ExecutionContext, env?: Record<string, string>): Promise<TestServer> {
  const s = await startTestServer({ env });
  t.teardown(() => s.close());
  return s;
}

/** Every live session as ListSessions returns it (one page is enough for these tests). */
export async function snapshot(s: TestServer): Promise<Session[]> {
  const page = await s.client.listSessions({ pageSize: 1000 });
  t_assert(page.nextPageToken === '', 'snapshot expects a single page');
  return page.sessions;
}

export function t_assert(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Asserts the code and that the message names `field`; labels every assertion with the case. */
export async function expectStatus(t: ExecutionContext, label: string, p: Promise<unknown>, code: status, field: RegExp): Promise<void> {
  let err: ServiceError | undefined;
  try {
    await p;
  } catch (e) {
    err = e as ServiceError;
  }
  if (!err) {
    t.fail(`${label}: expected ${status[code]}, but the call succeeded`);
    return;
  }
  t.is(err.code, code, `${label}: expected ${status[code]}, got ${status[err.code]}: ${err.details}`);
  t.regex(err.details, field, `${label}: the message does not name the field: ${err.details}`);
}

/** After an error: the server still serves, and what was stored is unchanged. */
export async function stillServingUnchanged(t: ExecutionContext, s: TestServer, label: string, before: Session[], probeToken: string) {
  const v = await s.client.validateSession(probeToken);
  t.true(v.valid, `${label}: a valid call after the error failed`);
  t.deepEqual(await snapshot(s), before, `${label}: stored sessions changed after a rejected call`);
}

export function fullCreate(overrides: Record<string, unknown> = {}) {
  return {
    serverId: 'web-1',
    subject: 'alice',
    attributes: { role: 'admin', theme: 'dark' },
    ip: '203.0.113.7',
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64)',
    ttl: { seconds: 2 * 3600, nanos: 0 },
    idleTimeout: { seconds: 15 * 60, nanos: 500_000_000 },
    ...overrides,
  };
}
