import { AdminServiceService } from '../../generated/sessions/v1/admin_service';
import { SessionServiceService } from '../../generated/sessions/v1/session_service';
import type { Permission } from '../domain/principals';

/**
 * The permission each RPC needs: the one table, read before any handler runs
 * (see authorize.ts). An RPC missing here cannot be served: the adapter
 * refuses to build its handler, so a new RPC fails at start-up and in every
 * test, never quietly open.
 */
export const PERMISSION_OF: ReadonlyMap<string, Permission> = new Map<string, Permission>([
  [SessionServiceService.validateSession.path, 'sessions.validate'],
  [SessionServiceService.validateSessionStream.path, 'sessions.validate'],
  [SessionServiceService.getSession.path, 'sessions.read'],
  [SessionServiceService.listSessions.path, 'sessions.read'],
  [SessionServiceService.createSession.path, 'sessions.write'],
  [SessionServiceService.touchSession.path, 'sessions.write'],
  [SessionServiceService.updateSession.path, 'sessions.write'],
  [SessionServiceService.rotateSessionToken.path, 'sessions.write'],
  [SessionServiceService.deleteSession.path, 'sessions.write'],
  [SessionServiceService.revokeSessions.path, 'sessions.write'],
  [SessionServiceService.watchSessionEvents.path, 'sessions.events'],
  [AdminServiceService.checkpoint.path, 'admin'],
  [AdminServiceService.backup.path, 'admin'],
  [AdminServiceService.integrityCheck.path, 'admin'],
  [AdminServiceService.getStorageStatus.path, 'admin'],
  [AdminServiceService.purgeExpiredSessions.path, 'admin'],
]);
