import { StorageUnavailableError } from '../../domain/errors';
import type { CheckpointResult, HealthFacts, PostgresStatus, StorageBackend, StorageHealth } from '../../domain/storage-admin';
import type { PostgresOptions } from '../options';
import { targetOf } from '../../shared/database-url';
import { migrate } from './migrations';
import { Pool } from './pool';
import { openEventLog } from './postgres-events';
import { PostgresRepository } from './postgres-repository';

export interface PostgresHooks {
  /** Called for each write refused because max-pending-writes were already in flight; must not throw. */
  onShed?(): void;
  log?: { info(message: string, fields?: Record<string, unknown>): void; warn(message: string, fields?: Record<string, unknown>): void };
}

/**
 * PostgreSQL storage: any number of replicas on one database, each with a
 * pool of its own. There is no WAL to administer from here: PostgreSQL runs
 * its own checkpoints.
 */
export class PostgresStorage implements StorageBackend {
  readonly backend = 'postgres';
  readonly wal = undefined;
  readonly files = undefined;
  readonly repository: PostgresRepository;
  readonly target: string;
  private closing: Promise<undefined> | undefined;
  private primary = true;

  private constructor(private readonly pool: Pool, private readonly options: PostgresOptions, durableSetting: string) {
    this.repository = new PostgresRepository(pool, durableSetting, options.sessionEvents);
    this.target = targetOf(options.url);
  }

  /**
   * Connects, checks the server, and migrates the schema (once among
   * replicas starting together).
   * @throws Error naming the target (never the password) and the problem.
   */
  static async open(options: PostgresOptions, hooks: PostgresHooks = {}): Promise<PostgresStorage> {
    const pool = new Pool(options, hooks.onShed);
    const target = targetOf(options.url);
    try {
      const [setting] = await pool.query<{ sc: string; standby: boolean }>(
        "SELECT current_setting('synchronous_commit') AS sc, pg_is_in_recovery() AS standby", [], 'read',
      );
      if (setting!.standby) throw new StorageUnavailableError('the server is a standby (read-only); list the primary in database-url, or several hosts with target_session_attrs=read-write');
      // Revocations and rotations must be durable before they are answered, whatever the server's default.
      const durableSetting = setting!.sc === 'off' ? "SET LOCAL synchronous_commit = 'on'" : '';
      if (setting!.sc === 'off' || setting!.sc === 'local') {
        hooks.log?.warn('PostgreSQL synchronous_commit is not on: a crash or a failover may lose acknowledged writes (revocations and rotations are made durable anyway)', { synchronousCommit: setting!.sc });
      }
      const migrated = await migrate(pool);
      if (migrated.from !== migrated.to) hooks.log?.info('PostgreSQL schema migrated', { ...migrated, target });
      await openEventLog(pool, options.sessionEvents);
      return new PostgresStorage(pool, options, durableSetting);
    } catch (err) {
      await pool.end().catch(() => {});
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(`cannot open PostgreSQL database ${target}: ${message}`, { cause: err });
    }
  }

  async status(): Promise<PostgresStatus> {
    const [row] = await this.pool.query<{ version: string; standby: boolean; table_bytes: number; index_bytes: number; open: number; schema: number }>(
      `SELECT current_setting('server_version') AS version, pg_is_in_recovery() AS standby,
         pg_table_size('sessions') + pg_table_size('session_events') AS table_bytes, pg_indexes_size('sessions') + pg_indexes_size('session_events') AS index_bytes,
         (SELECT count(*) FROM pg_stat_activity WHERE application_name = $1) AS open,
         (SELECT coalesce(max(version), 0) FROM sessiond_migrations) AS schema`,
      [this.pool.applicationName], 'read',
    );
    return {
      backend: 'postgres',
      target: this.target,
      serverVersion: row!.version,
      primary: !row!.standby,
      poolSize: this.options.poolSize,
      poolOpen: row!.open,
      // This status query is one of them.
      queriesInFlight: Math.max(0, this.pool.queriesInFlight - 1),
      tableBytes: row!.table_bytes,
      indexBytes: row!.index_bytes,
      schemaVersion: row!.schema,
    };
  }

  healthFacts(): HealthFacts {
    return { backend: 'postgres' };
  }

  async probe(): Promise<StorageHealth> {
    if (this.closing) return { ok: false, reason: 'database is closed' };
    try {
      // Its own connection, outside the pool: a probe must not queue behind a backlog of calls.
      const [row] = await this.pool.probe<{ standby: boolean; ro: string }>(
        "SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS ro", this.options.connectTimeoutMs,
      );
      const primary = !row!.standby && row!.ro !== 'on';
      if (!primary) {
        if (this.primary) void this.pool.reset();
        this.primary = false;
        return { ok: false, reason: `PostgreSQL at ${this.target} is read-only (a standby): writes cannot be served until a primary is reachable` };
      }
      this.primary = true;
      return { ok: true };
    } catch (err) {
      return { ok: false, reason: `PostgreSQL at ${this.target} is unreachable: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  close(): Promise<CheckpointResult | undefined> {
    this.closing ??= this.pool.end().then(() => undefined);
    return this.closing;
  }
}
