import postgres, { type Sql, type TransactionSql } from 'postgres';
import { randomBytes } from 'node:crypto';
import { OverloadedError, StorageUnavailableError } from '../../domain/errors';
import type { PostgresOptions } from '../options';
import { isConnectionLost, toStorageError, type WritePhase } from './postgres-errors';

export type Row = Record<string, unknown>;

/** Margin past the server's own statement timeout before this side gives up on an answer. */
const ANSWER_MARGIN_MS = 1000;

/** The int8 type's OID: bigint columns are read as numbers (times in ms, counts and seqs stay below 2^53). */
const INT8 = 20;

/**
 * The connection pool of one replica, and the one way statements are sent:
 * each is prepared once per connection, counted while in flight, bounded in
 * time on this side too (a server that stopped answering never runs its own
 * statement_timeout), and its error mapped to a domain error.
 */
/**
 * The URL as the driver must read it. postgres 3.4 judges read-write by
 * default_transaction_read_only alone, which a PostgreSQL 14+ standby
 * reports as off, so it would settle on a standby listed first; what libpq
 * means by read-write, a server that is not in recovery, is the driver's
 * `primary`.
 */
export function driverUrl(url: string): string {
  return url.replace(/([?&]target_session_attrs=)read-write(?=&|#|$)/, '$1primary');
}

export class Pool {
  private sql: Sql;
  private inFlight = 0;
  private writesInFlight = 0;
  /** Names this replica's connections in pg_stat_activity, so that status can count them. */
  readonly applicationName = `sessiond-${process.pid}-${randomBytes(4).toString('hex')}`;
  private readonly answerTimeoutMs: number;
  private resetting: Promise<void> | undefined;
  private ended = false;

  constructor(private readonly options: PostgresOptions, private readonly onShed?: () => void) {
    this.answerTimeoutMs = options.connectTimeoutMs + options.statementTimeoutMs + ANSWER_MARGIN_MS;
    this.sql = this.connect();
  }

  get queriesInFlight(): number {
    return this.inFlight;
  }

  private connect(): Sql {
    return postgres(driverUrl(this.options.url), {
      max: this.options.poolSize,
      connect_timeout: Math.max(1, Math.ceil(this.options.connectTimeoutMs / 1000)),
      // Connections idle this long are closed, so that a replica gives back what a burst opened.
      idle_timeout: 60,
      prepare: true,
      // No array types are used: skip the catalog query on every new connection.
      fetch_types: false,
      onnotice: () => {},
      types: { bigint: { to: INT8, from: [INT8], serialize: (x: number) => String(x), parse: (x: string) => Number(x) } },
      connection: {
        application_name: this.applicationName,
        statement_timeout: this.options.statementTimeoutMs,
        // A transaction left open by a replica that stopped mid-way gives its row locks back.
        idle_in_transaction_session_timeout: this.options.statementTimeoutMs * 2,
      },
    } as postgres.Options<Record<string, postgres.PostgresType>>);
  }

  /** One statement outside a transaction. */
  query<T extends Row = Row>(text: string, params: readonly unknown[], phase: WritePhase): Promise<T[] & { count: number }> {
    return this.run(phase, () => this.sql.unsafe<T[]>(text, params as never[], { prepare: true }) as unknown as Promise<T[] & { count: number }>);
  }

  /**
   * A transaction. `body` runs its statements on `tx`; the outcome is unknown
   * only when the connection is lost after `body` has sent a write (it calls
   * `wrote()`), that is from its first changing statement to the COMMIT's answer.
   */
  transaction<T>(body: (tx: TransactionSql, wrote: () => void) => Promise<T>, timeoutMs = this.answerTimeoutMs): Promise<T> {
    let phase: WritePhase = 'read';
    // The driver keeps a transaction queued while it has no connection and runs it once one opens
    // (after a failover: on the promoted standby). A caller told "nothing was written" because no
    // answer came before its first write must stay right: such a transaction may no longer write.
    let abandoned = false;
    const refuseIfAbandoned = () => {
      if (abandoned) throw new StorageUnavailableError('the caller was already answered that nothing was written; rolled back');
    };
    return this.run('write', () => this.sql.begin((tx) => {
      refuseIfAbandoned();
      return body(tx, () => {
        refuseIfAbandoned();
        phase = 'write';
      }).catch((err: unknown) => {
        // postgres 3.4.9 answers a body that failed with a ROLLBACK on the same connection. When the
        // connection is gone (a failover), that ROLLBACK is written to a null socket from a setImmediate
        // and the TypeError ends the process (https://github.com/porsager/postgres/issues/1208). begin()
        // rejects by itself once its connection closes (CONNECTION_CLOSED), and this side's answer timer
        // bounds the wait anyway: a body that failed for that reason is left unsettled, so no ROLLBACK is sent.
        if (isConnectionLost(err)) return new Promise<never>(() => {});
        throw err;
      });
    }) as Promise<T>, () => phase, timeoutMs, () => {
      if (phase === 'read') abandoned = true;
    });
  }

  private async run<T>(
    phase: WritePhase, send: () => Promise<T>, phaseNow: () => WritePhase = () => phase, timeoutMs = this.answerTimeoutMs, onLate?: () => void,
  ): Promise<T> {
    if (this.ended) throw new StorageUnavailableError('storage is closing; nothing was written');
    if (phase === 'write' && this.writesInFlight >= this.options.maxPendingWrites) {
      this.onShed?.();
      throw new OverloadedError(`too many writes in flight (max-pending-writes ${this.options.maxPendingWrites}); nothing was written; retry with backoff`);
    }
    this.inFlight++;
    if (phase === 'write') this.writesInFlight++;
    try {
      return await within(send(), timeoutMs, () => {
        onLate?.();
        return noAnswer(phaseNow() === 'write' ? 'CONNECTION_CLOSED' : 'CONNECT_TIMEOUT');
      });
    } catch (err) {
      const mapped = toStorageError(err, phaseNow());
      // A connection to a standby stays one after a failover: open new ones, which
      // target_session_attrs=read-write sends to the new primary.
      if ((err as { code?: string }).code === '25006') void this.reset();
      throw mapped;
    } finally {
      this.inFlight--;
      if (phase === 'write') this.writesInFlight--;
    }
  }

  /** Replaces every connection: the old ones finish what they run, then close. */
  reset(): Promise<void> {
    this.resetting ??= (async () => {
      const old = this.sql;
      this.sql = this.connect();
      await old.end({ timeout: 5 }).catch(() => {});
    })().finally(() => {
      this.resetting = undefined;
    });
    return this.resetting;
  }

  /**
   * A statement for the health probe, on a connection of its own: it must
   * not queue behind calls. A new one each time, as target_session_attrs is
   * applied only at connect: a kept connection would stay on a demoted
   * primary, and health would never see the new one.
   */
  async probe<T extends Row>(text: string, timeoutMs: number): Promise<T[]> {
    const sql = postgres(driverUrl(this.options.url), {
      max: 1, connect_timeout: Math.max(1, Math.ceil(timeoutMs / 1000)), prepare: false, fetch_types: false, onnotice: () => {},
      connection: { application_name: `${this.applicationName}-probe`, statement_timeout: timeoutMs },
    });
    try {
      return await within(sql.unsafe<T[]>(text), timeoutMs + ANSWER_MARGIN_MS, () => noAnswer('CONNECT_TIMEOUT'));
    } catch (err) {
      throw toStorageError(err, 'read');
    } finally {
      void sql.end({ timeout: 1 }).catch(() => {});
    }
  }

  async end(): Promise<void> {
    this.ended = true;
    await this.resetting;
    await this.sql.end({ timeout: 5 });
  }
}

/** A missing answer, coded as the connection failure it is treated as (postgres-errors.ts). */
function noAnswer(code: 'CONNECTION_CLOSED' | 'CONNECT_TIMEOUT'): Error {
  return Object.assign(new Error('no answer'), { code });
}

/**
 * `answer`, or the rejection `late()` makes once `ms` pass first: a server
 * that stopped answering never runs its own statement_timeout. What `answer`
 * settles to after that is dropped.
 */
async function within<T>(answer: Promise<T>, ms: number, late: () => Error): Promise<T> {
  answer.catch(() => {});
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([answer, new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(late()), ms);
    })]);
  } finally {
    clearTimeout(timer);
  }
}
