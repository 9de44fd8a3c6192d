import test from 'ava';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { SessiondClient, ServingStatus } from '../src/client';
import { ConfigError, envName, loadConfig, SETTINGS } from '../src/config';
import { LIVENESS_SERVICE } from '../src/transport/health';
import { spawnServer } from './helpers/process';

/*
 * deploy/kubernetes/ and the Dockerfile, checked as far as this machine
 * allows (no Docker engine, no cluster): the manifests parse, name only real
 * settings, and agree with each other and with the code on ports, probes,
 * grace period and user; the Dockerfile's CMD is what the build produces, and
 * that layout, built with tsc, starts and answers the probes.
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
  t.deepEqual([...new Set(docs.map((d) => d.doc.kind))].sort(), ['ConfigMap', 'Kustomization', 'Secret', 'Service', 'StatefulSet']);
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

test('every SESSIOND_ variable the manifests set is a setting, and the ConfigMap is a valid configuration', (t) => {
  const known = new Set<string>(SETTINGS.map((s) => envName(s.flag)));
  const named = new Set<string>([...Object.keys(configMapData()), ...container().env.map((e: Doc) => e.name as string)]);
  for (const file of readdirSync(K8S)) {
    for (const m of readFileSync(join(K8S, file), 'utf8').matchAll(/\bSESSIOND_[A-Z0-9_]+/g)) named.add(m[0]);
  }
  t.true(named.size >= 5);
  for (const name of named) t.true(known.has(name), `${name} is not a setting in src/config.ts`);

  const secret = one('Secret', container().env.find((e: Doc) => e.name === 'SESSIOND_ADMIN_TOKEN').valueFrom.secretKeyRef.name);
  const key = container().env.find((e: Doc) => e.name === 'SESSIOND_ADMIN_TOKEN').valueFrom.secretKeyRef.key;
  t.true(key in secret.stringData, 'the secretKeyRef names a key of the Secret');
  // With a real token, the ConfigMap loads as it is.
  const { config } = loadConfig([], { ...configMapData(), SESSIOND_ADMIN_TOKEN: 'k8s-admin-token-0123456789abcdef' });
  t.is(config.server.listen, '0.0.0.0:50051');
  // The placeholder token fails closed: the pod will not start until it is replaced.
  const err = t.throws(() => loadConfig([], { ...configMapData(), SESSIOND_ADMIN_TOKEN: secret.stringData[key] }), { instanceOf: ConfigError }) as ConfigError;
  t.deepEqual(err.problems.map((p) => /admin-token/.test(p)), [true]);
});

test('ports and probes agree with the listen setting and the health names', (t) => {
  const port = Number(loadConfig([], configMapData()).config.server.listen.split(':').at(-1));
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
  const { config } = loadConfig([], configMapData());
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

test('the image layout, built from the Dockerfile\'s COPY lines with tsc, starts with the ConfigMap settings and answers both probes', async (t) => {
  const all = dockerfile();
  t.true(all.filter((i) => i.op === 'WORKDIR').every((i) => i.args === '/app'), 'WORKDIR /app in every stage');
  const [buildStage, runtimeStage] = [all.find((i) => i.op === 'FROM')!.stage, all.filter((i) => i.op === 'FROM').at(-1)!.stage];
  const tscStep = all.find((i) => i.stage === buildStage && i.op === 'RUN' && i.args.includes('tsc -p tsconfig.build.json'));
  t.truthy(tscStep, 'the build stage compiles with tsconfig.build.json');

  mkdirSync(join(ROOT, '.test-output'), { recursive: true });
  const root = mkdtempSync(join(ROOT, '.test-output', 'image-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
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
  const env = { ...configMapData(), SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_DB_PATH: join(data, posix.basename(configMapData()['SESSIOND_DB_PATH']!)), SESSIOND_ADMIN_TOKEN: 'k8s-admin-token-0123456789abcdef' };
  const server = await spawnServer(env, [], 30_000, { cwd: app, entry: cmd.slice(1) });
  const client = new SessiondClient(server.address, { defaultDeadlineMs: 5000 });
  try {
    t.is((await client.health('')).status, ServingStatus.SERVING, 'readiness');
    t.is((await client.health(LIVENESS_SERVICE)).status, ServingStatus.SERVING, 'liveness');
    const { token } = await client.createSession({ serverId: 'web-1' });
    t.true((await client.validateSession(token)).valid);
    // The CLI as an exec probe would run it in the image: from dist/, with no src/ beside it.
    const probe = await promisify(execFile)(process.execPath, [join(app, 'bin', 'sessiond.js'), 'health', '--service', LIVENESS_SERVICE, '--address', server.address], { cwd: app });
    t.regex(probe.stdout, /^SERVING/);
  } finally {
    client.close();
    server.proc.kill('SIGTERM');
  }
  t.is(await server.exited, 0, server.stderr());
});
