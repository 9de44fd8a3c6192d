import type { EventFeedOptions } from '../domain/event-feed';
import type { SessionPolicy } from '../domain/session';
import type { ServerTlsFiles } from '../shared/tls';
import type { PostgresOptions, StorageBackend, StorageOptions } from '../storage/options';
import type { WatchSettings } from '../transport/watch-events';
import type { LogLevel } from './log';

/** What the server runs with, as loadConfig (config.ts) composes it from the settings. */
export interface ServerOptions {
  /** host:port; port 0 picks a free one. */
  readonly listen: string;
  /** Where the principals are listed; undefined: none but the admin token's (protected mode when neither). */
  readonly principalsFile: string | undefined;
  readonly adminToken: string | undefined;
  /** With no principals: serve every caller, not only loopback ones. */
  readonly allowUnauthenticated: boolean;
  readonly maxMessageBytes: number;
  readonly maxConcurrentStreams: number;
  readonly maxConnectionMemoryBytes: number;
  /** 0: never. */
  readonly maxConnectionIdleMs: number;
  /** 0: never. */
  readonly maxConnectionAgeMs: number;
  readonly maxConnectionAgeGraceMs: number;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly reflection: boolean;
  /** Server TLS (mTLS when clientCaFile is set); undefined: plaintext. */
  readonly tls: ServerTlsFiles | undefined;
}

export interface Config {
  readonly server: ServerOptions;
  readonly backend: StorageBackend;
  /** SQLite's options; used only when backend is sqlite. */
  readonly storage: StorageOptions;
  /** Set exactly when backend is postgres. */
  readonly postgres: PostgresOptions | undefined;
  readonly policy: SessionPolicy;
  /** WatchSessionEvents and the outbox's retention (storage writes the events: storage.sessionEvents). */
  readonly events: Omit<EventFeedOptions, 'pageSize' | 'pruneBatchSize'> & WatchSettings;
  /** Server processes on the listen port (--workers, auto resolved); 1 serves from this process alone. */
  readonly workers: number;
  readonly sweepIntervalMs: number;
  readonly sweepBatchSize: number;
  readonly revokeBatchSize: number;
  /** ListSessions pages stop before their sessions reach this many bytes. */
  readonly maxPageBytes: number;
  readonly healthProbeIntervalMs: number;
  readonly logLevel: LogLevel;
  /** host:port of the Prometheus /metrics endpoint; undefined: off. */
  readonly metricsListen: string | undefined;
  /** Unary calls at least this slow are logged as warnings; 0: never. */
  readonly slowCallThresholdMs: number;
  /** Benchmark only: register the bench service (src/transport/bench-service.ts). */
  readonly benchService: boolean;
}
