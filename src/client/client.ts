import {
  connectivityState, credentials as grpcCredentials, Metadata, type CallOptions, type ChannelCredentials, type ChannelOptions,
  type Client, type ClientUnaryCall, type ServiceError,
} from '@grpc/grpc-js';
import { HealthCheckResponse_ServingStatus, HealthClient } from '../../generated/grpc/health/v1/health';
import {
  AdminServiceClient, CheckpointRequest, GetStorageStatusRequest, PurgeExpiredSessionsRequest, type CheckpointResponse, type GetStorageStatusResponse, type PurgeExpiredSessionsResponse, BackupRequest, type BackupResponse, IntegrityCheckRequest, type IntegrityCheckResponse,
} from '../../generated/sessions/v1/admin_service';
import {
  CreateSessionRequest, DeleteSessionRequest, GetSessionRequest, ListSessionsRequest, RevokeSessionsRequest,
  RotateSessionTokenRequest, SessionServiceClient, SessionServiceService, TouchSessionRequest, UpdateSessionRequest, ValidateSessionRequest,
  type CreateSessionResponse, type DeleteSessionResponse, type GetSessionResponse, type ListSessionsResponse,
  type RevokeSessionsResponse, type RotateSessionTokenResponse, type TouchSessionResponse, type UpdateSessionResponse,
  type ValidateSessionResponse,
} from '../../generated/sessions/v1/session_service';
import type { Session } from '../../generated/sessions/v1/session';
import { readTlsFiles } from '../shared/tls';
import { StreamValidator } from './stream-validator';
import { EventWatcher, type WatchOptions } from './event-watcher';
import { decodeStreamResponse, encodeStreamRequest } from './validator-wire';

export type { Session, ServiceError };
export { StreamValidator, type StreamAnswer, type ValidateOptions } from './stream-validator';
export { EventWatcher, type WatchOptions } from './event-watcher';
export { HealthCheckResponse_ServingStatus as ServingStatus };

/** Fields a request may leave out: proto3 defaults fill them in. */
type Partial1<T> = { [K in keyof T]?: T[K] };

export interface ClientOptions {
  /** Defaults to plaintext (insecure) credentials; see tlsCredentials() for TLS and mTLS. */
  credentials?: ChannelCredentials;
  /**
   * The caller's API key, sent as `authorization: Bearer <key>` on every call
   * (sessions, admin, the validation stream), unless a call's own metadata
   * carries an authorization header.
   */
  apiKey?: string | undefined;
  /** Sent as `authorization: Bearer <token>` on admin calls, in place of apiKey. */
  adminToken?: string | undefined;
  /** Deadline applied to every call that sets none, in ms. Default: none. */
  defaultDeadlineMs?: number;
  channelOptions?: ChannelOptions;
}

/** PEM files for a TLS connection; all optional. */
export interface TlsFiles {
  /** CA bundle that signed the server's certificate; default: the system's trusted roots. */
  caFile?: string | undefined;
  /** Client certificate chain, for a server that requires one (mTLS); needs keyFile. */
  certFile?: string | undefined;
  /** Unencrypted private key of certFile. */
  keyFile?: string | undefined;
}

/**
 * Channel credentials for a TLS server (mTLS with certFile and keyFile), from
 * PEM files read now. The server's certificate must name the host dialled
 * (a DNS or IP subject alternative name).
 * @throws Error listing every problem: a missing or unreadable file (with its
 *   path), a file that is not PEM, a key that does not match the certificate,
 *   or only one of certFile and keyFile.
 */
export function tlsCredentials(files: TlsFiles = {}): ChannelCredentials {
  const { material, problems } = readTlsFiles(files, { cert: 'client certificate', key: 'client key', ca: 'CA' });
  if (Boolean(files.certFile) !== Boolean(files.keyFile)) {
    problems.unshift('a client certificate and its key go together: give both (mTLS) or neither');
  }
  if (problems.length > 0) throw new Error(`cannot use the TLS files:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  return grpcCredentials.createSsl(material.ca ?? null, material.privateKey ?? null, material.certChain ?? null);
}

export interface PerCall {
  deadlineMs?: number;
  metadata?: Metadata;
  signal?: AbortSignal;
}

type Callback<Res> = (error: ServiceError | null, response: Res) => void;
type UnaryMethod<Req, Res> = (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: Callback<Res>) => ClientUnaryCall;

/**
 * A promise-based client for sessiond over the generated grpc-js clients,
 * whose overloaded callback methods are awkward to use from TypeScript.
 * Rejections are grpc-js ServiceErrors: branch on `err.code` (a grpc status).
 */
export class SessiondClient {
  private readonly sessions: SessionServiceClient;
  private readonly admin: AdminServiceClient;
  private readonly healthClient: HealthClient;

  constructor(address: string, private readonly options: ClientOptions = {}) {
    const creds = options.credentials ?? grpcCredentials.createInsecure();
    this.sessions = new SessionServiceClient(address, creds, options.channelOptions);
    // One channel for all three: grpc-js shares subchannels per target and options.
    this.admin = new AdminServiceClient(address, creds, options.channelOptions);
    this.healthClient = new HealthClient(address, creds, options.channelOptions);
  }

  createSession(req: Partial1<CreateSessionRequest>, c?: PerCall): Promise<CreateSessionResponse> {
    return this.call(this.sessions, this.sessions.createSession, CreateSessionRequest.fromPartial(req), c);
  }
  getSession(id: string, c?: PerCall): Promise<GetSessionResponse> {
    return this.call(this.sessions, this.sessions.getSession, GetSessionRequest.fromPartial({ id }), c);
  }
  validateSession(token: string, touch = false, c?: PerCall): Promise<ValidateSessionResponse> {
    return this.call(this.sessions, this.sessions.validateSession, ValidateSessionRequest.fromPartial({ token, touch }), c);
  }
  /**
   * Opens one ValidateSessionStream and returns a validator that multiplexes
   * many validations over it: for gateways that validate at high rates.
   */
  openValidator(): StreamValidator {
    // The generated client's codec would do; this one is the same messages at a
    // fraction of the CPU (src/client/validator-wire.ts).
    const stream = this.sessions.makeBidiStreamRequest(
      SessionServiceService.validateSessionStream.path, encodeStreamRequest, decodeStreamResponse, this.metadataOf(undefined),
    );
    return new StreamValidator(stream);
  }
  touchSession(id: string, c?: PerCall): Promise<TouchSessionResponse> {
    return this.call(this.sessions, this.sessions.touchSession, TouchSessionRequest.fromPartial({ id }), c);
  }
  updateSession(req: Partial1<UpdateSessionRequest>, c?: PerCall): Promise<UpdateSessionResponse> {
    return this.call(this.sessions, this.sessions.updateSession, UpdateSessionRequest.fromPartial(req), c);
  }
  rotateSessionToken(id: string, c?: PerCall): Promise<RotateSessionTokenResponse> {
    return this.call(this.sessions, this.sessions.rotateSessionToken, RotateSessionTokenRequest.fromPartial({ id }), c);
  }
  deleteSession(id: string, allowMissing = false, c?: PerCall): Promise<DeleteSessionResponse> {
    return this.call(this.sessions, this.sessions.deleteSession, DeleteSessionRequest.fromPartial({ id, allowMissing }), c);
  }
  listSessions(req: Partial1<ListSessionsRequest>, c?: PerCall): Promise<ListSessionsResponse> {
    return this.call(this.sessions, this.sessions.listSessions, ListSessionsRequest.fromPartial(req), c);
  }
  /** Every page of ListSessions, fetched one after the other. */
  async *listAllSessions(req: Partial1<Omit<ListSessionsRequest, 'pageToken'>>, c?: PerCall): AsyncGenerator<Session> {
    let pageToken = '';
    do {
      const page = await this.listSessions({ ...req, pageToken }, c);
      yield* page.sessions;
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
  }
  revokeSessions(req: Partial1<RevokeSessionsRequest>, c?: PerCall): Promise<RevokeSessionsResponse> {
    return this.call(this.sessions, this.sessions.revokeSessions, RevokeSessionsRequest.fromPartial(req), c);
  }
  /**
   * WatchSessionEvents, resumed by itself after a disconnect from the last
   * sequence it delivered: `for await (const e of client.watch({ subject }))`.
   * Ends with the error for a status that a resume cannot cure (OUT_OF_RANGE:
   * list again, then watch after that answer's sequence).
   */
  watch(options: WatchOptions = {}): EventWatcher {
    return new EventWatcher((req, md) => this.sessions.watchSessionEvents(req, md), () => this.metadataOf(undefined), options);
  }

  checkpoint(req: Partial1<CheckpointRequest> = {}, c?: PerCall): Promise<CheckpointResponse> {
    return this.call(this.admin, this.admin.checkpoint, CheckpointRequest.fromPartial(req), this.withAdmin(c));
  }
  getStorageStatus(c?: PerCall): Promise<GetStorageStatusResponse> {
    return this.call(this.admin, this.admin.getStorageStatus, GetStorageStatusRequest.fromPartial({}), this.withAdmin(c));
  }
  purgeExpiredSessions(req: Partial1<PurgeExpiredSessionsRequest> = {}, c?: PerCall): Promise<PurgeExpiredSessionsResponse> {
    return this.call(this.admin, this.admin.purgeExpiredSessions, PurgeExpiredSessionsRequest.fromPartial(req), this.withAdmin(c));
  }

  backup(c?: PerCall): Promise<BackupResponse> {
    return this.call(this.admin, this.admin.backup, BackupRequest.fromPartial({}), this.withAdmin(c));
  }

  integrityCheck(req: Partial1<IntegrityCheckRequest> = {}, c?: PerCall): Promise<IntegrityCheckResponse> {
    return this.call(this.admin, this.admin.integrityCheck, IntegrityCheckRequest.fromPartial(req), this.withAdmin(c));
  }

  /** grpc.health.v1 Check, with the response metadata (journal mode, WAL frames). */
  health(service = '', c?: PerCall): Promise<{ status: HealthCheckResponse_ServingStatus; metadata: Metadata }> {
    return new Promise((resolve, reject) => {
      let metadata = new Metadata();
      const call = this.healthClient.check({ service }, this.metadataOf(c), this.callOptions(c), (err, res) =>
        err ? reject(err) : resolve({ status: res.status, metadata }),
      );
      call.on('metadata', (md) => (metadata = md));
      this.abortWith(call, c);
    });
  }

  /** Closes the channels; in-flight calls are cancelled. */
  /**
   * Whether a connection to the server is up now. After a call failed with
   * UNAVAILABLE or DEADLINE_EXCEEDED, false means the server was not reached
   * (refused, unresolvable, TLS handshake failed, too slow to connect) rather
   * than that it answered with that status.
   */
  connected(): boolean {
    return [this.sessions, this.admin, this.healthClient].some((c) => c.getChannel().getConnectivityState(false) === connectivityState.READY);
  }

  close(): void {
    this.sessions.close();
    this.admin.close();
    this.healthClient.close();
  }

  private withAdmin(c: PerCall | undefined): PerCall {
    if (!this.options.adminToken || c?.metadata?.get('authorization').length) return c ?? {};
    const metadata = c?.metadata?.clone() ?? new Metadata();
    metadata.set('authorization', `Bearer ${this.options.adminToken}`);
    return { ...c, metadata };
  }

  /** A call's metadata: its own, with the API key added unless it carries an authorization header. */
  private metadataOf(c: PerCall | undefined): Metadata {
    const own = c?.metadata;
    if (!this.options.apiKey || own?.get('authorization').length) return own ?? new Metadata();
    const metadata = own?.clone() ?? new Metadata();
    metadata.set('authorization', `Bearer ${this.options.apiKey}`);
    return metadata;
  }

  private callOptions(c: PerCall | undefined): Partial<CallOptions> {
    const ms = c?.deadlineMs ?? this.options.defaultDeadlineMs;
    return ms === undefined ? {} : { deadline: Date.now() + ms };
  }

  private abortWith(call: ClientUnaryCall, c: PerCall | undefined): void {
    if (!c?.signal) return;
    if (c.signal.aborted) call.cancel();
    else c.signal.addEventListener('abort', () => call.cancel(), { once: true });
  }

  private call<Req, Res>(client: Client, method: unknown, req: Req, c: PerCall | undefined): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      const fn = (method as UnaryMethod<Req, Res>).bind(client);
      const call = fn(req, this.metadataOf(c), this.callOptions(c), (err, res) => (err ? reject(err) : resolve(res)));
      this.abortWith(call, c);
    });
  }
}
