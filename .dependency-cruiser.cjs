/**
 * Import rules for src/, checked by `make lint` (dependency-cruiser). The
 * layers: domain/ is the product's rules and knows nothing else; storage/
 * implements domain's contracts; transport/ is gRPC; server/ composes them
 * into the process; client/ and cli/ ship to users and must not drag the
 * server (or SQLite) into their installs; shared/ is what both sides need.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'domain-imports-only-domain',
      comment: 'domain/ holds the rules; it imports neither gRPC, nor a database, nor any other layer',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { pathNot: ['^src/domain/'], dependencyTypesNot: ['core'] },
    },
    {
      name: 'storage-imports-only-domain-and-shared',
      comment: 'storage/ implements domain contracts: it may use domain/, shared/ and its own folder only',
      severity: 'error',
      from: { path: '^src/storage/' },
      to: { path: '^(src|generated)/', pathNot: ['^src/(domain|storage|shared)/'] },
    },
    {
      name: 'storage-no-grpc',
      comment: 'storage/ knows no transport',
      severity: 'error',
      from: { path: '^src/storage/' },
      to: { path: 'node_modules/(@grpc|grpc-health-check)/' },
    },
    {
      name: 'transport-never-imports-storage',
      comment: 'transport/ talks to domain interfaces; the server wires a storage in',
      severity: 'error',
      from: { path: '^src/transport/' },
      to: { path: ['^src/storage/', 'node_modules/(better-sqlite3|postgres|pg)/'] },
    },
    {
      name: 'transport-uses-only-log-and-metrics-of-server',
      comment: 'transport/ takes its options as plain values, not the server configuration',
      severity: 'error',
      from: { path: '^src/transport/' },
      to: { path: '^src/server/', pathNot: ['^src/server/log\\.ts$', '^src/server/metrics/'] },
    },
    {
      name: 'client-and-cli-never-import-server-code',
      comment: 'client/ and cli/ ship to users: no server, transport or storage code, and no database driver',
      severity: 'error',
      from: { path: '^src/(client|cli)/' },
      to: { path: ['^src/(server|transport|storage)/', 'node_modules/(better-sqlite3|postgres|pg|pino|prom-client)/'] },
    },
    {
      name: 'shared-imports-only-shared',
      comment: 'shared/ is used by client and server alike, so it depends on neither',
      severity: 'error',
      from: { path: '^src/shared/' },
      to: { path: '^(src|generated)/', pathNot: ['^src/shared/'] },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
