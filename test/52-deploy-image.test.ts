import test from 'ava';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';
import { SessiondClient, ServingStatus } from '../src/client';
import { LIVENESS_SERVICE } from '../src/transport/health';
import { spawnServer } from './helpers/process';
import { ROOT, configMapData, realPrincipals, dockerfile, finalStage } from './helpers/deploy';

/*
 * The Dockerfile, checked as far as this machine allows (no Docker engine):
 * its CMD is what the build produces, and that layout, built with tsc from
 * its COPY lines, starts with the example principals and answers the probes.
 */

let scratch: string;
test.before(() => {
  mkdirSync(join(ROOT, '.test-output'), { recursive: true });
  scratch = mkdtempSync(join(ROOT, '.test-output', 'deploy-'));
});
test.after.always(() => scratch && rmSync(scratch, { recursive: true, force: true }));

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
