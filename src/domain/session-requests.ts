import type { SessionRecord, SessionState } from './session';

/* What SessionManager's methods take and answer. */

export interface UpdateSessionInput {
  id: string;
  attributes: Record<string, string>;
  merge: boolean;
  removeAttributes: string[];
  /** Empty: unconditional. */
  etag: string;
}

export interface ListSessionsInput {
  /** Empty: every server_id the caller may see. */
  serverId: string;
  subject: string;
  pageSize: number;
  pageToken: string;
}

export interface RevokeFilter {
  serverId: string;
  subject: string;
  /** A session to keep; empty or undefined: none. */
  exceptSessionId?: string;
}

export interface SessionLimits {
  /** Sessions revoked per write unit by revokeMatching. */
  readonly revokeBatchSize?: number;
  /** A list page stops before its sessions' encoded size reaches this (one session at least). */
  readonly maxPageBytes?: number;
}

export type InvalidReason = Exclude<SessionState, 'live'> | 'not-found';

export type ValidateResult =
  | { valid: true; session: SessionRecord }
  | { valid: false; reason: InvalidReason };

