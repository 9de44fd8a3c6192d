import { InvalidArgumentError, type Command } from 'commander';
import type { JsonValue } from '@bufbuild/protobuf';
import {
  DeleteSessionResponse, GetSessionResponse, ListSessionsResponse, RevokeSessionsResponse,
} from '../../generated/sessions/v1/session_service';
import { withGlobalOptions } from './connect';
import { keyValues, table } from './format';
import { toProtoJson } from './proto-json';
import { clientAction, UsageError } from './run';
import { SESSION_ID_PATTERN } from '../shared/ids';
import { addWatchCommand } from './watch-command';

/**
 * Session ids are base64url, so one in 64 starts with '-', which commander
 * would take for an unknown option. The commands that take an id accept
 * unknown options as their operand (allowUnknownOption); this refuses the
 * ones that are not an id, as commander would have.
 */
function sessionIdArgument(id: string | undefined): string | undefined {
  if (id !== undefined && id.startsWith('-') && !SESSION_ID_PATTERN.test(id)) throw new UsageError(`unknown option '${id}'`);
  return id;
}

/** A positive integer option value. */
export function parseCount(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1) throw new InvalidArgumentError('not a positive integer');
  return Number(text);
}

/** `sessiond sessions list|get|revoke|watch`: sessions.v1.SessionService. */
export function addSessionCommands(program: Command): void {
  const sessions = program.command('sessions').description('list, show and revoke sessions (sessions.v1.SessionService)');

  withGlobalOptions(sessions.command('list'))
    .description('list live sessions, oldest first, one page (or every page with --all)')
    .option('--subject <subject>', 'only this subject (user id)', '')
    .option('--server-id <id>', 'only sessions owned by this server', '')
    .option('--page-size <n>', 'sessions per page (server default 100, max 1000)', parseCount)
    .option('--page-token <token>', 'continue from this next_page_token', '')
    .option('--all', 'fetch every page')
    .action(
      clientAction<{ subject: string; serverId: string; pageSize?: number; pageToken: string; all?: boolean }>(async ({ client, options, print }) => {
        const filter = { subject: options.subject, serverId: options.serverId, pageSize: options.pageSize ?? 0 };
        let reply: ListSessionsResponse;
        if (options.all) {
          reply = { sessions: [], nextPageToken: '', sequence: 0 };
          for await (const s of client.listAllSessions(filter)) reply.sessions.push(s);
        } else {
          reply = await client.listSessions({ ...filter, pageToken: options.pageToken });
        }
        const json = () => toProtoJson('sessions.v1.ListSessionsResponse', ListSessionsResponse, reply);
        print(json, () => sessionTable((json() as { sessions: JsonValue[] }).sessions));
        if (!options.json && reply.nextPageToken) {
          // On stderr, so that the table on stdout stays rows only.
          process.stderr.write(`more sessions: add --page-token ${reply.nextPageToken} (or --all)\n`);
        }
      }),
    );

  withGlobalOptions(sessions.command('get'))
    .description('show one session by its id')
    .argument('<id>', 'the session id')
    .allowUnknownOption()
    .action(
      clientAction(async ({ client, print }, id) => {
        const r = await client.getSession(sessionIdArgument(id)!);
        const json = () => toProtoJson('sessions.v1.GetSessionResponse', GetSessionResponse, r);
        print(json, () => keyValues((json() as { session: JsonValue }).session));
      }),
    );

  addWatchCommand(sessions);

  withGlobalOptions(sessions.command('revoke'))
    .description('revoke one session by id, or every session of a --subject and/or a --server-id')
    .argument('[id]', 'the session id')
    .option('--subject <subject>', 'revoke every session of this subject', '')
    .option('--server-id <id>', 'revoke every session owned by this server', '')
    .option('--allow-missing', 'succeed when the session does not exist (single revoke)')
    .option('--except <id>', 'keep this one session when revoking in bulk ("log out my other devices")', '')
    .allowUnknownOption()
    .action(
      clientAction<{ subject: string; serverId: string; allowMissing?: boolean; except: string }>(async ({ client, options, print }, rawId) => {
        const id = sessionIdArgument(rawId);
        const bulk = options.subject !== '' || options.serverId !== '';
        if (id && bulk) throw new UsageError('give a session id or --subject/--server-id, not both');
        if (!id && !bulk) throw new UsageError('give a session id, or --subject and/or --server-id to revoke in bulk');
        if (id && options.except !== '') throw new UsageError('--except goes with --subject/--server-id (a bulk revoke), not with a session id');
        if (id) {
          const r = await client.deleteSession(id, options.allowMissing ?? false);
          print(() => toProtoJson('sessions.v1.DeleteSessionResponse', DeleteSessionResponse, r), () => `revoked session ${id}`);
          return;
        }
        const r = await client.revokeSessions({ subject: options.subject, serverId: options.serverId, exceptSessionId: options.except });
        print(
          () => toProtoJson('sessions.v1.RevokeSessionsResponse', RevokeSessionsResponse, r),
          () => `revoked ${r.revokedCount} session${r.revokedCount === 1 ? '' : 's'}`,
        );
      }),
    );
}

function sessionTable(sessions: JsonValue[]): string {
  if (sessions.length === 0) return '(no sessions)';
  const at = (v: JsonValue | undefined) => (typeof v === 'string' && v !== '' ? v.replace(/\.\d+Z$/, 'Z') : '-');
  const rows = sessions.map((j) => {
    const s = j as Record<string, JsonValue>;
    return [String(s['id']), String(s['serverId'] || '-'), String(s['subject'] || '-'), String(s['ip'] || '-'), at(s['createTime']), at(s['lastActiveTime']), at(s['idleExpireTime']), at(s['expireTime'])];
  });
  return table(['ID', 'SERVER ID', 'SUBJECT', 'IP', 'CREATED', 'LAST ACTIVE', 'IDLE EXPIRES', 'EXPIRES'], rows);
}
