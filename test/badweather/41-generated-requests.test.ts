import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { status, type ServiceError } from '@grpc/grpc-js';
import { CheckpointRequest, PurgeExpiredSessionsRequest } from '../../generated/sessions/v1/admin_service';
import {
  CreateSessionRequest, GetSessionRequest, ListSessionsRequest, RevokeSessionsRequest, UpdateSessionRequest,
  ValidateSessionRequest, ValidateSessionStreamRequest,
} from '../../generated/sessions/v1/session_service';
import { ServingStatus } from '../../src/client/client';
import { quietServer, StoreWatcher } from '../helpers/badweather';
import { SMALL_MESSAGES, type TestServer } from '../helpers/server';
import { frame, RawGrpc } from '../helpers/raw-grpc';

/*
 * Random requests: thousands of random requests per run, both
 * well-typed ones through the generated client and byte-level mutations of
 * valid encoded requests sent raw. Whatever comes in, the answer has a status
 * from the allowed set (never INTERNAL or UNKNOWN), a rejected call writes
 * nothing, and the server stays healthy. SESSIOND_FUZZ_RUNS scales the runs
 * (the soak can ask for many more); a failure prints fast-check's seed and path.
 */
const RUNS = Number(process.env['SESSIOND_FUZZ_RUNS'] ?? 1500);

const ALLOWED = new Set<number>([
  status.OK,
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.FAILED_PRECONDITION, // a stale etag
  status.ALREADY_EXISTS, // a request_id used before
  status.RESOURCE_EXHAUSTED, // over the message size limit
]);

const S = '/sessions.v1.SessionService/';
const A = '/sessions.v1.AdminService/';

interface Fixture {
  /** A first session, and a pool of others for the generator to touch, update, rotate and revoke. */
  id: string;
  token: string;
  etag: string;
  pageToken: string;
  ids: string[];
  tokens: string[];
}

/** Strings that hit the edges: empty, NULs, replacement characters, any code point, long, and values the server knows. */
function text(f: Fixture): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: fc.constantFrom('', 'web-1', 'alice', '\0', 'a\0b', '\uFFFD', '\uFEFFbom', '127.0.0.1', '::1', f.id, f.token, f.etag, f.pageToken), weight: 3 },
    { arbitrary: fc.string({ maxLength: 40 }), weight: 3 },
    { arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }), weight: 2 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 20 }), weight: 2 },
    { arbitrary: fc.integer({ min: 200, max: 6000 }).map((n) => 'x'.repeat(n)), weight: 1 },
  );
}

function durationArb(): fc.Arbitrary<{ seconds: number; nanos: number } | undefined> {
  return fc.option(
    fc.record({
      seconds: fc.oneof(fc.integer({ min: -100_000, max: 4_000_000 }), fc.maxSafeInteger(), fc.maxSafeNat().map((n) => -n), fc.constant(0)),
      nanos: fc.oneof(fc.integer({ min: -2_147_483_648, max: 2_147_483_647 }), fc.integer({ min: 0, max: 999_999_999 }), fc.constant(0)),
    }),
    { nil: undefined },
  );
}

type Call = { rpc: string; req: Record<string, unknown> };

/** Mostly a good value, sometimes anything: so that calls get past validation as well as into it. */
function mostly<T>(good: fc.Arbitrary<T>, wild: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return fc.oneof({ arbitrary: good, weight: 3 }, { arbitrary: wild, weight: 1 });
}

const base64url = (n: number) => fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: n, maxLength: n });

function structuredCall(f: Fixture): fc.Arbitrary<Call> {
  const t = text(f);
  const id = mostly(fc.oneof(fc.constantFrom(...f.ids), base64url(22)), t);
  const token = mostly(fc.oneof(fc.constantFrom(...f.tokens), base64url(43)), t);
  const serverId = mostly(fc.constantFrom('web-1', 'web-2'), t);
  const subject = mostly(fc.constantFrom('', 'alice', 'bob'), t);
  const tame = fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 12 });
  const attrs = mostly(fc.dictionary(tame, tame, { maxKeys: 4 }), fc.dictionary(t, t, { maxKeys: 5 }));
  const wildInt32 = fc.integer({ min: -2_147_483_648, max: 2_147_483_647 });
  const duration = mostly(
    fc.option(fc.record({ seconds: fc.integer({ min: 1, max: 86_400 }), nanos: fc.constant(0) }), { nil: undefined }),
    durationArb(),
  );
  return fc.oneof(
    fc.record({
      serverId, subject, attributes: attrs,
      ip: mostly(fc.constantFrom('', '192.0.2.1', '2001:db8::1'), t),
      userAgent: mostly(fc.constantFrom('', 'Mozilla/5.0'), t),
      ttl: duration, idleTimeout: duration,
      requestId: mostly(fc.oneof(fc.constant(''), fc.uuid()), t),
    }).map((req) => ({ rpc: 'createSession', req })),
    fc.record({ id }).map((req) => ({ rpc: 'getSession', req })),
    fc.record({ token, touch: fc.boolean() }).map((req) => ({ rpc: 'validateSession', req })),
    fc.record({ id }).map((req) => ({ rpc: 'touchSession', req })),
    fc.record({
      id, attributes: attrs, merge: fc.boolean(),
      removeAttributes: mostly(fc.constant<string[]>([]), fc.array(t, { maxLength: 3 })),
      etag: mostly(fc.constantFrom(f.etag, '', '"999"'), t),
    }).map((req) => ({ rpc: 'updateSession', req })),
    fc.record({ id }).map((req) => ({ rpc: 'rotateSessionToken', req })),
    fc.record({ id, allowMissing: fc.boolean() }).map((req) => ({ rpc: 'deleteSession', req })),
    fc.record({
      serverId: mostly(fc.constantFrom('', 'web-1'), t), subject: mostly(fc.constantFrom('', 'alice'), t),
      pageSize: mostly(fc.integer({ min: 0, max: 1000 }), wildInt32), pageToken: mostly(fc.constantFrom('', f.pageToken), t),
    }).map((req) => ({ rpc: 'listSessions', req })),
    fc.record({ serverId: mostly(fc.constantFrom('', 'web-9'), t), subject: mostly(fc.constantFrom('', 'zed'), t) })
      .map((req) => ({ rpc: 'revokeSessions', req })),
    fc.record({ mode: mostly(fc.integer({ min: 0, max: 4 }), wildInt32) }).map((req) => ({ rpc: 'checkpoint', req })),
    fc.record({ batchSize: mostly(fc.integer({ min: 0, max: 10_000 }), wildInt32) }).map((req) => ({ rpc: 'purgeExpiredSessions', req })),
  );
}

/** Valid encoded requests to mutate, each with its path. */
function corpus(f: Fixture): { path: string; bytes: Buffer }[] {
  const enc = (m: { finish(): Uint8Array }) => Buffer.from(m.finish());
  return [
    { path: `${S}CreateSession`, bytes: enc(CreateSessionRequest.encode(CreateSessionRequest.fromPartial({
      serverId: 'web-1', subject: 'alice', attributes: { role: 'admin', 'ü': 'ö' }, ip: '192.0.2.1', userAgent: 'fuzz/1',
      ttl: { seconds: 3600, nanos: 0 }, idleTimeout: { seconds: 600, nanos: 5 }, requestId: 'r',
    }))) },
    { path: `${S}GetSession`, bytes: enc(GetSessionRequest.encode({ id: f.id })) },
    { path: `${S}ValidateSession`, bytes: enc(ValidateSessionRequest.encode({ token: f.token, touch: true })) },
    { path: `${S}UpdateSession`, bytes: enc(UpdateSessionRequest.encode(UpdateSessionRequest.fromPartial({
      id: f.id, attributes: { a: '1', b: '2' }, merge: true, removeAttributes: ['c'], etag: f.etag,
    }))) },
    { path: `${S}ListSessions`, bytes: enc(ListSessionsRequest.encode({ serverId: 'web-1', subject: '', pageSize: 2, pageToken: f.pageToken })) },
    { path: `${S}RevokeSessions`, bytes: enc(RevokeSessionsRequest.encode({ serverId: 'nobody', subject: 'nobody', exceptSessionId: f.id })) },
    { path: `${S}ValidateSessionStream`, bytes: enc(ValidateSessionStreamRequest.encode({ correlationId: 42, token: f.token, touch: false, items: [] })) },
    { path: `${S}ValidateSessionStream`, bytes: enc(ValidateSessionStreamRequest.encode({
      correlationId: 0, token: '', touch: false,
      items: [{ correlationId: 7, token: f.token, touch: true }, { correlationId: 8, token: 'unknown', touch: false }, { correlationId: 9, token: f.tokens[1]!, touch: false }],
    })) },
    { path: `${A}Checkpoint`, bytes: enc(CheckpointRequest.encode({ mode: 1 })) },
    { path: `${A}PurgeExpiredSessions`, bytes: enc(PurgeExpiredSessionsRequest.encode({ batchSize: 10 })) },
  ];
}

type Mutation =
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'duplicate'; at: number; count: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.oneof(fc.constantFrom(0x00, 0x7f, 0x80, 0xff, 0xfe, 0xc0, 0x0f, 0x0c), fc.integer({ min: 0, max: 255 })) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) }),
);

function mutate(input: Buffer, m: Mutation): Buffer {
  const at = input.length === 0 ? 0 : m.at % (input.length + 1);
  switch (m.kind) {
    case 'set': {
      if (input.length === 0) return Buffer.from([m.byte]);
      const out = Buffer.from(input);
      out[at % input.length] = m.byte;
      return out;
    }
    case 'insert':
      return Buffer.concat([input.subarray(0, at), m.bytes, input.subarray(at)]);
    case 'delete':
      return Buffer.concat([input.subarray(0, at), input.subarray(at + m.count)]);
    case 'truncate':
      return input.subarray(0, at);
    case 'duplicate':
      return Buffer.concat([input.subarray(0, at + m.count), input.subarray(at)]);
  }
}

/** Health SERVING, and a new session can be created and read back. */
async function stillHealthy(t: ExecutionContext, s: TestServer): Promise<void> {
  t.is((await s.client.health()).status, ServingStatus.SERVING);
  const created = await s.client.createSession({ serverId: 'after-the-storm' });
  t.is((await s.client.getSession(created.session!.id)).session?.serverId, 'after-the-storm');
}

function setUp() {
  return async () => {
    const s = await quietServer({ ...SMALL_MESSAGES });
    const created = await s.client.createSession({ serverId: 'web-1', subject: 'alice', attributes: { a: '1' } });
    await s.client.createSession({ serverId: 'web-1', subject: 'bob' });
    const page = await s.client.listSessions({ serverId: 'web-1', pageSize: 1 });
    const pool = await Promise.all(Array.from({ length: 30 }, (_, i) => s.client.createSession({ serverId: 'web-2', subject: `pool-${i}` })));
    const f: Fixture = {
      id: created.session!.id, token: created.token, etag: created.session!.etag, pageToken: page.nextPageToken,
      ids: [created.session!.id, ...pool.map((p) => p.session!.id)], tokens: [created.token, ...pool.map((p) => p.token)],
    };
    const watcher = new StoreWatcher(s.dbPath);
    return { s, f, watcher };
  };
}

test('generated: random well-typed requests through the generated client', async (t) => {
  const { s, f, watcher } = await setUp()();
  t.teardown(async () => {
    watcher.close();
    await s.close();
  });
  const client = s.client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const seen = new Map<string, number>();
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(structuredCall(f), async ({ rpc, req }) => {
      const before = watcher.fingerprint();
      const version = watcher.dataVersion();
      let code: number = status.OK;
      let details = '';
      try {
        const r = req as Record<string, never>;
        // The client's convenience signatures differ per RPC; the generated request objects do not.
        if (rpc === 'getSession' || rpc === 'touchSession' || rpc === 'rotateSessionToken') await client[rpc]!(r['id']);
        else if (rpc === 'validateSession') await client[rpc]!(r['token'], r['touch']);
        else if (rpc === 'deleteSession') await client[rpc]!(r['id'], r['allowMissing']);
        else await client[rpc]!(req);
      } catch (err) {
        code = (err as ServiceError).code;
        details = (err as ServiceError).details;
      }
      const key = `${rpc} ${status[code]}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      if (!ALLOWED.has(code)) throw new Error(`${rpc} answered ${status[code] ?? code}: ${details}`);
      if (code !== status.OK && (watcher.fingerprint() !== before || watcher.dataVersion() !== version)) {
        throw new Error(`${rpc} was rejected with ${status[code]}, yet something was written`);
      }
      if (++runs % 50 === 0 && (await s.client.health('', { deadlineMs: 2000 })).status !== ServingStatus.SERVING) {
        throw new Error('health is no longer SERVING');
      }
    }),
    { numRuns: RUNS },
  );
  await stillHealthy(t, s);
  // The generator must reach past validation, or it proves little.
  const codes = new Set([...seen.keys()].map((k) => k.split(' ')[1]));
  t.true(codes.has('OK') && codes.has('INVALID_ARGUMENT') && codes.has('NOT_FOUND'), JSON.stringify([...seen]));
  t.log(JSON.stringify(Object.fromEntries([...seen].sort())));
});

test('generated: random byte mutations of valid requests, sent raw', async (t) => {
  const { s, f, watcher } = await setUp()();
  const raw = new RawGrpc(s.address);
  t.teardown(async () => {
    raw.close();
    watcher.close();
    await s.close();
  });
  const inputs = corpus(f);
  const seen = new Map<string, number>();
  const sample = fc.record({
    which: fc.nat({ max: inputs.length - 1 }),
    mutations: fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
    // Mutate the message alone (framing stays valid) or the whole frame (prefix included).
    framed: fc.boolean(),
  });
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(sample, async ({ which, mutations, framed }) => {
      const { path, bytes } = inputs[which]!;
      const body = framed
        ? mutations.reduce(mutate, frame(bytes))
        : frame(mutations.reduce(mutate, bytes));
      const before = watcher.fingerprint();
      const version = watcher.dataVersion();
      const answer = await raw.call(path, body);
      const key = `${path.split('/')[2]} ${status[answer.code] ?? answer.code}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      if (!ALLOWED.has(answer.code)) throw new Error(`${path} answered ${status[answer.code] ?? answer.code}: ${answer.details}`);
      if (answer.code !== status.OK && (watcher.fingerprint() !== before || watcher.dataVersion() !== version)) {
        throw new Error(`${path} was rejected with ${status[answer.code]}, yet something was written`);
      }
      // A health check every so often: cheap enough, and a wedged server shows at once.
      if (++runs % 50 === 0 && (await s.client.health('', { deadlineMs: 2000 })).status !== ServingStatus.SERVING) {
        throw new Error('health is no longer SERVING');
      }
    }),
    { numRuns: RUNS },
  );
  await stillHealthy(t, s);
  const codes = new Set([...seen.keys()].map((k) => k.split(' ')[1]));
  t.true(codes.has('OK') && codes.has('INVALID_ARGUMENT'), JSON.stringify([...seen]));
  t.log(JSON.stringify(Object.fromEntries([...seen].sort())));
});
