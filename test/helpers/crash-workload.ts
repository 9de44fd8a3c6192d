import { status, type ServiceError } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { InvalidReason } from '../../generated/sessions/v1/session_service';
import { SessiondClient, type Session } from '../../src/client';
import { compiledServerEntry } from './compiled-server';
import { spawnServer, type ServerProcess } from './process';

/*
 * The crash-during-writes workload, shared by
 * test/30-crash*.test.ts (a bounded run in `make test`) and test/soak/crash-soak.ts
 * (`make soak`). Client workers keep CreateSession, UpdateSession and
 * DeleteSession calls in flight against a child-process server and record
 * every acknowledged result; the server is SIGKILLed at a random moment; the
 * file is checked with PRAGMA integrity_check on a separate read-only
 * connection (which neither checkpoints nor removes the WAL, so recovery is
 * still left to the server); the server restarts on the same file, and every
 * acknowledged write must be there. A call whose answer never came (in flight
 * at the kill) has an unknown outcome: either state is accepted, then the model
 * adopts what the server shows. Every random choice comes from one seeded PRNG,
 * so a failing seed replays the same schedule of operations and kill delays
 * (the exact interleaving with the server still varies).
 */

const SERVER_ID = 'crash';

export interface CrashRunOptions {
  /** Folder for the database file. */
  dir: string;
  seed: number;
  /** SIGKILLs to deliver. */
  kills: number;
  /** Keep cycling until this many seconds have passed as well (soak). Default 0. */
  minSeconds?: number;
  /** Extra server settings, e.g. SESSIOND_SYNCHRONOUS=full. */
  env?: Record<string, string>;
  /** Concurrent client loops. Default 8. */
  workers?: number;
  /** The kill comes this long after the workers start, uniformly at random. Default [80, 600] ms. */
  killDelayMs?: [number, number];
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface CrashReport {
  seed: number;
  kills: number;
  acked: { creates: number; updates: number; deletes: number };
  /** Calls in flight at a kill: their outcome was learnt from the restarted server. */
  unknown: { creates: number; updates: number; deletes: number };
  /** Unknown-outcome calls that turned out to have committed. */
  unknownCommitted: number;
  sessionsTracked: number;
  /** Every broken promise, with the cycle and seed; empty when all held. */
  violations: string[];
}

type Pending = { kind: 'update'; attributes: Record<string, string> } | { kind: 'delete' };

interface Tracked {
  id: string;
  token: string;
  subject: string;
  attributes: Record<string, string>;
  etag: string;
  deleted: boolean;
  /** The call in flight at the kill, if any (calls on one session never overlap). */
  pending: Pending | undefined;
  busy: boolean;
  /** Cycle of the last acknowledged or learnt change: checked in detail after the next restart. */
  changedIn: number;
}

/** mulberry32: small, fast, good enough to drive a test schedule. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sameAttributes(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

/** PRAGMA integrity_check on a read-only connection: no checkpoint, the WAL stays for the server's own recovery. */
export function integrityCheck(dbPath: string): string {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
  } finally {
    db.close();
  }
}

/**
 * Runs kill cycles until `kills` SIGKILLs were delivered (and `minSeconds`
 * passed), then a last restart and check. Never throws for a broken promise:
 * those are collected in `violations`.
 */
export async function runCrashCycles(o: CrashRunOptions): Promise<CrashReport> {
  const rnd = prng(o.seed);
  const workers = o.workers ?? 8;
  const [minDelay, maxDelay] = o.killDelayMs ?? [80, 600];
  const dbPath = join(o.dir, 'sessions.db');
  const log = o.log ?? (() => undefined);
  const started = Date.now();
  const tracked = new Map<string, Tracked>();
  /** Subjects of creates whose answer never came: they may or may not exist. */
  const unknownCreates = new Map<string, Record<string, string>>();
  /** Subjects whose create committed though unacknowledged, found after a restart (no token known). */
  const adopted = new Set<string>();
  const report: CrashReport = {
    seed: o.seed, kills: 0, acked: { creates: 0, updates: 0, deletes: 0 }, unknown: { creates: 0, updates: 0, deletes: 0 },
    unknownCommitted: 0, sessionsTracked: 0, violations: [],
  };
  let cycle = 0;
  let subjectSeq = 0;
  let generation = 0;
  const violate = (what: string) => {
    if (report.violations.length < 50) report.violations.push(`cycle ${cycle} (seed ${o.seed}): ${what}`);
  };
  const pad = () => {
    // Mostly small rows, sometimes values that spill into overflow pages.
    const r = rnd();
    return 'p'.repeat(r < 0.1 ? 3000 + Math.floor(rnd() * 1000) : Math.floor(rnd() * 300));
  };
  const env = (): Record<string, string> => ({
    SESSIOND_DB_PATH: dbPath,
    // Checkpoints of every size, so that some kills land inside one (in the worker thread).
    SESSIOND_WAL_AUTOCHECKPOINT: String([16, 100, 1000][Math.floor(rnd() * 3)]),
    // The sweep purges revoked sessions while the kills come: deletes in flight too.
    SESSIOND_SWEEP_INTERVAL: '500ms',
    SESSIOND_BUSY_TIMEOUT: '10s',
    ...o.env,
  });

  // Plain JavaScript: the test restarts the server after every kill (compiled-server.ts).
  const entry = compiledServerEntry();
  let server: ServerProcess | undefined;
  try {
    server = await spawnServer(env(), [], 60_000, { entry });
    for (;;) {
      cycle++;
      const client = new SessiondClient(server.address, { defaultDeadlineMs: 15_000 });
      let killed = false;

      const onError = (what: string, err: unknown): boolean => {
        // Whatever fails after the kill is an unknown outcome; before it, every call must succeed.
        if (killed) return true;
        const e = err as ServiceError;
        violate(`${what} failed before the kill: ${status[e.code] ?? ''} ${e.details ?? String(err)}`);
        return false;
      };

      const createOne = async () => {
        const subject = `s-${++subjectSeq}`;
        const attributes = { subject, gen: String(++generation), pad: pad() };
        try {
          const r = await client.createSession({ serverId: SERVER_ID, subject, attributes });
          report.acked.creates++;
          const s = r.session!;
          if (!sameAttributes(s.attributes, attributes)) violate(`create of ${subject} answered other attributes`);
          tracked.set(s.id, { id: s.id, token: r.token, subject, attributes, etag: s.etag, deleted: false, pending: undefined, busy: false, changedIn: cycle });
        } catch (err) {
          if (onError(`CreateSession ${subject}`, err)) {
            report.unknown.creates++;
            unknownCreates.set(subject, attributes);
          }
        }
      };
      const pick = (): Tracked | undefined => {
        const live = [...tracked.values()];
        for (let tries = 0; tries < 8 && live.length > 0; tries++) {
          const s = live[Math.floor(rnd() * live.length)]!;
          if (!s.busy && !s.deleted) return s;
        }
        return undefined;
      };
      const updateOne = async (s: Tracked) => {
        const attributes = { subject: s.subject, gen: String(++generation), pad: pad() };
        s.busy = true;
        try {
          const r = await client.updateSession({ id: s.id, attributes, etag: s.etag });
          report.acked.updates++;
          if (!sameAttributes(r.session!.attributes, attributes)) violate(`update of ${s.id} answered other attributes`);
          Object.assign(s, { attributes, etag: r.session!.etag, changedIn: cycle });
        } catch (err) {
          if (onError(`UpdateSession ${s.id}`, err)) {
            report.unknown.updates++;
            s.pending = { kind: 'update', attributes };
          }
        } finally {
          s.busy = false;
        }
      };
      const deleteOne = async (s: Tracked) => {
        s.busy = true;
        try {
          await client.deleteSession(s.id);
          report.acked.deletes++;
          Object.assign(s, { deleted: true, changedIn: cycle });
        } catch (err) {
          if (onError(`DeleteSession ${s.id}`, err)) {
            report.unknown.deletes++;
            s.pending = { kind: 'delete' };
          }
        } finally {
          s.busy = false;
        }
      };
      const worker = async () => {
        while (!killed) {
          const r = rnd();
          const target = r < 0.4 ? undefined : pick();
          if (!target) await createOne();
          else if (r < 0.85) await updateOne(target);
          else await deleteOne(target);
        }
      };

      const loops = Array.from({ length: workers }, () => worker());
      await sleep(minDelay + rnd() * (maxDelay - minDelay));
      killed = true;
      server.proc.kill('SIGKILL');
      const exit = await server.exited;
      if (exit !== 'SIGKILL') violate(`the server exited with ${exit} instead of being killed:\n${server.stderr().slice(-2000)}`);
      await Promise.all(loops);
      client.close();
      report.kills++;

      const integrity = integrityCheck(dbPath);
      if (integrity !== 'ok') violate(`integrity_check after the kill: ${integrity}`);

      server = await spawnServer(env(), [], 60_000, { entry });
      await verify(server.address);
      const elapsed = (Date.now() - started) / 1000;
      log(`cycle ${cycle}: ${report.kills} kills, ${tracked.size} sessions tracked, ${report.violations.length} violations, ${elapsed.toFixed(0)} s`);
      if (report.violations.length > 0) break;
      if (report.kills >= o.kills && elapsed >= (o.minSeconds ?? 0)) break;
    }
  } finally {
    if (server && server.proc.exitCode === null && server.proc.signalCode === null) {
      server.proc.kill('SIGTERM');
      const code = await server.exited;
      if (code !== 0) violate(`the last server did not shut down cleanly: ${code}`);
    }
  }
  report.sessionsTracked = tracked.size;
  if (integrityCheck(dbPath) !== 'ok') violate('integrity_check after the final shutdown');
  return report;

  /** After a restart: the server must show every acknowledged write; unknown outcomes are resolved and adopted. */
  async function verify(address: string): Promise<void> {
    const client = new SessiondClient(address, { defaultDeadlineMs: 30_000 });
    try {
      const listed = new Map<string, Session>();
      const subjects = new Map<string, number>();
      for await (const s of client.listAllSessions({ serverId: SERVER_ID, pageSize: 1000 })) {
        listed.set(s.id, s);
        subjects.set(s.subject, (subjects.get(s.subject) ?? 0) + 1);
      }
      for (const [subject, n] of subjects) if (n > 1) violate(`${n} sessions for subject ${subject}: a create was applied twice`);

      const detail: Tracked[] = [];
      for (const s of tracked.values()) {
        const seen = listed.get(s.id);
        const pending = s.pending;
        s.pending = undefined;
        if (pending) {
          // Either the call committed before the kill or it did not: both are fine, nothing else is.
          const before = !s.deleted && seen !== undefined && sameAttributes(seen.attributes, s.attributes);
          const after = pending.kind === 'delete' ? seen === undefined : seen !== undefined && sameAttributes(seen.attributes, pending.attributes);
          if (!before && !after) {
            violate(`session ${s.id} after an unknown ${pending.kind}: ${seen ? `attributes gen ${seen.attributes.gen}` : 'missing'}, expected gen ${s.attributes.gen}${pending.kind === 'update' ? ` or ${pending.attributes.gen}` : ' or deleted'}`);
            continue;
          }
          if (after && !before) {
            report.unknownCommitted++;
            if (pending.kind === 'delete') s.deleted = true;
            else s.attributes = pending.attributes;
          }
          if (seen) s.etag = seen.etag;
          s.changedIn = cycle;
          detail.push(s);
          continue;
        }
        if (s.deleted) {
          if (seen) violate(`session ${s.id} was deleted (acknowledged) but is listed again`);
        } else if (!seen) {
          violate(`session ${s.id} (acknowledged create of ${s.subject}, gen ${s.attributes.gen}) is missing`);
        } else {
          if (!sameAttributes(seen.attributes, s.attributes)) violate(`session ${s.id}: attributes gen ${seen.attributes.gen}, acknowledged gen ${s.attributes.gen}`);
          if (seen.etag !== s.etag) violate(`session ${s.id}: etag ${seen.etag}, acknowledged ${s.etag}`);
        }
        if (s.changedIn === cycle) detail.push(s);
      }

      // Unknown creates: found ones are adopted (their token never came back), the rest did not happen.
      const trackedSubjects = new Set([...tracked.values()].map((s) => s.subject));
      for (const s of listed.values()) {
        if (trackedSubjects.has(s.subject) || adopted.has(s.subject)) continue;
        const attempted = unknownCreates.get(s.subject);
        if (!attempted) violate(`session ${s.id} for subject ${s.subject} was never created by a call`);
        else if (!sameAttributes(s.attributes, attempted)) violate(`unacknowledged create of ${s.subject} stored other attributes`);
        else {
          adopted.add(s.subject);
          report.unknownCommitted++;
        }
      }
      unknownCreates.clear();

      // In detail, through the token and Get, every session this cycle touched plus a sample of the rest.
      const rest = [...tracked.values()].filter((s) => !detail.includes(s));
      for (let i = 0; i < 20 && rest.length > 0; i++) detail.push(rest.splice(Math.floor(rnd() * rest.length), 1)[0]!);
      await Promise.all(detail.map(async (s) => {
        const v = await client.validateSession(s.token);
        if (s.deleted) {
          if (v.valid || ![InvalidReason.INVALID_REASON_REVOKED, InvalidReason.INVALID_REASON_NOT_FOUND].includes(v.reason)) {
            violate(`deleted session ${s.id}: its token validates as ${v.valid ? 'valid' : InvalidReason[v.reason]}`);
          }
          const gone = await client.getSession(s.id).then(() => false, (e: ServiceError) => e.code === status.NOT_FOUND);
          if (!gone) violate(`deleted session ${s.id}: GetSession does not answer NOT_FOUND`);
          return;
        }
        if (!v.valid || v.session?.id !== s.id) {
          violate(`session ${s.id}: its token does not validate (${v.valid ? `names ${v.session?.id}` : InvalidReason[v.reason]})`);
          return;
        }
        const got = (await client.getSession(s.id)).session!;
        if (!sameAttributes(got.attributes, s.attributes) || got.etag !== s.etag || got.subject !== s.subject) {
          violate(`session ${s.id}: GetSession shows gen ${got.attributes.gen} etag ${got.etag}, expected gen ${s.attributes.gen} etag ${s.etag}`);
        }
      }));
    } catch (err) {
      violate(`verification failed: ${String(err)}`);
    } finally {
      client.close();
    }
  }
}
