import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import { CLIENT_VARIABLES, ConfigError, envName, isLoopbackListen, loadConfig, SETTINGS } from '../src/server/config';
import { readPrincipalsFile } from '../src/server/principals-file';
import { LIVENESS_SERVICE } from '../src/transport/health';
import { ROOT, K8S, POSTGRES, Doc, manifests, kustomization, kustomizationDirs, namedVariables, one, statefulSet, container, configMapData, principalsPath, principalsVolume, examplePrincipalsText, PLACEHOLDER, realPrincipals, finalStage } from './helpers/deploy';

/*
 * deploy/kubernetes/ (SQLite; postgres/ is test/52-deploy-postgres.test.ts), checked as far as this machine allows (no cluster):
 * the manifests parse, name only real settings, and agree with each other
 * and with the code on ports, probes, grace period, user and the principals
 * file (a Secret mounted as a folder, where the image expects it); a
 * NetworkPolicy admits only client pods.
 */

let scratch: string;
test.before(() => {
  mkdirSync(join(ROOT, '.test-output'), { recursive: true });
  scratch = mkdtempSync(join(ROOT, '.test-output', 'deploy-'));
});
test.after.always(() => scratch && rmSync(scratch, { recursive: true, force: true }));

/** The ConfigMap's settings with the example principals made real, at a path of this machine: the configuration the pod starts with. */
function podEnv(): Record<string, string> {
  return { ...configMapData(), SESSIOND_PRINCIPALS_FILE: realPrincipals(mkdtempSync(join(scratch, 'p-'))).file };
}

test('every manifest parses as YAML, each kustomization lists each file of its folder, and every file is in a deployment', (t) => {
  const docs = manifests();
  t.deepEqual([...new Set(docs.map((d) => d.doc.kind))].sort(), ['ConfigMap', 'Kustomization', 'NetworkPolicy', 'Secret', 'Service', 'StatefulSet']);
  for (const dir of kustomizationDirs()) {
    const resources: string[] = kustomization(dir).resources;
    const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort();
    t.deepEqual(resources.filter((r) => /\.ya?ml$/.test(r)).sort(), files, `${relative(K8S, dir) || '.'}: the files it lists`);
    // The others are folders of kustomizations (kustomize loads no file outside a kustomization's folder).
    for (const r of resources.filter((x) => !/\.ya?ml$/.test(x))) t.true(existsSync(join(dir, r, 'kustomization.yaml')), `${r} is a kustomization`);
  }
  // Each file is applied by the SQLite deployment or the PostgreSQL one (deploying.md shows both).
  const applied = new Set([K8S, POSTGRES].flatMap((dir) => manifests(dir).map((m) => m.file)));
  const all = kustomizationDirs().flatMap((dir) => readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => relative(K8S, join(dir, f))));
  for (const file of all) t.true(applied.has(file), `${file} is applied by a deployment`);
});

test('the StatefulSet runs one writer on a ReadWriteOncePod volume, and says why', (t) => {
  const sts = statefulSet();
  t.is(sts.spec.replicas, 1);
  const claims = sts.spec.volumeClaimTemplates;
  t.is(claims.length, 1);
  t.deepEqual(claims[0].spec.accessModes, ['ReadWriteOncePod']);
  const text = readFileSync(join(K8S, 'statefulset.yaml'), 'utf8');
  t.regex(text, /Why one writer/);
  t.regex(text, /-shm/);
  // The database is on that volume.
  const mount = container().volumeMounts.find((m: Doc) => m.name === claims[0].metadata.name);
  t.truthy(mount, 'the claim is mounted');
  t.is(posix.dirname(configMapData()['SESSIOND_DB_PATH']!), mount.mountPath);
  // The governing Service is headless; the selector matches the pod.
  const headless = one('Service', sts.spec.serviceName);
  t.is(headless.spec.clusterIP, 'None');
  t.deepEqual(sts.spec.selector.matchLabels, sts.spec.template.metadata.labels);
});

test('every SESSIOND_ variable the manifests set is a setting, and the ConfigMap is a valid configuration once the principals are real', (t) => {
  // A comment may name a client's variable (SESSIOND_API_KEY); the pod's environment may not (below).
  const known = new Set<string>([...SETTINGS.map((s) => envName(s.flag)), ...CLIENT_VARIABLES]);
  const named = new Set<string>([...Object.keys(configMapData()), ...(container().env ?? []).map((e: Doc) => e.name as string)]);
  for (const name of namedVariables(K8S)) named.add(name);
  t.true(named.size >= 5);
  for (const name of named) t.true(known.has(name), `${name} is not a setting in src/server/settings.ts`);
  for (const name of [...Object.keys(configMapData()), ...(container().env ?? []).map((e: Doc) => e.name as string)]) {
    t.true(SETTINGS.some((s) => envName(s.flag) === name), `the pod is given ${name}, which is not a server setting`);
  }

  const { config } = loadConfig([], podEnv());
  t.is(config.server.listen, '0.0.0.0:50051');
  t.false(config.server.allowUnauthenticated);
  // Without the principals file, a pod listening on every interface does not start.
  const { SESSIOND_PRINCIPALS_FILE: _, ...withoutFile } = configMapData();
  const err = t.throws(() => loadConfig([], withoutFile), { instanceOf: ConfigError }) as ConfigError;
  t.regex(err.problems.join('\n'), /not a loopback address and no principals are configured/);
});

test('the example principals fail closed until their placeholders are replaced, and then load', (t) => {
  const text = examplePrincipalsText();
  t.regex(readFileSync(join(K8S, 'common', 'secret.yaml'), 'utf8'), /sessiond keys generate/, 'the Secret says how to make real entries');
  const placeholders = text.match(PLACEHOLDER) ?? [];
  t.true(placeholders.length >= 2);
  const dir = mkdtempSync(join(scratch, 'p-'));
  writeFileSync(join(dir, 'principals.yaml'), text);
  const err = t.throws(() => loadConfig([], { ...configMapData(), SESSIOND_PRINCIPALS_FILE: join(dir, 'principals.yaml') }), { instanceOf: ConfigError }) as ConfigError;
  const hashProblems = err.problems.filter((p) => /api_key_sha256\[0\]: is not 64 hex digits/.test(p));
  t.is(hashProblems.length, placeholders.length, err.message);
  // Besides those, at most the consequence: no principal loaded, on a listen address that needs one.
  for (const p of err.problems.filter((x) => !hashProblems.includes(x))) t.regex(p, /lists no principals/);
  t.false(err.message.includes('REPLACE'), 'the refusal quotes no value of the file');

  const { file, keys } = realPrincipals(dir);
  const read = readPrincipalsFile(file);
  t.deepEqual(read.problems, []);
  t.deepEqual([...keys.keys()].sort(), read.entries.map((e) => e.principal.name).sort(), 'one key per principal');
  const byName = new Map(read.entries.map((e) => [e.principal.name, e.principal]));
  t.true([...byName.values()].some((p) => p.permissions.has('admin')), 'an operator principal for the admin commands');
  t.true([...byName.values()].some((p) => !p.permissions.has('admin') && !p.scope.all && p.permissions.has('sessions.write')), 'a backend confined to its server_ids');
});

test('the principals Secret is mounted as a folder (no subPath, so updates arrive), read-only, where SESSIOND_PRINCIPALS_FILE and the image look', (t) => {
  const { volume, mount, secret } = principalsVolume();
  t.is(posix.basename(principalsPath()) in secret.stringData, true, 'the file is a key of the Secret');
  t.is(volume.secret.items, undefined, 'every key keeps its name');
  t.is(mount.subPath, undefined, 'a subPath mount never sees a Secret update');
  t.is(mount.subPathExpr, undefined);
  t.true(mount.readOnly);
  const text = readFileSync(join(K8S, 'statefulset.yaml'), 'utf8');
  t.regex(text, /never with subPath/, 'and the manifest says why');
  // 0440: the pod's group (fsGroup) reads it; nobody else.
  t.is(volume.secret.defaultMode, 0o440);
  t.is(statefulSet().spec.template.spec.securityContext.fsGroup, statefulSet().spec.template.spec.securityContext.runAsGroup);
  // No credential in the pod's environment: the principals are a file, and the admin token is not used.
  t.false((container().env ?? []).some((e: Doc) => e.name === 'SESSIOND_ADMIN_TOKEN'));

  // The image: listens on every interface and expects the same file, so it fails closed without one.
  const env = Object.fromEntries(
    finalStage().filter((i) => i.op === 'ENV').flatMap((i) => i.args.split(/\s+/).map((kv) => kv.split('=', 2) as [string, string])),
  );
  t.false(isLoopbackListen(env['SESSIOND_LISTEN']!));
  t.is(env['SESSIOND_PRINCIPALS_FILE'], principalsPath());
  const imageEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('SESSIOND_')));
  const err = t.throws(() => loadConfig([], imageEnv), { instanceOf: ConfigError }) as ConfigError;
  t.is(err.problems[0], `principals-file ${principalsPath()}: cannot read the file (ENOENT)`);
  for (const p of err.problems) t.true(p.startsWith(`principals-file ${principalsPath()}`), p);
  t.notThrows(() => loadConfig([], { ...imageEnv, SESSIOND_PRINCIPALS_FILE: '', SESSIOND_ALLOW_UNAUTHENTICATED: 'true' }), 'or it is told that something else authenticates');
});

test('the NetworkPolicy admits gRPC from client pods only, and nothing else', (t) => {
  const policy = one('NetworkPolicy');
  t.deepEqual(policy.spec.podSelector.matchLabels, statefulSet().spec.template.metadata.labels, 'it selects the sessiond pod');
  t.true(policy.spec.policyTypes.includes('Ingress'), 'selected, the pod denies every ingress no rule admits');
  const c = container();
  const grpcPort = c.ports.find((p: Doc) => p.name === 'grpc');
  const rules: Doc[] = policy.spec.ingress;
  for (const rule of rules) {
    t.true(Array.isArray(rule.from) && rule.from.length > 0, 'no rule admits every source');
    t.true(Array.isArray(rule.ports) && rule.ports.length > 0, 'no rule admits every port');
  }
  const admits = (port: Doc) => rules.filter((r) => r.ports.some((p: Doc) => p.port === port.containerPort || p.port === port.name));
  const grpcRules = admits(grpcPort);
  t.is(grpcRules.length, 1);
  t.deepEqual(grpcRules[0].from, [{ podSelector: { matchLabels: { 'sessiond-client': 'true' } } }]);
  t.is(grpcRules[0].ports.find((p: Doc) => p.port === grpcPort.containerPort || p.port === 'grpc').protocol, 'TCP');
  // Any other port the pod exposes (metrics) only from a namespace (monitoring), never from anywhere.
  for (const port of c.ports.filter((p: Doc) => p !== grpcPort)) {
    for (const r of admits(port)) for (const from of r.from) t.truthy(from.namespaceSelector, `${port.name} from a namespace only`);
  }
  for (const r of rules) for (const from of r.from) t.is(from.ipBlock, undefined, 'no address range: callers are named by label');
});

test('ports and probes agree with the listen setting and the health names', (t) => {
  const port = Number(loadConfig([], podEnv()).config.server.listen.split(':').at(-1));
  const c = container();
  t.deepEqual(c.ports.map((p: Doc) => p.containerPort), [port]);
  const portName = c.ports[0].name;
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    // The kubelet's grpc probe takes a port number only (no named ports).
    t.is(c[probe].grpc.port, port, `${probe} port`);
  }
  t.is(c.readinessProbe.grpc.service, '', 'readiness asks about the whole server');
  t.is(c.livenessProbe.grpc.service, LIVENESS_SERVICE, 'liveness asks the name that does not depend on storage');
  t.is(c.startupProbe.grpc.service, LIVENESS_SERVICE);
  for (const svc of manifests().filter(({ doc }) => doc.kind === 'Service')) {
    const p = svc.doc.spec.ports[0];
    t.true(p.targetPort === portName || p.targetPort === port, `${svc.doc.metadata.name} targets the gRPC port`);
    t.deepEqual(svc.doc.spec.selector, statefulSet().spec.template.metadata.labels);
  }
  const expose = finalStage().find((i) => i.op === 'EXPOSE');
  t.is(expose?.args, String(port), 'the Dockerfile exposes the same port');
});

test('terminationGracePeriodSeconds covers the drain plus the final checkpoint', (t) => {
  const { config } = loadConfig([], podEnv());
  const graceMs = statefulSet().spec.template.spec.terminationGracePeriodSeconds * 1000;
  // The checkpoint may wait for readers up to the busy timeout; a few more seconds close the database.
  t.true(graceMs >= config.server.drainTimeoutMs + config.storage.busyTimeoutMs + 5000, `grace ${graceMs} ms, drain ${config.server.drainTimeoutMs} ms`);
  t.true(graceMs <= config.server.drainTimeoutMs + 60_000, 'and not so long that a stuck pod lingers');
});

test('the pod and the image run as the same non-root user', (t) => {
  const pod = statefulSet().spec.template.spec.securityContext;
  t.true(pod.runAsNonRoot);
  t.not(pod.runAsUser, 0);
  t.false(container().securityContext.allowPrivilegeEscalation);
  const user = finalStage().find((i) => i.op === 'USER')?.args;
  t.truthy(user, 'the final stage sets USER');
  const [uid, gid] = user!.split(':');
  t.regex(uid!, /^\d+$/, 'numeric, so that runAsNonRoot can be verified');
  t.not(uid, '0');
  t.is(Number(uid), pod.runAsUser);
  t.is(Number(gid), pod.runAsGroup);
});
