import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { waitForAsync } from './wait';
import { clusterFolder, runPg } from './postgres-processes';
import { clusterSpec, startPostgres, startServer, type PostgresCluster, type PostgresOptions } from './postgres';

export interface StandbyOptions extends Omit<PostgresOptions, 'name'> {
  /**
   * The primary's synchronous_commit. `on` waits until the standby has flushed
   * a commit's WAL: it survives the primary's loss, yet a read on the standby
   * right after may not see it until replayed. `remote_apply` (the default)
   * waits for the replay too, so that such a read does.
   */
  synchronousCommit?: 'on' | 'remote_apply';
}

export interface PrimaryWithStandby {
  primary: PostgresCluster;
  /** Streams from the primary as application_name "standby", which synchronous_standby_names names. */
  standby: PostgresCluster;
  /** Both hosts, primary first, for database sessiond: `…@127.0.0.1:p1,127.0.0.1:p2/sessiond?target_session_attrs=read-write`. */
  multiHostUrl: string;
}

const STANDBY = 'standby';

/**
 * A primary and a hot standby copied from it with `pg_basebackup -R`, streaming
 * synchronously: once the primary acknowledges a commit, the standby has it.
 * Resolves once pg_stat_replication shows the standby as sync.
 * @throws with pg_basebackup's output and the logs' tails when a step fails.
 */
export async function startPrimaryWithStandby(options: StandbyOptions = {}): Promise<PrimaryWithStandby> {
  const synchronousCommit = options.synchronousCommit ?? 'remote_apply';
  const primary = await startPostgres({ ...options, name: 'primary', settings: { ...options.settings, synchronous_commit: synchronousCommit } });
  let standby: PostgresCluster | undefined;
  try {
    const spec = clusterSpec(primary);
    const dir = clusterFolder(STANDBY);
    // -R writes this conninfo, password and application_name included, into the copy's postgresql.auto.conf.
    const conninfo = `host=127.0.0.1 port=${primary.port} user=replicator password=${spec.replicationPassword} application_name=${STANDBY}`;
    const copy = await runPg(spec.binDir, 'pg_basebackup', ['-D', join(dir, 'data'), '-R', '-X', 'stream', '-c', 'fast', '--no-sync', '-d', conninfo], dir, 120_000);
    if (copy.code !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`pg_basebackup from ${primary.name} failed (${copy.code}): ${copy.output}\n--- primary log (tail) ---\n${primary.logTail()}`);
    }
    standby = await startServer({ ...spec, name: STANDBY, dir }).catch((e: unknown) => {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    });
    const row = (sql: Parameters<Parameters<PostgresCluster['admin']>[0]>[0]) =>
      sql<{ state: string; sync_state: string }[]>`select state, sync_state from pg_stat_replication where application_name = ${STANDBY}`;
    await primary.admin(async (sql) => {
      await waitForAsync(async () => (await row(sql))[0]?.state === 'streaming', 'the standby to stream from the primary', 30_000, 50);
      // Named only now: before the standby streamed, every commit on the primary (the roles') would have waited for it.
      await sql.unsafe(`alter system set synchronous_standby_names = '"${STANDBY}"'`);
      await sql`select pg_reload_conf()`;
      await waitForAsync(async () => (await row(sql))[0]?.sync_state === 'sync', 'the standby to become synchronous', 30_000, 50);
    });
  } catch (e) {
    // Read before removing: the logs go with the folders.
    const logs = standby ? `\n--- primary log (tail) ---\n${primary.logTail()}\n--- standby log (tail) ---\n${standby.logTail()}` : '';
    await standby?.remove();
    await primary.remove();
    throw new Error(`${(e as Error).message}${logs}`, { cause: e });
  }
  const multiHostUrl = `postgres://sessiond:${primary.password}@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/sessiond?target_session_attrs=read-write`;
  return { primary, standby, multiHostUrl };
}
