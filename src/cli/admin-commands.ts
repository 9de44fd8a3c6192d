import { Option, type Command } from 'commander';
import {
  BackupResponse, CheckpointMode, CheckpointResponse, GetStorageStatusResponse, IntegrityCheckResponse, PurgeExpiredSessionsResponse,
} from '../../generated/sessions/v1/admin_service';
import { withGlobalOptions } from './connect';
import { keyValues } from './format';
import { toProtoJson } from './proto-json';
import { clientAction, EXIT } from './run';
import { parseCount } from './session-commands';

const MODES = ['passive', 'full', 'restart', 'truncate'] as const;

/** `sessiond admin checkpoint|status|purge|backup|check`: sessions.v1.AdminService. */
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

  withGlobalOptions(admin.command('backup'))
    .description("write an online backup into the server's --backup-dir; prints its path, size and SHA-256")
    .action(
      clientAction(async ({ client, print }) => {
        const r = await client.backup();
        const json = () => toProtoJson('sessions.v1.BackupResponse', BackupResponse, r);
        print(json, () => keyValues(json()));
      }),
    );

  withGlobalOptions(admin.command('check'))
    .description('run quick_check (integrity_check with --full) on the database; exits 1 when it finds problems')
    .option('--full', 'integrity_check: also checks every index against its table (slower)')
    .action(
      clientAction<{ full?: boolean }>(async ({ client, options, print }) => {
        const r = await client.integrityCheck({ full: options.full ?? false });
        print(
          () => toProtoJson('sessions.v1.IntegrityCheckResponse', IntegrityCheckResponse, r),
          () => (r.ok ? `${r.check}: ok` : `${r.check}: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}\n${r.problems.map((p) => `  ${p}`).join('\n')}`),
        );
        return r.ok ? EXIT.ok : EXIT.failed;
      }),
    );
}
