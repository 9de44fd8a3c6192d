import type { Command } from 'commander';
import { HealthCheckResponse, HealthCheckResponse_ServingStatus } from '../../generated/grpc/health/v1/health';
import { withGlobalOptions } from './connect';
import { keyValues } from './format';
import { toProtoJson } from './proto-json';
import { clientAction, EXIT } from './run';

/** `sessiond health`: grpc.health.v1.Health/Check, usable as an exec probe. */
export function addHealthCommand(program: Command): void {
  withGlobalOptions(program.command('health'))
    .description('check health (grpc.health.v1): exit 0 only when SERVING, 1 otherwise, 2 when unreachable')
    .option('--service <name>', 'service to check: "" (the whole server), sessions.v1.SessionService, sessions.v1.AdminService, or liveness (SERVING while the process answers)', '')
    .action(
      clientAction<{ service: string }>(async ({ client, options, print }) => {
        const { status, metadata } = await client.health(options.service);
        print(
          () => toProtoJson('grpc.health.v1.HealthCheckResponse', HealthCheckResponse, { status }),
          () => {
            // The x-sessiond-* response metadata: journal mode, WAL size, why not serving.
            const details = Object.fromEntries(
              Object.entries(metadata.getMap())
                .filter(([k]) => k.startsWith('x-sessiond-'))
                .map(([k, v]) => [k.slice('x-sessiond-'.length).replace(/-(.)/g, (_, c: string) => c.toUpperCase()), String(v)]),
            );
            const name = HealthCheckResponse_ServingStatus[status] ?? String(status);
            return Object.keys(details).length > 0 ? `${name}\n${keyValues(details)}` : name;
          },
        );
        return status === HealthCheckResponse_ServingStatus.SERVING ? EXIT.ok : EXIT.failed;
      }),
    );
}
