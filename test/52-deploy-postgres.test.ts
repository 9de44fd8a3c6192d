import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CLIENT_VARIABLES, envName, loadConfig, SETTINGS } from '../src/server/config';
import { databaseUrlProblem } from '../src/shared/database-url';
import { HEALTH_SERVICES, LIVENESS_SERVICE } from '../src/transport/health';
import { ROOT, K8S, POSTGRES, Doc, manifests, kustomization, namedVariables, one, principalsVolume, realPrincipals, selects, urlHosts, workloadOf } from './helpers/deploy';
import { requireTool, tool } from './helpers/tools';

/*
 * deploy/kubernetes/postgres/, the PostgreSQL deployment, checked as
 * test/52-deploy.test.ts checks the SQLite one (no cluster here): it parses,
 * names only real settings and agrees with the code and with the SQLite
 * deployment where they must be the same (probes, grace period, user, the
 * principals, the shared Service and NetworkPolicy); and it runs several
 * stateless replicas that a drain or a node loss cannot all take.
 */

const pg = () => workloadOf(POSTGRES);
const sqlite = () => workloadOf(K8S);

let scratch: string;
test.before(() => {
  mkdirSync(join(ROOT, '.test-output'), { recursive: true });
  scratch = mkdtempSync(join(ROOT, '.test-output', 'deploy-pg-'));
});
test.after.always(() => scratch && rmSync(scratch, { recursive: true, force: true }));

/** The Secret key the pod's SESSIOND_DATABASE_URL comes from, and the example value the Secret holds there. */
function databaseUrl(): { ref: Doc; value: string } {
  const env = (pg().container.env ?? []).find((e: Doc) => e.name === 'SESSIOND_DATABASE_URL');
  const ref = env?.valueFrom?.secretKeyRef;
  if (!ref) throw new Error('SESSIOND_DATABASE_URL is not from a secretKeyRef');
  const secret = one('Secret', ref.name, POSTGRES);
  return { ref, value: secret.stringData?.[ref.key] ?? Buffer.from(secret.data?.[ref.key] ?? '', 'base64').toString() };
}

/** The pod's configuration: the ConfigMap, the URL from its Secret, the example principals made real at a path of this machine. */
function podEnv(): Record<string, string> {
  return { ...pg().config, SESSIOND_DATABASE_URL: databaseUrl().value, SESSIOND_PRINCIPALS_FILE: realPrincipals(mkdtempSync(join(scratch, 'p-'))).file };
}

test('every manifest parses, the kustomization lists each file, and it is a Deployment with the shared Service, NetworkPolicy and principals', (t) => {
  const docs = manifests(POSTGRES);
  t.deepEqual([...new Set(docs.map((d) => d.doc.kind))].sort(), ['ConfigMap', 'Deployment', 'Kustomization', 'NetworkPolicy', 'PodDisruptionBudget', 'Secret', 'Service']);
  const files = readdirSync(POSTGRES).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort();
  t.deepEqual(kustomization(POSTGRES).resources.filter((r: string) => /\.ya?ml$/.test(r)).sort(), files);
  // The objects both deployments need are the same files, not copies that drift apart.
  for (const [kind, name] of [['Service', 'sessiond'], ['NetworkPolicy', 'sessiond'], ['Secret', 'sessiond-principals']] as const) {
    const where = (dir: string) => manifests(dir).filter(({ doc }) => doc.kind === kind && doc.metadata.name === name).map((m) => m.file);
    t.deepEqual(where(POSTGRES), where(K8S), `${kind} ${name}`);
    t.true(where(POSTGRES)[0]!.startsWith('common/'));
  }
  t.false(docs.some(({ doc }) => doc.spec?.clusterIP === 'None'), 'no headless Service: no pod needs a stable name');
  // The same image, under the same name.
  t.deepEqual(kustomization(POSTGRES).images, kustomization(K8S).images);
});

test('three replicas with no volume of their own: the root filesystem read-only, /tmp and the principals as in the StatefulSet', (t) => {
  const { workload, pod, container } = pg();
  t.is(workload.spec.replicas, 3);
  t.deepEqual(workload.spec.selector.matchLabels, workload.spec.template.metadata.labels);
  t.is(workload.spec.volumeClaimTemplates, undefined);
  for (const v of pod.volumes) t.true(v.emptyDir !== undefined || v.secret !== undefined, `${v.name}: no persistent volume`);
  t.false(Object.keys(pg().config).includes('SESSIOND_DB_PATH'));
  t.true(container.securityContext.readOnlyRootFilesystem);
  const s = sqlite();
  const mountOf = (c: Doc, name: string) => c.volumeMounts.find((m: Doc) => m.name === name);
  const volumeOf = (p: Doc, name: string) => p.volumes.find((v: Doc) => v.name === name);
  t.deepEqual(mountOf(container, 'tmp'), mountOf(s.container, 'tmp'));
  t.deepEqual(volumeOf(pod, 'tmp'), { name: 'tmp', emptyDir: {} });
  const principals = principalsVolume();
  t.deepEqual(mountOf(container, principals.mount.name), principals.mount, 'the principals folder, mounted as the StatefulSet mounts it (no subPath)');
  t.deepEqual(volumeOf(pod, principals.volume.name), principals.volume);
  t.is(pg().config['SESSIOND_PRINCIPALS_FILE'], s.config['SESSIOND_PRINCIPALS_FILE']);
});

test('a rolling update starts a new pod before it stops an old one', (t) => {
  const { strategy } = pg().workload.spec;
  t.is(strategy.type, 'RollingUpdate');
  t.is(strategy.rollingUpdate.maxUnavailable, 0);
  t.is(strategy.rollingUpdate.maxSurge, 1);
});

test('the PodDisruptionBudget selects the Deployment\'s pods and lets a drain take one of them at a time', (t) => {
  const pdb = one('PodDisruptionBudget', undefined, POSTGRES);
  const { workload } = pg();
  const labels = workload.spec.template.metadata.labels;
  t.true(selects(pdb.spec.selector, labels), 'it selects the pods');
  t.deepEqual(pdb.spec.selector, workload.spec.selector, 'and exactly the Deployment\'s');
  // One of the two forms, never both (the API refuses both).
  t.true((pdb.spec.maxUnavailable === undefined) !== (pdb.spec.minAvailable === undefined));
  const replicas: number = workload.spec.replicas;
  const mayGo = pdb.spec.maxUnavailable ?? replicas - pdb.spec.minAvailable;
  t.is(mayGo, 1, 'a drain may evict one pod, and only one');
  t.true(replicas - mayGo >= 2, 'two keep serving');
  t.regex(readFileSync(join(POSTGRES, 'poddisruptionbudget.yaml'), 'utf8'), /rather than minAvailable/, 'and the manifest says why this form');
  // While the database is down every pod is unready; a drain must still be able to evict them.
  t.is(pdb.spec.unhealthyPodEvictionPolicy, 'AlwaysAllow');
});

test('the pods spread over nodes and zones', (t) => {
  const { pod, workload } = pg();
  const labels = workload.spec.template.metadata.labels;
  const constraints: Doc[] = pod.topologySpreadConstraints ?? [];
  const byKey = new Map(constraints.map((c) => [c.topologyKey, c]));
  t.deepEqual([...byKey.keys()].sort(), ['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
  for (const c of constraints) {
    t.true(selects(c.labelSelector, labels), `${c.topologyKey}: counts sessiond's pods`);
    t.is(c.maxSkew, 1, c.topologyKey);
    t.true(['DoNotSchedule', 'ScheduleAnyway'].includes(c.whenUnsatisfiable));
  }
  // One pod per node where there are nodes enough: a node loss takes one replica.
  t.is(byKey.get('kubernetes.io/hostname').whenUnsatisfiable, 'DoNotSchedule');
});

test('the probes are the StatefulSet\'s: the health names the code has, on the listen port', (t) => {
  const { container } = pg();
  const port = Number(loadConfig([], podEnv()).config.server.listen.split(':').at(-1));
  t.deepEqual(container.ports, sqlite().container.ports);
  t.is(container.ports[0].containerPort, port);
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    t.deepEqual(container[probe], sqlite().container[probe], probe);
    t.is(container[probe].grpc.port, port, `${probe} port`);
  }
  t.true((HEALTH_SERVICES as readonly string[]).includes(container.readinessProbe.grpc.service), 'readiness asks a name that goes NOT_SERVING with the database');
  t.is(container.readinessProbe.grpc.service, '');
  t.is(container.livenessProbe.grpc.service, LIVENESS_SERVICE, 'liveness asks the name that does not depend on the database');
  t.is(container.startupProbe.grpc.service, LIVENESS_SERVICE);
  const service = one('Service', 'sessiond', POSTGRES);
  t.true(selects({ matchLabels: service.spec.selector }, pg().workload.spec.template.metadata.labels), 'the Service selects the pods');
  t.true([container.ports[0].name, port].includes(service.spec.ports[0].targetPort));
  t.true(selects(one('NetworkPolicy', undefined, POSTGRES).spec.podSelector, pg().workload.spec.template.metadata.labels), 'the NetworkPolicy selects the pods');
});

test('the database URL comes from a key of the Secret, names a read-write target, and is never in the ConfigMap', (t) => {
  const { config, container } = pg();
  t.is(config['SESSIOND_STORAGE'], 'postgres');
  t.false('SESSIOND_DATABASE_URL' in config, 'a ConfigMap is not for passwords');
  t.false(container.envFrom.some((e: Doc) => e.secretRef), 'only the URL comes from a Secret, by name');
  const { ref, value } = databaseUrl();
  const secret = one('Secret', ref.name, POSTGRES);
  t.true(ref.key in (secret.stringData ?? secret.data), `the Secret ${ref.name} has the key ${ref.key}`);
  t.is(ref.optional, undefined, 'a pod without it does not start');
  t.is(databaseUrlProblem(value), undefined, 'the example is a URL sessiond accepts');
  t.is(new URLSearchParams(value.split('?')[1]).get('target_session_attrs'), 'read-write');
  t.true(urlHosts(value).every((h) => /^[a-z0-9.-]+-rw(\.[a-z0-9.-]+)?:5432$/.test(h)), `${urlHosts(value).join(',')}: the operator's read-write Service`);
  t.regex(value, /REPLACE/, 'a placeholder password, not a published one');
  const text = readFileSync(join(POSTGRES, 'database-secret.yaml'), 'utf8');
  // The form for listing hosts (Patroni) is shown too, and is a URL sessiond accepts.
  const multi = /postgresql:\/\/\S+,\S+target_session_attrs=read-write/.exec(text)?.[0];
  t.truthy(multi, 'the Secret shows a URL listing several hosts');
  t.true(urlHosts(multi!).length >= 2);
  t.is(databaseUrlProblem(multi!), undefined);
});

test('every SESSIOND_ variable is a setting, none is SQLite\'s, and the pod\'s environment is a valid postgres configuration', (t) => {
  const known = new Set<string>([...SETTINGS.map((s) => envName(s.flag)), ...CLIENT_VARIABLES]);
  const given = [...Object.keys(pg().config), ...(pg().container.env ?? []).map((e: Doc) => e.name as string)];
  const named = new Set([...given, ...namedVariables(POSTGRES)]);
  t.true(named.size >= 5);
  for (const name of named) t.true(known.has(name), `${name} is not a setting in src/server/settings.ts`);
  const server = new Map(SETTINGS.map((s) => [envName(s.flag), s] as const));
  for (const name of given) {
    t.true(server.has(name), `the pod is given ${name}, which is not a server setting`);
    t.not(server.get(name)?.group, 'Storage (SQLite)', `${name} is a SQLite setting`);
  }
  const { config } = loadConfig([], podEnv());
  t.is(config.backend, 'postgres');
  t.is(config.postgres?.url, databaseUrl().value);
  t.is(config.server.listen, '0.0.0.0:50051');
  t.false(config.server.allowUnauthenticated);
  t.true(config.server.maxConnectionAgeMs > 0, 'clients reconnect now and then, so load reaches new replicas');
});

test('the grace period and the pod\'s user are the StatefulSet\'s, and the grace period covers the drain and the last queries', (t) => {
  const { pod, container } = pg();
  t.is(pod.terminationGracePeriodSeconds, sqlite().pod.terminationGracePeriodSeconds);
  const { config } = loadConfig([], podEnv());
  const graceMs = pod.terminationGracePeriodSeconds * 1000;
  t.true(graceMs >= config.server.drainTimeoutMs + config.postgres!.statementTimeoutMs + 5000, `grace ${graceMs} ms, drain ${config.server.drainTimeoutMs} ms`);
  t.deepEqual(pod.securityContext, sqlite().pod.securityContext);
  t.deepEqual(container.securityContext, sqlite().container.securityContext);
  t.deepEqual(container.resources, sqlite().container.resources);
});

const KUBECTL = tool('kubectl (with its built-in kustomize)', 'kubectl', ['kustomize', '--help'], false);

requireTool(KUBECTL)('kustomize builds both deployments, each with one workload', (t) => {
  for (const [dir, kind] of [[K8S, 'StatefulSet'], [POSTGRES, 'Deployment']] as const) {
    const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
    t.is(r.status, 0, r.stderr);
    const built = parseAllDocuments(r.stdout).map((d) => d.toJS() as Doc);
    t.deepEqual(built.filter((d) => d.kind === 'StatefulSet' || d.kind === 'Deployment').map((d) => d.kind), [kind]);
    const expected = manifests(dir).filter(({ doc }) => doc.kind !== 'Kustomization').map(({ doc }) => `${doc.kind}/${doc.metadata.name}`).sort();
    t.deepEqual(built.map((d) => `${d.kind}/${d.metadata.name}`).sort(), expected, 'what the test reads is what kustomize applies');
  }
});
