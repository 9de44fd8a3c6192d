import { Option, type Command } from 'commander';
import {
  CheckpointMode, CheckpointResponse, GetStorageStatusResponse, PurgeExpiredSessionsResponse,
} from '../../generated/sessions/v1/admin_service';
import { withGlobalOptions } from './connect';
import { keyValues } from './format';
import { toProtoJson } from './proto-json';
import { clientAction } from './run';
import { parseCount } from './session-commands';

const MODES = ['passive', 'full', 'restart', 'truncate'] as const;

/** `sessiond admin checkpoint|status|purge`: sessions.v1.AdminService. */
export function addAdminCommands(program: Command): void {
  const admin = program
    .command('admin')
    .description('operator calls (sessions.v1.AdminService): they need a principal with the admin permission (--api-key or --admin-token), or a loopback connection to a server without principals');

  withGlobalOptions(admin.command('checkpoint'))
    .description('run a WAL checkpoint; "busy: yes" means readers or writers kept it from completing')
    .addOption(new Option('--mode <mode>', 'SQLite checkpoint mode').choices(MODES).default('passive'))
    .action(
      clientAction<{ mode: (typeof MODES)[number] }>(async ({ client, options, print }) => {
        const mode = CheckpointMode[`CHECKPOINT_MODE_${options.mode.toUpperCase() as Uppercase<(typeof MODES)[number]>}`];
        const r = await client.checkpoint({ mode });
        const json = () => toProtoJson('sessions.v1.CheckpointResponse', CheckpointResponse, r);
        print(json, () => keyValues(json()));
      }),
    );

  withGlobalOptions(admin.command('status'))
    .description('storage settings as in force, WAL and file sizes, session counts, the last checkpoint')
    .action(
      clientAction(async ({ client, print }) => {
        const r = await client.getStorageStatus();
        const json = () => toProtoJson('sessions.v1.GetStorageStatusResponse', GetStorageStatusResponse, r);
        print(json, () => keyValues(json()));
      }),
    );

  withGlobalOptions(admin.command('purge'))
    .description('delete expired and revoked sessions now, in batches')
    .option('--batch-size <n>', "rows per transaction (default: the server's sweep batch size)", parseCount)
    .action(
      clientAction<{ batchSize?: number }>(async ({ client, options, print }) => {
        const r = await client.purgeExpiredSessions({ batchSize: options.batchSize ?? 0 });
        print(
          () => toProtoJson('sessions.v1.PurgeExpiredSessionsResponse', PurgeExpiredSessionsResponse, r),
          () => `purged ${r.purgedCount} session${r.purgedCount === 1 ? '' : 's'} in ${r.batches} batch${r.batches === 1 ? '' : 'es'}`,
        );
      }),
    );
}
