import type { handleUnaryCall, MethodDefinition, ServerUnaryCall } from '@grpc/grpc-js';
import { requirePermission, type Permission, type Principal } from '../domain/principals';
import type { Logger } from '../server/log';
import type { Callers, IncomingCall } from './callers';
import { PERMISSION_OF } from './permissions';
import { unary } from './unary';

/** A method's path, as grpc-js service definitions carry it. */
type Method = Pick<MethodDefinition<unknown, unknown>, 'path'>;

/**
 * Every SessionService and AdminService handler is built here: the caller is
 * named (Callers) and its permission for the RPC checked (PERMISSION_OF)
 * before the handler runs, which then gets the caller to pass to the domain.
 * Health and reflection are added without it: they need no credentials.
 */
export class Authorizer {
  constructor(private readonly callers: Callers, private readonly log: Logger) {}

  /** A unary handler that runs only for a caller with the RPC's permission. */
  unary<Req, Res>(method: Method, handler: (request: Req, caller: Principal, call: ServerUnaryCall<Req, Res>) => Res | Promise<Res>): handleUnaryCall<Req, Res> {
    const permission = permissionOf(method);
    const name = nameOf(method);
    return unary<Req, Res>(name, this.log, (request, call) => handler(request, this.authorize(call, permission, name), call));
  }

  /**
   * The caller of a call to `method`, once its permission is checked.
   * @throws UnauthenticatedError, PermissionDeniedError
   */
  check(call: IncomingCall, method: Method): Principal {
    return this.authorize(call, permissionOf(method), nameOf(method));
  }

  private authorize(call: IncomingCall, permission: Permission, name: string): Principal {
    const caller = this.callers.identify(call);
    requirePermission(caller, permission, name);
    return caller;
  }
}

function permissionOf(method: Method): Permission {
  const permission = PERMISSION_OF.get(method.path);
  if (!permission) throw new Error(`${method.path} has no permission in transport/permissions.ts: it cannot be served`);
  return permission;
}

function nameOf(method: Method): string {
  return method.path.slice(method.path.lastIndexOf('/') + 1);
}
