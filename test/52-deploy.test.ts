import test from 'ava';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { apiKeySha256, newApiKey } from '../src/shared/api-keys';
import { SessiondClient, ServingStatus } from '../src/client/client';
import { CLIENT_VARIABLES, ConfigError, envName, isLoopbackListen, loadConfig, SETTINGS } from '../src/server/config';
import { readPrincipalsFile } from '../src/server/principals-file';
import { LIVENESS_SERVICE } from '../src/transport/health';
import { spawnServer } from './helpers/process';

/*
 * deploy/kubernetes/ and the Dockerfile, checked as far as this machine
 * allows (no Docker engine, no cluster): the manifests parse, name only real
 * settings, and agree with each other and with the code on ports, probes,
 * grace period, user and the principals file (a Secret mounted as a folder,
 * where the image expects it); a NetworkPolicy admits only client pods; the
 * Dockerfile's CMD is what the build produces, and that layout, built with
 * tsc, starts with the example principals and answers the probes.
 */

const ROOT = join(__dirname, '..');
const K8S = join(ROOT, 'deploy', 'kubernetes');

// Loose shapes: the manifests are data; a missing field fails the assertion that reads it.
/* eslint-disable @typescript-eslint/no-explicit-any */
type Doc = any;

function manifests(): { file: string; doc: Doc }[] {
  const out: { file: string; doc: Doc }[] = [];
  for (const file of readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const d of parseAllDocuments(readFileSync(join(K8S, file), 'utf8'))) {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      const doc = d.toJS() as Doc;
      if (doc !== null) out.push({ file, doc });
    }
  }
  return out;
}

function one(kind: string, name?: string): Doc {
  const found = manifests().filter(({ doc }) => doc.kind === kind && (name === undefined || doc.metadata?.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!.doc;
}

const statefulSet = () => one('StatefulSet');
const container = () => statefulSet().spec.template.spec.containers[0];
const configMapData = (): Record<string, string> => one('ConfigMap', container().envFrom[0].configMapRef.name).data;
const principalsPath = (): string => configMapData()['SESSIOND_PRINCIPALS_FILE']!;

/** The volume and mount that put the principals file where SESSIOND_PRINCIPALS_FILE says, and the Secret it comes from. */
function principalsVolume(): { volume: Doc; mount: Doc; secret: Doc } {
  const mount = container().volumeMounts.find((m: Doc) => m.mountPath === posix.dirname(principalsPath()));
  if (!mount) throw new Error(`nothing is mounted at ${posix.dirname(principalsPath())}`);
  const volume = statefulSet().spec.template.spec.volumes.find((v: Doc) => v.name === mount.name);
  return { volume, mount, secret: one('Secret', volume.secret.secretName) };
}

/** The Secret's principals file as shipped: placeholders where the key hashes go. */
const examplePrincipalsText = (): string => principalsVolume().secret.stringData[posix.basename(principalsPath())];
const PLACEHOLDER = /"REPLACE[^"]*"/g;

/**
 * The example principals file with each placeholder replaced by the hash of a
 * new key, as an operator does with `sessiond keys generate`, written to `dir`.
 * @returns its path and each principal's key, by name.
 */
function realPrincipals(dir: string): { file: string; keys: Map<string, string> } {
  const made: string[] = [];
  const text = examplePrincipalsText().replace(PLACEHOLDER, () => {
    made.push(newApiKey());
    return JSON.stringify(apiKeySha256(made.at(-1)!));
  });
  const file = join(dir, 'principals.yaml');
  writeFileSync(file, text, { mode: 0o600 });
  const keys = new Map<string, string>();
  for (const e of readPrincipalsFile(file).entries) {
    const key = made.find((k) => e.apiKeySha256.includes(apiKeySha256(k)));
    if (key) keys.set(e.principal.name, key);
  }
  return { file, keys };
}

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

/** The Dockerfile as instructions (continuations joined), with the stage each belongs to. */
function dockerfile(): { stage: string; op: string; args: string }[] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const out: { stage: string; op: string; args: string }[] = [];
  let stage = '';
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith('#')) continue;
    if (m[1] === 'FROM') stage = /\bAS\s+(\S+)/i.exec(m[2]!)?.[1] ?? '';
    out.push({ stage, op: m[1]!, args: m[2]!.trim() });
  }
  return out;
}

function finalStage() {
  const all = dockerfile();
  const last = all.filter((i) => i.op === 'FROM').at(-1)!.stage;
  return all.filter((i) => i.stage === last);
}

test('every manifest parses as YAML, and the kustomization lists each file', (t) => {
  const docs = manifests();
  t.deepEqual([...new Set(docs.map((d) => d.doc.kind))].sort(), ['ConfigMap', 'Kustomization', 'NetworkPolicy', 'Secret', 'Service', 'StatefulSet']);
  const files = readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort();
  t.deepEqual([...one('Kustomization').resources].sort(), files);
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
  for (const file of readdirSync(K8S)) {
    for (const m of readFileSync(join(K8S, file), 'utf8').matchAll(/\bSESSIOND_[A-Z0-9_]+/g)) named.add(m[0]);
  }
  t.true(named.size >= 5);
  for (const name of named) t.true(known.has(name), `${name} is not a setting in src/server/config.ts`);
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
  t.regex(readFileSync(join(K8S, 'secret.yaml'), 'utf8'), /sessiond keys generate/, 'the Secret says how to make real entries');
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

test('the Dockerfile builds in one stage from an official node image and runs what tsc emits in another', (t) => {
  const all = dockerfile();
  const froms = all.filter((i) => i.op === 'FROM');
  t.true(froms.length >= 2, 'multi-stage');
  t.regex(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'), /ARG NODE_IMAGE=node:20-bookworm-slim/);
  const cmd = JSON.parse(finalStage().find((i) => i.op === 'CMD')!.args) as string[];
  const build = JSON.parse(readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8')) as { compilerOptions?: { outDir?: string; rootDir?: string } };
  const base = JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')) as { compilerOptions: { outDir: string; rootDir: string } };
  const outDir = build.compilerOptions?.outDir ?? base.compilerOptions.outDir;
  const rootDir = build.compilerOptions?.rootDir ?? base.compilerOptions.rootDir;
  t.is(rootDir, '.');
  t.deepEqual(cmd, ['node', posix.join(outDir, 'src', 'main.js')]);
  t.true(existsSync(join(ROOT, 'src', 'main.ts')), 'the entry point the CMD is compiled from');
  const copies = finalStage().filter((i) => i.op === 'COPY').map((i) => i.args);
  for (const needed of [`/app/${outDir} `, '/app/node_modules ', '/app/descriptors/sessiond.binpb ', 'bin/sessiond.js ']) {
    t.true(copies.some((c) => c.includes(needed)), `the runtime stage copies ${needed.trim()}`);
  }
});

/**
 * Replays one stage's COPY instructions (WORKDIR /app) into `dir`: from the
 * build context, or `--from=<stage>` out of that stage's folder. node_modules
 * becomes a link to the repository's (no npm install offline).
 */
function replayCopies(stage: string, dir: string, stages: Record<string, string>): void {
  for (const i of dockerfile().filter((x) => x.stage === stage && x.op === 'COPY')) {
    const words = i.args.split(/\s+/);
    const from = /^--from=(\S+)$/.exec(words.find((w) => w.startsWith('--from=')) ?? '')?.[1];
    const paths = words.filter((w) => !w.startsWith('--'));
    const dest = paths.pop()!;
    const target = join(dir, dest.replace(/^\/app\/?/, ''));
    for (const src of paths) {
      const source = from ? join(stages[from]!, src.replace(/^\/app\/?/, '')) : join(ROOT, src);
      const to = paths.length > 1 || dest.endsWith('/') ? join(target, basename(src)) : target;
      mkdirSync(dirname(to), { recursive: true });
      if (basename(src) === 'node_modules') symlinkSync(join(ROOT, 'node_modules'), to, 'dir');
      else cpSync(source, to, { recursive: true });
    }
  }
}

test('the image layout, built from the Dockerfile\'s COPY lines with tsc, starts with the ConfigMap settings and the example principals, and answers both probes without a key', async (t) => {
  const all = dockerfile();
  t.true(all.filter((i) => i.op === 'WORKDIR').every((i) => i.args === '/app'), 'WORKDIR /app in every stage');
  const [buildStage, runtimeStage] = [all.find((i) => i.op === 'FROM')!.stage, all.filter((i) => i.op === 'FROM').at(-1)!.stage];
  const tscStep = all.find((i) => i.stage === buildStage && i.op === 'RUN' && i.args.includes('tsc -p tsconfig.build.json'));
  t.truthy(tscStep, 'the build stage compiles with tsconfig.build.json');

  const root = mkdtempSync(join(scratch, 'image-'));
  const build = join(root, 'build');
  const app = join(root, 'app');
  // Only what the build stage copies is there: an import of anything else fails tsc here, as in docker build.
  replayCopies(buildStage, build, {});
  t.true(all.some((i) => i.stage === buildStage && i.op === 'RUN' && /\bnpm ci\b/.test(i.args)), 'the build stage installs with npm ci');
  symlinkSync(join(ROOT, 'node_modules'), join(build, 'node_modules'), 'dir'); // in place of npm ci
  await promisify(execFile)(process.execPath, [join(build, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: build });
  replayCopies(runtimeStage, app, { [buildStage]: build });
  const cmd = JSON.parse(finalStage().find((i) => i.op === 'CMD')!.args) as string[];
  t.true(existsSync(join(app, cmd[1]!)), `${cmd[1]} exists after the build`);
  t.false(existsSync(join(app, 'src')), 'no TypeScript source in the image');

  // `npm prune --omit=dev` leaves the dependencies only: everything the compiled code requires must be one.
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const required = new Set<string>();
  for (const file of readdirSync(join(app, 'dist'), { recursive: true }) as string[]) {
    if (!file.endsWith('.js')) continue;
    for (const m of readFileSync(join(app, 'dist', file), 'utf8').matchAll(/require\(["']([^."'/][^"']*)["']\)/g)) {
      const name = m[1]!.startsWith('@') ? m[1]!.split('/').slice(0, 2).join('/') : m[1]!.split('/')[0]!;
      if (!name.startsWith('node:')) required.add(name);
    }
  }
  t.true(required.has('@grpc/grpc-js') && required.has('better-sqlite3'));
  for (const name of required) t.truthy(pkg.dependencies[name], `${name} is required at run time but is not in "dependencies"`);

  const data = join(root, 'var-lib-sessiond');
  mkdirSync(data);
  const { file, keys } = realPrincipals(root);
  const env = {
    ...configMapData(), SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_DB_PATH: join(data, posix.basename(configMapData()['SESSIOND_DB_PATH']!)), SESSIOND_PRINCIPALS_FILE: file,
  };
  const server = await spawnServer(env, [], 30_000, { cwd: app, entry: cmd.slice(1) });
  // As the kubelet probes: no key.
  const client = new SessiondClient(server.address, { defaultDeadlineMs: 5000 });
  const backend = new SessiondClient(server.address, { defaultDeadlineMs: 5000, apiKey: keys.get('web-frontend') });
  try {
    t.is((await client.health('')).status, ServingStatus.SERVING, 'readiness');
    t.is((await client.health(LIVENESS_SERVICE)).status, ServingStatus.SERVING, 'liveness');
    const err = await client.createSession({ serverId: 'web-1' }).then(() => undefined, (e: { code: number }) => e.code);
    t.is(err, 16 /* UNAUTHENTICATED */, 'a session call needs a key');
    const { token } = await backend.createSession({ serverId: 'web-1' });
    t.true((await backend.validateSession(token)).valid);
    // The CLI as an exec probe would run it in the image: from dist/, with no src/ beside it.
    const probe = await promisify(execFile)(process.execPath, [join(app, 'bin', 'sessiond.js'), 'health', '--service', LIVENESS_SERVICE, '--address', server.address], { cwd: app });
    t.regex(probe.stdout, /^SERVING/);
  } finally {
    client.close();
    backend.close();
    server.proc.kill('SIGTERM');
  }
  t.is(await server.exited, 0, server.stderr());
});
