import type { Duration } from '../../generated/google/protobuf/duration';
import { Session } from '../../generated/sessions/v1/session';
import { InvalidReason } from '../../generated/sessions/v1/session_service';
import { CheckpointMode } from '../../generated/sessions/v1/admin_service';
import { InvalidArgumentError } from '../domain/errors';
import { etagOf, type SessionRecord } from '../domain/session';
import type { InvalidReason as DomainInvalidReason } from '../domain/session-manager';
import type { CheckpointMode as DomainCheckpointMode } from '../domain/storage-admin';

/** proto <-> domain conversions; no rules live here. */

export function sessionToProto(s: SessionRecord): Session {
  return {
    id: s.id,
    serverId: s.serverId,
    subject: s.subject,
    attributes: { ...s.attributes },
    ip: s.ip,
    userAgent: s.userAgent,
    createTime: new Date(s.createTime),
    updateTime: new Date(s.updateTime),
    expireTime: new Date(s.expireTime),
    idleExpireTime: new Date(s.idleExpireTime),
    lastActiveTime: new Date(s.lastActiveTime),
    idleTimeout: msToDuration(s.idleTimeoutMs),
    tokenRotateTime: new Date(s.tokenRotateTime),
    etag: etagOf(s),
  };
}

/** google.protobuf.Duration allows +-10,000 years; anything beyond is a forged message. */
const MAX_DURATION_SECONDS = 315_576_000_000;

/**
 * Milliseconds, or undefined when the field is unset.
 * @throws InvalidArgumentError for a duration outside the protobuf range or with mixed signs.
 */
export function durationToMs(field: string, d: Duration | undefined): number | undefined {
  if (d === undefined) return undefined;
  const { seconds, nanos } = d;
  if (!Number.isFinite(seconds) || Math.abs(seconds) > MAX_DURATION_SECONDS || Math.abs(nanos) > 999_999_999) {
    throw new InvalidArgumentError(field, `${field} is outside the range of google.protobuf.Duration`);
  }
  if ((seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0)) {
    throw new InvalidArgumentError(field, `${field} has seconds and nanos of different signs`);
  }
  return seconds * 1000 + nanos / 1e6;
}

export function msToDuration(ms: number): Duration {
  const seconds = Math.trunc(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

const REASONS: Record<DomainInvalidReason, InvalidReason> = {
  'not-found': InvalidReason.INVALID_REASON_NOT_FOUND,
  expired: InvalidReason.INVALID_REASON_EXPIRED,
  'idle-timeout': InvalidReason.INVALID_REASON_IDLE_TIMEOUT,
  revoked: InvalidReason.INVALID_REASON_REVOKED,
};

export function reasonToProto(reason: DomainInvalidReason): InvalidReason {
  return REASONS[reason];
}

const MODES_TO_DOMAIN = new Map<number, DomainCheckpointMode>([
  [CheckpointMode.CHECKPOINT_MODE_UNSPECIFIED, 'PASSIVE'],
  [CheckpointMode.CHECKPOINT_MODE_PASSIVE, 'PASSIVE'],
  [CheckpointMode.CHECKPOINT_MODE_FULL, 'FULL'],
  [CheckpointMode.CHECKPOINT_MODE_RESTART, 'RESTART'],
  [CheckpointMode.CHECKPOINT_MODE_TRUNCATE, 'TRUNCATE'],
]);

/** @throws InvalidArgumentError for an enum number this server does not know. */
export function checkpointModeFromProto(mode: CheckpointMode): DomainCheckpointMode {
  const m = MODES_TO_DOMAIN.get(mode);
  if (!m) throw new InvalidArgumentError('mode', `mode ${mode} is not a checkpoint mode (PASSIVE, FULL, RESTART or TRUNCATE)`);
  return m;
}

export function checkpointModeToProto(mode: DomainCheckpointMode): CheckpointMode {
  return CheckpointMode[`CHECKPOINT_MODE_${mode}`];
}
