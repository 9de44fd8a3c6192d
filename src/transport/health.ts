import { Metadata, type Server, type ServerWritableStream, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { HealthFacts } from '../domain/storage-admin';

/** The names Check and Watch answer for; "" is the whole server. They follow the lifecycle and the storage probe. */
export const HEALTH_SERVICES = ['', 'sessions.v1.SessionService', 'sessions.v1.AdminService'] as const;

/**
 * For liveness probes: SERVING whenever the process can answer at all, whatever
 * the phase or the storage. A restart cures a wedged process (a Check that
 * times out), not a busy database, a large WAL or a full disk, which come back
 * the same after it. Unusable storage turns the names above NOT_SERVING, so
 * readiness takes the server out of rotation while liveness leaves it running
 * (a lock held elsewhere and a full database are not unusable: see probe()).
 */
export const LIVENESS_SERVICE = 'liveness';

type Phase = 'starting' | 'serving' | 'stopping';
type HealthCall = { sendMetadata(m: Metadata): void; request?: { service?: string } };
type ServingStatus = 'SERVING' | 'NOT_SERVING';

/**
 * Health state, kept apart from the service that reports it: a phase from the
 * lifecycle and a verdict from the storage probe. grpc-health-check serves
 * Check and Watch; we wrap its handlers only to add the storage metadata, and to
 * end open Watch streams at shutdown, which would otherwise hold the drain open.
 */
export class Health {
  private readonly impl = new HealthImplementation({
    ...Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING'])),
    [LIVENESS_SERVICE]: 'SERVING',
  });
  private readonly watches = new Set<ServerWritableStream<unknown, unknown>>();
  private phase: Phase = 'starting';
  private storageProblem: string | undefined;
  private workersProblem: string | undefined;
  private current: ServingStatus = 'NOT_SERVING';

  /** @param worker with --workers, this process's place (1..N): every Check names it, so that an operator sees which worker answered. */
  constructor(private readonly facts: () => HealthFacts, private readonly worker?: { slot: number }) {
    // Until the primary says all N serve: a worker alone is not the group that was asked for.
    if (worker) this.workersProblem = 'waiting for every worker to serve';
  }

  get status(): ServingStatus {
    return this.current;
  }

  /** Why the server is not serving, if it is not. */
  get reason(): string | undefined {
    if (this.phase !== 'serving') return this.phase;
    return this.storageProblem ?? this.workersProblem;
  }

  setPhase(phase: Phase): void {
    this.phase = phase;
    this.update();
  }

  setStorageProblem(problem: string | undefined): void {
    this.storageProblem = problem;
    this.update();
  }

  /** With --workers: why the group serves short (fewer than N workers serving), told by the primary. */
  setWorkersProblem(problem: string | undefined): void {
    this.workersProblem = problem;
    this.update();
  }

  /** Ends every Watch stream (after they have seen NOT_SERVING), so that draining can finish. */
  endWatches(): void {
    for (const call of this.watches) call.end();
    this.watches.clear();
  }

  addToServer(server: Server): void {
    const capture = {
      addService: (definition: ServiceDefinition, handlers: UntypedServiceImplementation) => {
        const check = handlers['check'] as (call: HealthCall, cb: unknown) => void;
        const watch = handlers['watch'] as (call: ServerWritableStream<unknown, unknown>) => void;
        server.addService(definition, {
          ...handlers,
          check: (call: HealthCall, callback: unknown) => {
            call.sendMetadata(this.metadata(call.request?.service));
            check(call, callback);
          },
          watch: (call: ServerWritableStream<unknown, unknown>) => {
            call.sendMetadata(this.metadata((call as unknown as HealthCall).request?.service));
            this.watches.add(call);
            call.on('cancelled', () => this.watches.delete(call));
            watch(call);
          },
        });
      },
    };
    this.impl.addToServer(capture as unknown as Server);
  }

  /** Response metadata on every Check: what an operator wants to see with `grpcurl -v`. */
  metadata(service?: string): Metadata {
    const facts = this.facts();
    const md = new Metadata();
    md.set('x-sessiond-storage-backend', facts.backend);
    if (facts.wal) {
      md.set('x-sessiond-journal-mode', facts.wal.journalMode);
      md.set('x-sessiond-wal-frames', String(facts.wal.walFrames));
      md.set('x-sessiond-wal-bytes', String(facts.wal.walBytes));
    }
    if (this.worker) {
      md.set('x-sessiond-worker', String(this.worker.slot));
      md.set('x-sessiond-worker-pid', String(process.pid));
    }
    const reason = this.reason;
    // The liveness name is SERVING all the same: a reason beside it would contradict the status.
    if (reason && service !== LIVENESS_SERVICE) md.set('x-sessiond-not-serving-reason', reason);
    return md;
  }

  private update(): void {
    const next: ServingStatus = this.reason === undefined ? 'SERVING' : 'NOT_SERVING';
    if (next === this.current) return;
    this.current = next;
    for (const s of HEALTH_SERVICES) this.impl.setStatus(s, next);
  }
}
