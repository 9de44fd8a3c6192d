import { Server, type ServerOptions, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import {
  AdminServiceService, BackupRequest, CheckpointRequest, GetStorageStatusRequest, IntegrityCheckRequest, PurgeExpiredSessionsRequest,
} from '../../generated/sessions/v1/admin_service';
import {
  CreateSessionRequest, DeleteSessionRequest, GetSessionRequest, ListSessionsRequest, RevokeSessionsRequest,
  RotateSessionTokenRequest, SessionServiceService, TouchSessionRequest, UpdateSessionRequest, ValidateSessionRequest, WatchSessionEventsRequest,
} from '../../generated/sessions/v1/session_service';
import { callGate, MalformedRequest } from './call-gate';
import type { CallWatcher } from './call-observer';
import { ItemLimitExceeded, StrictValidateSessionStreamRequest } from './stream-request';

/*
 * Request bytes that do not decode are the caller's fault, so they get
 * INVALID_ARGUMENT. grpc-js answers a deserializer that throws with INTERNAL
 * ("Error deserializing request"), and ts-proto's decoders throw on truncated
 * or forged bytes and on int64 values beyond 2^53, and quietly turn invalid
 * UTF-8 into U+FFFD. Here every deserializer returns a MalformedRequest
 * instead of throwing, our own messages are decoded with a fatal UTF-8 decoder
 * (proto3 requires string fields to be valid UTF-8: a session must not be
 * stored under a subject the client never sent), and the call gate
 * (call-gate.ts) answers a MalformedRequest, before any handler runs, with INVALID_ARGUMENT.
 * The one refusal a handler answers itself is a ValidateSessionStream message
 * over the item limit (ItemLimitExceeded): that stream still answers the
 * messages before it.
 */

interface Decoder {
  decode(input: BinaryReader | Uint8Array): unknown;
  /** Walks the message's framing in place of the generic walk, and throws where it is broken. */
  checkFraming?(reader: BinaryReader): void;
}

/** Our request messages, decoded strictly; the other services' (health, reflection) only tolerantly. */
const STRICT_TYPES: ReadonlyMap<string, Decoder> = new Map<string, Decoder>([
  [SessionServiceService.createSession.path, CreateSessionRequest],
  [SessionServiceService.getSession.path, GetSessionRequest],
  [SessionServiceService.validateSession.path, ValidateSessionRequest],
  // Its batch items are checked for framing, and counted, too (see validate-stream.ts).
  [SessionServiceService.validateSessionStream.path, StrictValidateSessionStreamRequest],
  [SessionServiceService.touchSession.path, TouchSessionRequest],
  [SessionServiceService.updateSession.path, UpdateSessionRequest],
  [SessionServiceService.rotateSessionToken.path, RotateSessionTokenRequest],
  [SessionServiceService.deleteSession.path, DeleteSessionRequest],
  [SessionServiceService.listSessions.path, ListSessionsRequest],
  [SessionServiceService.revokeSessions.path, RevokeSessionsRequest],
  [SessionServiceService.watchSessionEvents.path, WatchSessionEventsRequest],
  [AdminServiceService.checkpoint.path, CheckpointRequest],
  [AdminServiceService.getStorageStatus.path, GetStorageStatusRequest],
  [AdminServiceService.purgeExpiredSessions.path, PurgeExpiredSessionsRequest],
  [AdminServiceService.backup.path, BackupRequest],
  [AdminServiceService.integrityCheck.path, IntegrityCheckRequest],
]);

/** The paths decoded strictly (a test checks that every RPC of ours is among them). */
export function strictlyDecodedPaths(): string[] {
  return [...STRICT_TYPES.keys()];
}

// ignoreBOM: a leading U+FEFF in a protobuf string is text, as @bufbuild/protobuf has it.
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class InvalidUtf8 extends Error {}

function decodeUtf8Fatally(bytes: Uint8Array): string {
  try {
    return fatalUtf8.decode(bytes);
  } catch {
    throw new InvalidUtf8('a string field is not valid UTF-8');
  }
}

/**
 * Decodes `bytes` as `type`, refusing what ts-proto would let through: a
 * top-level field number 0 or a stray end-group tag (ts-proto stops there and
 * returns the fields read so far), bytes left over, and invalid UTF-8.
 * The framing is walked first, so that the generated decoder runs only on
 * bytes that passed it.
 * @throws Error describing the first problem (an ItemLimitExceeded from
 * ValidateSessionStreamRequest's walk).
 */
export function decodeStrictly(type: Decoder, bytes: Uint8Array): unknown {
  // BinaryReader.tag() refuses field number 0 and wire types 6 and 7; skip()
  // refuses a length beyond the end and an end-group without its start.
  const framing = new BinaryReader(bytes);
  if (type.checkFraming) type.checkFraming(framing);
  else while (framing.pos < framing.len) framing.skip(framing.tag()[1]);
  const reader = new BinaryReader(bytes, decodeUtf8Fatally);
  const message = type.decode(reader);
  if (reader.pos !== reader.len) throw new Error('bytes left over after the message');
  return message;
}

function why(err: unknown): string {
  if (err instanceof InvalidUtf8) return err.message;
  // The decoders' own words ("premature EOF", "invalid wire type 7", "Value is
  // larger than Number.MAX_SAFE_INTEGER") describe the caller's bytes, nothing of ours.
  const text = err instanceof Error ? err.message : String(err);
  return `it does not decode (${text.slice(0, 120)})`;
}

/**
 * A copy of `definition` whose deserializers return a MalformedRequest instead
 * of throwing (or the ItemLimitExceeded, for the handler to answer).
 */
export function decodeSafely<D extends ServiceDefinition>(definition: D): D {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    const strict = STRICT_TYPES.get(method.path);
    const decode = strict ? (b: Buffer) => decodeStrictly(strict, b) : method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch (err) {
          if (err instanceof ItemLimitExceeded) return err;
          return new MalformedRequest(why(err));
        }
      },
    };
  }
  return out as D;
}

/**
 * A grpc-js Server on which no request bytes can end in INTERNAL: every
 * service added gets safe deserializers, and the call gate answers what they
 * refuse. The gate is the server's only interceptor, and reports every call to
 * `watcher` (metrics, slow calls) when one is given.
 */
export class SafeDecodingServer extends Server {
  constructor(options: Omit<ServerOptions, 'interceptors'> = {}, watcher?: CallWatcher) {
    super({ ...options, interceptors: [callGate(watcher)] });
  }

  override addService(service: ServiceDefinition, implementation: UntypedServiceImplementation): void {
    super.addService(decodeSafely(service), implementation);
  }
}
