/*
 * What each measured call sends, and how its answer is checked. Sessions come
 * from the pre-filled pools (bench/fill.ts): reads pick a live session at
 * random; touches walk the pool so that each one lands on a session not
 * touched since the fill (and writes) until the pool runs out; deletes revoke
 * sessions the CreateSession windows made, then the spare pool; rotations
 * replace the token of a live session at random.
 */
import {
  CreateSessionRequest, DeleteSessionRequest, GetSessionRequest, ListSessionsRequest, RotateSessionTokenRequest, UpdateSessionRequest, ValidateSessionRequest,
} from '../generated/sessions/v1/session_service';
import { idOf, SERVER_IDS, tokenOf } from './fill';
import type { Issue } from './load';
import type { OpName } from './options';
import { BARE_PING_PATH } from './bare-server';
import { stringAt, toBuffer, type Channels } from './rpc';

export const EMPTY_PATH = '/sessiond.bench.v1.Bench/Empty';
const SIZED_PATH = '/sessiond.bench.v1.Bench/Sized';
/** About the size of a ValidateSession answer for the bench's filled sessions. */
const VALIDATE_ANSWER_BYTES = Buffer.from('235');
const SVC = '/sessions.v1.SessionService';
/** Distinct users the created sessions belong to, spread over the SERVER_IDS servers. */
const CREATE_SUBJECTS = 25_000;
const EMPTY = Buffer.alloc(0);

export interface Workload {
  readonly name: OpName | 'Bare';
  readonly path: string;
  request(worker: number): Buffer;
  /** An error text when the answer is not what the bench expects. */
  check?(answer: Buffer, worker: number): string | undefined;
}

/** The sessions the bench can name, and what the run has done to them. */
export class Pools {
  /** Tokens of the live pool, by index. */
  readonly tokens: string[];
  readonly validate: Buffer[];
  readonly get: Buffer[];
  private touchNext = 0;
  /** Touches that landed on a session not touched before in this run (so the touch wrote). */
  touchWrites = 0;
  touchCalls = 0;
  private readonly created: string[] = [];
  private createdNext = 0;
  private spareNext = 0;
  /** Deletes that found neither a created nor a spare session left (sent with allow_missing for an unknown id). */
  deleteMisses = 0;

  constructor(readonly live: number, readonly spare: number) {
    this.tokens = Array.from({ length: live }, (_, i) => tokenOf('live', i));
    this.validate = this.tokens.map((token) => toBuffer(ValidateSessionRequest.encode({ token, touch: false }).finish()));
    this.get = Array.from({ length: live }, (_, i) => toBuffer(GetSessionRequest.encode({ id: idOf('live', i) }).finish()));
  }

  private creates: Buffer[] | undefined;

  /**
   * CreateSession requests, encoded once per run like the reads' requests:
   * encoding on each call would spend the load generator's CPU, which it
   * shares with the server.
   */
  createRequests(): readonly Buffer[] {
    this.creates ??= Array.from({ length: CREATE_SUBJECTS }, (_, i) => toBuffer(CreateSessionRequest.encode(CreateSessionRequest.fromPartial({
      serverId: `web-${i % SERVER_IDS}`,
      subject: `user-${i}`,
      attributes: { role: 'member', plan: 'free' },
      ip: '203.0.113.9',
      userAgent: 'Mozilla/5.0 (X11; Linux x86_64) sessiond-bench/1',
    })).finish()));
    return this.creates;
  }

  randomLive(): number {
    return Math.floor(Math.random() * this.live);
  }

  nextTouch(): string {
    const i = this.touchNext++ % this.live;
    this.touchCalls++;
    if (this.touchNext <= this.live) this.touchWrites++;
    return this.tokens[i]!;
  }

  addCreated(id: string): void {
    this.created.push(id);
  }

  /** The next session to delete: created ones first, then the spare pool. */
  nextDelete(): { id: string; allowMissing: boolean } {
    if (this.createdNext < this.created.length) return { id: this.created[this.createdNext++]!, allowMissing: false };
    if (this.spareNext < this.spare) return { id: idOf('spare', this.spareNext++), allowMissing: false };
    this.deleteMisses++;
    return { id: idOf('spare', this.spare + this.deleteMisses), allowMissing: true };
  }
}

const validAnswer = (a: Buffer) => (a[0] === 0x08 && a[1] === 0x01 ? undefined : 'ValidateSession answered valid=false for a live session');

export function workload(name: OpName | 'Bare', pools: Pools): Workload {
  switch (name) {
    case 'Bare':
      return { name, path: BARE_PING_PATH, request: () => EMPTY };
    case 'Empty':
      return { name, path: EMPTY_PATH, request: () => EMPTY };
    case 'Empty+answer':
      return { name, path: SIZED_PATH, request: () => VALIDATE_ANSWER_BYTES, check: (a) => (a.length === 235 ? undefined : `Sized answered ${a.length} bytes`) };
    case 'ValidateSession':
      return { name, path: `${SVC}/ValidateSession`, request: () => pools.validate[pools.randomLive()]!, check: validAnswer };
    case 'ValidateSession+touch':
      return {
        name,
        path: `${SVC}/ValidateSession`,
        request: () => toBuffer(ValidateSessionRequest.encode({ token: pools.nextTouch(), touch: true }).finish()),
        check: validAnswer,
      };
    case 'GetSession':
      return { name, path: `${SVC}/GetSession`, request: () => pools.get[pools.randomLive()]! };
    case 'CreateSession': {
      const requests = pools.createRequests();
      let n = 0;
      return {
        name,
        path: `${SVC}/CreateSession`,
        request: () => requests[n++ % CREATE_SUBJECTS]!,
        check: (answer) => {
          const id = stringAt(answer, [1, 1]);
          if (!id) return 'CreateSession answered without a session id';
          pools.addCreated(id);
          return undefined;
        },
      };
    }
    case 'ListSessions': {
      // Each worker pages through one server's sessions, following next_page_token.
      const tokens = new Map<number, string>();
      return {
        name,
        path: `${SVC}/ListSessions`,
        request: (worker) => toBuffer(ListSessionsRequest.encode({
          serverId: `web-${worker % SERVER_IDS}`, subject: '', pageSize: 100, pageToken: tokens.get(worker) ?? '',
        }).finish()),
        check: (answer, worker) => {
          tokens.set(worker, stringAt(answer, [2]) ?? '');
          return undefined;
        },
      };
    }
    case 'UpdateSession': {
      let n = 0;
      return {
        name,
        path: `${SVC}/UpdateSession`,
        request: () => toBuffer(UpdateSessionRequest.encode({
          id: idOf('live', pools.randomLive()), attributes: { seen: String(n++ % 100) }, merge: true, removeAttributes: [], etag: '',
        }).finish()),
      };
    }
    case 'DeleteSession':
      return { name, path: `${SVC}/DeleteSession`, request: () => toBuffer(DeleteSessionRequest.encode(pools.nextDelete()).finish()) };
    case 'RotateSessionToken':
      // A live session at random: each call writes (a new token hash), as a revocation does, and leaves the session live.
      return {
        name,
        path: `${SVC}/RotateSessionToken`,
        request: () => toBuffer(RotateSessionTokenRequest.encode({ id: idOf('live', pools.randomLive()) }).finish()),
        check: (answer) => (stringAt(answer, [2]) ? undefined : 'RotateSessionToken answered without a token'),
      };
  }
}

/** The load generator's view of a workload on some channels. */
export function issuer(w: Workload, channels: Channels): Issue {
  return (worker, done) => {
    channels.call(worker, w.path, w.request(worker), (error, answer) => done(error ?? w.check?.(answer!, worker)));
  };
}
