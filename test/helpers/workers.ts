import type { ExecutionContext } from 'ava';
import { SessiondClient, type ServingStatus } from '../../src/client/client';

/*
 * Clients of a --workers group, each on a connection of its own, and which
 * worker each connection landed on (its health Check names it).
 */

/** The worker a client's connection is on, and that worker's pid, as its health Check says. */
export async function workerOf(c: SessiondClient): Promise<{ slot: string; pid: number; status: ServingStatus; reason: string | undefined }> {
  const h = await c.health();
  const one = (k: string) => (h.metadata.get(k)[0] as string | undefined);
  return { slot: one('x-sessiond-worker') ?? '?', pid: Number(one('x-sessiond-worker-pid')), status: h.status, reason: one('x-sessiond-not-serving-reason') };
}

let connections = 0;
/** A client on a connection of its own: distinct channel options keep grpc-js from sharing one (its three stubs still share theirs). */
export function connect(address: string, apiKey?: string): SessiondClient {
  return new SessiondClient(address, { apiKey, defaultDeadlineMs: 30_000, channelOptions: { 'sessiond-test.connection': ++connections } });
}

/** Connects until every slot has at least `each` clients (the primary hands connections to its workers in turn). */
export async function clientsOnEvery(t: ExecutionContext, address: string, slots: number, each = 2, apiKey?: string): Promise<Map<string, SessiondClient[]>> {
  const bySlot = new Map<string, SessiondClient[]>();
  for (let i = 0; i < 60 && ([...bySlot.values()].filter((cs) => cs.length >= each).length < slots); i++) {
    const c = connect(address, apiKey);
    t.teardown(() => c.close());
    const { slot } = await workerOf(c);
    bySlot.set(slot, [...(bySlot.get(slot) ?? []), c]);
  }
  t.deepEqual([...bySlot.keys()].sort(), Array.from({ length: slots }, (_, i) => String(i + 1)), 'connections land on every worker');
  return bySlot;
}
