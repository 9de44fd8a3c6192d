import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { anchorOf, assignedName, blockCommands, fencedBlocks, outputProblems, type DocCommand } from './helpers/doc-commands';
import { startTestServer, tempDir, type TestServer } from './helpers/server';

/*
 * Every shell command README.md and docs/*.md show runs here, in the order
 * the page shows it, through bash, against real servers, and must succeed;
 * where the page shows its output, the real output must have what it shows
 * (helpers/doc-commands.ts says how a page shows commands and output). What
 * the test changes, so that a page's commands reach its servers:
 * - "127.0.0.1:50051" in a command becomes the test server's address, and
 *   SESSIOND_ADDRESS points the CLI's default there too;
 * - `sessiond` on the PATH is bin/sessiond.js, as `npm link` would make it,
 *   and node_modules/.bin is on the PATH (so `npx buf` finds the dev dependency);
 * - the commands run in a folder of their own holding links to the
 *   repository's files (clients/ as a copy of links, so that what `make
 *   clients` generates lands there, not in the checkout) and two key files a
 *   reader would have from a secret store: ops.key (a principal with every
 *   permission) and web-frontend.key (sessions.read and sessions.write for
 *   web-1 and web-eu-*);
 * - a command that names SESSIOND_API_KEY or an authorization header calls a
 *   second server, which has those principals, with SESSIOND_API_KEY set to
 *   ops.key's key; every other command calls a server in protected mode, as
 *   `make run` starts it;
 * - NAME=... lines set NAME for the rest of their page, as in a shell; each
 *   page starts with none.
 * A command that cannot run here is listed below with the reason, and the
 * page must say so just before its block; a new one fails until it is.
 */

const ROOT = join(__dirname, '..');
const ADDRESS = '127.0.0.1:50051';

/** Commands no test runs here, by reason. The page says "not run here" just before each block. */
const NOT_RUN: Record<string, string[]> = {
  'CI runs `make test` itself, and this test starts the server `make run` starts': ['make run    # serves on 127.0.0.1:50051, database ./data/sessions.db', 'make test   # generated-code check, lint, buf breaking, every test under coverage; ends with "N passed, N failed"'],
  'grpcurl has no Debian package here; the same calls are shown and run with buf curl': [
    `grpcurl -plaintext -d '{"server_id":"web-1","subject":"alice"}' 127.0.0.1:50051 sessions.v1.SessionService/CreateSession`,
    `grpcurl -plaintext -d "{\\"token\\":\\"$TOKEN\\",\\"touch\\":true}" 127.0.0.1:50051 sessions.v1.SessionService/ValidateSession`,
    `grpcurl -plaintext -d '{"mode":"CHECKPOINT_MODE_TRUNCATE"}' 127.0.0.1:50051 sessions.v1.AdminService/Checkpoint`,
    'grpcurl -plaintext 127.0.0.1:50051 list',
    'grpcurl -plaintext 127.0.0.1:50051 sessions.v1.AdminService/GetStorageStatus',
    `grpcurl -plaintext -d '{"batch_size":1000}' 127.0.0.1:50051 sessions.v1.AdminService/PurgeExpiredSessions`,
    `grpcurl -plaintext -v -d '{"service":""}' 127.0.0.1:50051 grpc.health.v1.Health/Check`,
    'grpcurl -plaintext -H "authorization: Bearer $SESSIOND_API_KEY" 127.0.0.1:50051 sessions.v1.AdminService/GetStorageStatus',
    `grpcurl -plaintext -d '{"server_id":"web-1","subject":"alice","except_session_id":"'"$CURRENT"'"}' 127.0.0.1:50051 sessions.v1.SessionService/RevokeSessions`,
    `grpcurl -plaintext -d '{}' 127.0.0.1:50051 sessions.v1.AdminService/Backup`,
    `grpcurl -plaintext -d '{"full":true}' 127.0.0.1:50051 sessions.v1.AdminService/IntegrityCheck`,
  ],
  'no Docker engine runs here; test/52-deploy.test.ts checks the Dockerfile and replays its build': [
    'docker build -t sessiond:0.1.0 .',
    'docker run -v "$PWD/principals:/etc/sessiond/principals:ro" -v sessiond-data:/var/lib/sessiond -p 50051:50051 sessiond:0.1.0',
    'docker build -t registry.example.com/sessiond:0.1.0 .     # multi-stage, node:20-bookworm-slim, runs as uid 1000',
    'docker push registry.example.com/sessiond:0.1.0          # and set `images` in kustomization.yaml to it',
  ],
  'no Kubernetes cluster here; test/52-deploy.test.ts checks the manifests': [
    'kubectl apply -k deploy/kubernetes',
    'kubectl create secret generic sessiond-principals --from-file=principals.yaml   # your file, see common/secret.yaml',
    'kubectl apply -k deploy/kubernetes                        # after removing secret.yaml from common/kustomization.yaml',
    'kubectl port-forward svc/sessiond 50051:50051 &           # then, with an admin principal\'s key, sessiond admin status',
  ],
  'no Kubernetes cluster here (nor a PostgreSQL server); test/52-deploy-postgres.test.ts checks the manifests': [
    `kubectl create secret generic sessiond-database --from-literal=url='postgresql://sessiond:PASSWORD@sessiond-db-rw:5432/sessiond?target_session_attrs=read-write'`,
    'kubectl apply -k deploy/kubernetes/postgres               # after removing database-secret.yaml from postgres/kustomization.yaml',
    'kubectl rollout status deployment/sessiond                # three ready pods, each SERVING on the database',
  ],
  'these need certificate files and a TLS server; test/50-tls.test.ts makes both and checks each case': [
    'SESSIOND_TLS_CERT=/etc/sessiond/tls/server.pem SESSIOND_TLS_KEY=/etc/sessiond/tls/server.key SESSIOND_TLS_CLIENT_CA=/etc/sessiond/tls/clients-ca.pem make run',
    'sessiond health --address sessiond.example.internal:50051 --tls-ca ca.pem --tls-cert client.pem --tls-key client.key',
    `npx buf curl --protocol grpc --cacert ca.pem --cert client.pem --key client.key --data '{"service":""}' https://sessiond.example.internal:50051/grpc.health.v1.Health/Check`,
    'grpcurl -cacert ca.pem -cert client.pem -key client.key sessiond.example.internal:50051 grpc.health.v1.Health/Check',
  ],
  'a bench run takes minutes to twenty on an idle machine; test/80-bench-smoke.test.ts runs its harness': [
    'make bench',
    'make bench                                    # the full run; prints the tables, writes bench/results/latest.json',
    'make bench BENCH_SESSIONS=20000 BENCH_WINDOW=1s BENCH_STALL_SESSIONS=200000   # a quicker look',
    'make bench BENCH_PARTS=unary BENCH_OPS=ValidateSession BENCH_CONCURRENCY=64   # one call only',
    'make bench-smoke                              # tiny fills and windows (seconds): checks the harness, figures mean nothing',
    'make bench BENCH_PARTS=ablation BENCH_CONCURRENCY=64                    # what group commit, the checkpoint worker and the off-loop fsync buy',
    'make bench BENCH_PARTS=unary BENCH_SERVER_SETTINGS=cache-size=-65536      # measure a server setting (flag=value[,flag=value])',
    'make bench BENCH_PARTS=stalls BENCH_SERVER_NODE_ARGS=--trace-gc-nvp BENCH_SERVER_STDOUT=/tmp/gc.log   # what each garbage collection cost',
    'make bench BENCH_SERVER=tsx                   # the servers from the sources (node --import tsx src/main.ts) instead of compiled',
    'make bench BENCH_CPU_PROF=/tmp/prof BENCH_PARTS=unary BENCH_OPS=CreateSession   # CPU profiles, written when each server exits',
    'make bench BENCH_POSTGRES=off                 # SQLite only: no PostgreSQL cluster, no PostgreSQL rows',
    'make bench BENCH_PARTS=threads,workers BENCH_STREAM_CONCURRENCY=256,1024 BENCH_POSTGRES=off   # past one thread: lookup threads, workers',
    // It reads the profiles such a run leaves.
    'node --import tsx bench/profile-summary.ts /tmp/prof/CPU.*.cpuprofile   # where each profiled thread spent its time, by group',
    'make bench ARGS=--help                        # every BENCH_* setting',
    'node --import tsx bench/main.ts --parts unary --sessions 20000 --window 1s --warmup 300ms --rounds 2 --concurrency 64 --ops ValidateSession,GetSession,CreateSession --out bench/results/pg-short.json',
  ],
  'these need certificate files and a TLS server; test/53-python-client.test.ts runs the script over mTLS with certificates it makes': [
    'SESSIOND_API_KEY="$(cat ops.key)" /usr/bin/python3 clients/python/smoke.py sessiond.example.internal:50051 --ca-file ca.pem --cert-file client.pem --key-file client.key',
  ],
  'a watch follows the log until Ctrl-C; test/62-cli.test.ts runs `sessiond sessions watch`, test/38-session-events.test.ts the stream itself': [
    'sessiond sessions watch --subject alice',
    `npx buf curl --protocol grpc --http2-prior-knowledge --data '{"server_id":"web-1","after_sequence":"0"}' http://127.0.0.1:50051/sessions.v1.SessionService/WatchSessionEvents`,
    `grpcurl -plaintext -d '{"subject":"alice","progress_events":true}' 127.0.0.1:50051 sessions.v1.SessionService/WatchSessionEvents`,
  ],
  'the server runs until it is stopped, on a system path; test/31-workers.test.ts starts the same group on a temporary file': [
    'sessiond serve --workers auto --db-path /var/lib/sessiond/sessions.db --listen 0.0.0.0:50051',
  ],
  'the soak runs for minutes; test/30-crash.test.ts runs the same crash test with fewer kills': ['make soak SOAK_KILLS=500 SOAK_SYNCHRONOUS=full'],
};

const notRun = new Map(Object.entries(NOT_RUN).flatMap(([why, lines]) => lines.map((l) => [l, why] as const)));

const PAGES = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
const text = (page: string) => readFileSync(join(ROOT, page), 'utf8');
const blocks = PAGES.flatMap((page) => fencedBlocks(page, text(page)));
const commands = blocks.filter((b) => b.lang === 'sh').flatMap(blockCommands);
const where = (c: DocCommand) => `${c.page}:${c.line}: ${c.text}`;

interface Servers {
  open: TestServer;
  keyed: TestServer;
  opsKey: string;
  work: string;
  bin: string;
}

let servers: Servers | undefined;

test.before(async () => {
  // The pages' commands pipe answers through jq; without it they fail, and this says why first.
  for (const [tool, pkg] of [['bash', 'bash'], ['jq', 'jq']] as const) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing: apt-get install ${pkg} (.ci/run installs it)`);
  }
  // The pages' backups go to a folder of the test's own, as --backup-dir would name one.
  const backups = { SESSIOND_BACKUP_DIR: join(tempDir('sessiond-doc-backups-'), 'backups') };
  const [open, keyed] = await Promise.all([
    startTestServer({ env: backups }),
    startTestServer({
      env: backups,
      principals: [
        { name: 'ops', permissions: ['admin', 'sessions.read', 'sessions.write'], serverIds: ['*'] },
        { name: 'web-frontend', permissions: ['sessions.read', 'sessions.write'], serverIds: ['web-1', 'web-eu-*'] },
      ],
    }),
  ]);
  const work = tempDir('sessiond-doc-commands-');
  for (const entry of readdirSync(ROOT)) if (!['.git', 'data', 'clients'].includes(entry)) symlinkSync(join(ROOT, entry), join(work, entry));
  linkTree(join(ROOT, 'clients'), join(work, 'clients'));
  writeFileSync(join(work, 'ops.key'), `${keyed.keys['ops']}\n`, { mode: 0o600 });
  writeFileSync(join(work, 'web-frontend.key'), `${keyed.keys['web-frontend']}\n`, { mode: 0o600 });
  const bin = join(work, '.bin');
  mkdirSync(bin);
  // tsx takes the tsconfig.json of the working folder; this one's `include` does not cover the
  // sources' real paths, and sources compiled without it get other line maps, which spoil the
  // coverage c8 merges with the other processes'. So the real checkout's tsconfig.json it is.
  writeFileSync(join(bin, 'sessiond'), `#!/bin/sh\nTSX_TSCONFIG_PATH='${join(ROOT, 'tsconfig.json')}' exec '${process.execPath}' '${join(ROOT, 'bin', 'sessiond.js')}' "$@"\n`);
  chmodSync(join(bin, 'sessiond'), 0o755);
  servers = { open, keyed, opsKey: keyed.keys['ops']!, work, bin };
});

test.after.always(async () => {
  if (!servers) return;
  await Promise.all([servers.open.close(), servers.keyed.close()]);
  rmSync(servers.work, { recursive: true, force: true });
});

/** `to` as a tree of folders whose files are links to those of `from`, without what `make clients` generates. */
function linkTree(from: string, to: string): void {
  mkdirSync(to);
  for (const e of readdirSync(from, { withFileTypes: true })) {
    if (e.name === 'gen' || e.name === '__pycache__') continue;
    if (e.isDirectory()) linkTree(join(from, e.name), join(to, e.name));
    else symlinkSync(join(from, e.name), join(to, e.name));
  }
}

interface Run {
  code: number | string;
  stdout: string;
  stderr: string;
}

function bash(script: string, env: NodeJS.ProcessEnv, cwd: string, timeoutMs = 60_000): Promise<Run> {
  const proc = spawn('bash', ['-c', `set -o pipefail\n${script}`], { cwd, env });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((done) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ code: code ?? signal ?? -1, stdout, stderr });
    });
  });
}

const needsKey = (c: DocCommand) => /SESSIOND_API_KEY|authorization: Bearer/.test(c.text);

/** Runs one page's commands in order, carrying its variables from one to the next. */
async function runPage(t: ExecutionContext, page: string): Promise<void> {
  const s = servers!;
  const vars: Record<string, string> = {};
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_')));
  const PATH = `${s.bin}:${join(ROOT, 'node_modules', '.bin')}:${process.env['PATH']}`;
  const mine = commands.filter((c) => c.page === page && !notRun.has(c.text));
  for (const c of mine) {
    const server = needsKey(c) ? s.keyed : s.open;
    const env: NodeJS.ProcessEnv = { ...base, PATH, ...vars, SESSIOND_ADDRESS: server.address, ...(needsKey(c) ? { SESSIOND_API_KEY: s.opsKey } : {}) };
    const line = c.text.split(ADDRESS).join(server.address);
    const name = assignedName(c.text);
    const r = await bash(name ? `${line} || exit $?\nprintf '%s' "$${name}"` : line, env, s.work);
    const shown = `${where(c)}\nexit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
    t.is(r.code, 0, shown);
    if (name) {
      t.true(r.stdout !== '' && r.stdout !== 'null', `${shown}\n${name} is empty`);
      vars[name] = r.stdout;
    }
    t.deepEqual(outputProblems(c.output, `${r.stdout}${r.stderr}`), [], shown);
  }
}

for (const page of PAGES) {
  if (!commands.some((c) => c.page === page && !notRun.has(c.text))) continue;
  test.serial(`every command ${page} shows runs and answers as shown`, (t) => runPage(t, page));
}

test('a command that is not run here is listed with its reason, and its page says so at that spot', (t) => {
  const problems: string[] = [];
  for (const c of commands) {
    const marked = /not run here/i.test(c.context);
    if (notRun.has(c.text)) {
      if (!marked) problems.push(`${where(c)}: listed as not run here (${notRun.get(c.text)}), but the text before its block does not say "not run here"`);
    } else if (marked) {
      problems.push(`${where(c)}: the page says its block is not run here, but this test runs it`);
    }
  }
  // No entry outlives the command it was for.
  const shown = new Set(commands.map((c) => c.text));
  for (const l of notRun.keys()) if (!shown.has(l)) problems.push(`listed, but no page shows it any more: ${l}`);
  t.deepEqual(problems, []);
});

test('every command a page shows is in a ```sh block, where this test finds it', (t) => {
  const problems: string[] = [];
  for (const b of blocks) {
    if (b.lang === '') problems.push(`${b.page}:${b.line}: a fence without a language (text, sh, ts, yaml, json...)`);
    if (['bash', 'shell', 'console', 'shell-session', 'zsh'].includes(b.lang)) problems.push(`${b.page}:${b.line}: a ${b.lang} block: write it as sh, so that it is run`);
  }
  t.deepEqual(problems, []);
  t.true(commands.length >= 40, `${commands.length} commands found`);
});

test('every relative link of README.md and docs/ leads to a file, and every #anchor to a heading', (t) => {
  const problems: string[] = [];
  for (const page of PAGES) {
    const md = text(page).replace(/^```[\s\S]*?^```$/gm, '');
    for (const m of md.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!;
      if (/^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split('#') as [string, string | undefined];
      const file = path === '' ? join(ROOT, page) : resolve(dirname(join(ROOT, page)), path);
      if (!existsSync(file)) problems.push(`${page}: link to ${target}: no such file`);
      else if (anchor && file.endsWith('.md')) {
        const anchors = [...readFileSync(file, 'utf8').matchAll(/^#+ (.*)$/gm)].map((h) => anchorOf(h[1]!));
        if (!anchors.includes(anchor)) problems.push(`${page}: link to ${target}: no heading with that anchor`);
      }
    }
  }
  t.deepEqual(problems, []);
});
