/*
 * The server under test, as its own process: `node dist/src/main.js` (or
 * `node --import tsx src/main.ts`) is one PID, so /proc/<pid>/stat holds the
 * server's CPU time (every thread: the main loop, the checkpoint worker,
 * libuv's pool) and nothing of the load generator's.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { apiKeySha256, newApiKey } from '../src/shared/api-keys';

const ROOT = join(__dirname, '..');

/** Clock ticks per second of utime/stime in /proc/<pid>/stat (USER_HZ, 100 on Linux almost everywhere). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of every thread of `pid` (or of the task whose stat file is given), in microseconds; resolution 1/CLK_TCK s. */
export function cpuMicros(pid: number, statFile = `/proc/${pid}/stat`): number {
  const stat = readFileSync(statFile, 'utf8');
  // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1e6) / CLK_TCK;
}

/** VmRSS (resident now) and VmHWM (peak resident) of `pid`, in bytes. */
export function memory(pid: number): { rssBytes: number; peakRssBytes: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rssBytes: kib('VmRSS'), peakRssBytes: kib('VmHWM') };
}

export interface ServerProcess {
  readonly pid: number;
  readonly address: string;
  /** The API key of the bench's backend principal, for session calls; undefined for the bare server. */
  readonly apiKey: string | undefined;
  /** The API key of the bench's operator principal, for admin calls. */
  readonly adminKey: string | undefined;
  /** Resolves with the first stderr line matching `re` from now on (or already seen, with `seen`). */
  waitForLog(re: RegExp, timeoutMs: number): Promise<string>;
  /** SIGTERM, then waits for the exit (SIGKILL after 60 s); resolves with the exit code. */
  stop(): Promise<number | string>;
}

/** A principals file every sessiond server the bench starts is given, and the key of each principal in it. */
export interface BenchCallers {
  readonly file: string;
  readonly apiKey: string;
  readonly adminKey: string;
}

/**
 * Writes the principals file of the bench's servers into `dir`: a backend with
 * sessions.read, write and validate on every server_id, the caller of every
 * measured call, and an operator with admin for the admin calls of the stall
 * part. A real deployment has principals, and naming the caller by its key is
 * part of each call's cost; in protected mode it would be a loopback check.
 */
export function writeBenchCallers(dir: string): BenchCallers {
  const apiKey = newApiKey();
  const adminKey = newApiKey();
  const principals = [
    { name: 'bench-backend', api_key_sha256: [apiKeySha256(apiKey)], server_ids: ['*'], permissions: ['sessions.read', 'sessions.write', 'sessions.validate'] },
    { name: 'bench-operator', api_key_sha256: [apiKeySha256(adminKey)], server_ids: ['*'], permissions: ['admin'] },
  ];
  const file = join(dir, 'principals.json');
  writeFileSync(file, JSON.stringify({ principals }), { mode: 0o600 });
  return { file, apiKey, adminKey };
}

let settings: Record<string, string> = {};
let nodeFlags: string[] = [];
let stdoutFile: string | undefined;
let compiled = false;
let callers: BenchCallers | undefined;

/**
 * Settings for every server started from now on: SESSIOND_* variables (under
 * what a part sets itself), node flags, where node's own stdout goes, whether
 * the servers run compiled (dist/, which buildServer() makes) or from the
 * sources through tsx, and the principals sessiond serves.
 */
export function useServerSettings(env: Record<string, string>, node: { args?: string[]; stdout?: string | undefined; compiled?: boolean; callers?: BenchCallers } = {}): void {
  settings = { ...env };
  nodeFlags = [...(node.args ?? [])];
  stdoutFile = node.stdout;
  compiled = node.compiled ?? false;
  callers = node.callers;
}

/** How node runs a source file of the repository (a path without its extension, from the root). */
function entryOf(source: string): string[] {
  return compiled ? [join('dist', `${source}.js`)] : ['--import', 'tsx', `${source}.ts`];
}

const tsc = (args: string[]) => execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), ...args], { cwd: ROOT, stdio: 'inherit' });

/**
 * Compiles the server as the Docker image does (tsc -p tsconfig.build.json into
 * dist/), so that the figures are those of what runs in production: under tsx
 * the same server holds more memory (the loader, the transformed sources and
 * their source maps) and collects more garbage. The bare baseline server is
 * compiled beside it (dist/bench/bare-server.js) with the same compiler
 * options, so that it runs the same way; tsconfig.build.json leaves bench/ out.
 * So is the threads experiment's stream server (bench/stream-threads-server.ts).
 */
export function buildServer(): void {
  tsc(['-p', 'tsconfig.build.json']);
  tsc(['--target', 'ES2022', '--module', 'node16', '--moduleResolution', 'node16', '--strict', '--esModuleInterop', '--skipLibCheck',
    '--types', 'node', '--sourceMap', '--rootDir', '.', '--outDir', 'dist', join('bench', 'bare-server.ts'),
    join('bench', 'stream-threads-server.ts'), join('bench', 'stream-lookup-worker.ts')]);
}

/**
 * Starts the server on `dbPath` with the bench service on, on a free loopback
 * port, and waits for its "serving" line. SESSIOND_* variables of the calling
 * shell are not passed on: the bench sets what it measures.
 */
export function startServer(dbPath: string, env: Record<string, string>, cpuProfDir?: string): Promise<ServerProcess> {
  return spawnServer(entryOf(join('src', 'main')), {
    SESSIOND_DB_PATH: dbPath,
    SESSIOND_LISTEN: '127.0.0.1:0',
    SESSIOND_LOG_LEVEL: 'info',
    SESSIOND_BENCH_SERVICE: 'true',
    ...(callers ? { SESSIOND_PRINCIPALS_FILE: callers.file } : {}),
    ...settings,
    ...env,
  }, cpuProfDir, callers);
}

/** Starts the bare grpc-js baseline (bench/bare-server.ts) on a free loopback port. */
export function startBareServer(cpuProfDir?: string): Promise<ServerProcess> {
  return spawnServer(entryOf(join('bench', 'bare-server')), { BARE_LISTEN: '127.0.0.1:0' }, cpuProfDir, undefined);
}

/**
 * Starts the threads experiment's stream server (bench/stream-threads-server.ts)
 * on `dbPath`, its lookups on the main thread (threads 0) or on that many worker threads.
 */
export function startStreamThreadsServer(dbPath: string, threads: number, cpuProfDir?: string): Promise<ServerProcess> {
  return spawnServer(entryOf(join('bench', 'stream-threads-server')), { STREAM_DB: dbPath, STREAM_THREADS: String(threads), STREAM_LISTEN: '127.0.0.1:0' }, cpuProfDir, undefined);
}

async function spawnServer(entry: string[], env: Record<string, string>, cpuProfDir: string | undefined, keys: BenchCallers | undefined): Promise<ServerProcess> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_') && !k.startsWith('BENCH_')));
  const nodeArgs = [...nodeFlags, ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [])];
  const proc: ChildProcessWithoutNullStreams = spawn(process.execPath, [...nodeArgs, ...entry], { cwd: ROOT, env: { ...inherited, ...env } });
  // The server logs to stderr; stdout carries only what node itself prints
  // (--trace-gc and the like, from BENCH_SERVER_NODE_ARGS), kept when asked for.
  if (stdoutFile) proc.stdout.pipe(createWriteStream(stdoutFile, { flags: 'a' }));
  else proc.stdout.resume();
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  let partial = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      if (lines.length > 1000) lines.shift();
      for (const l of [...listeners]) l(line);
    }
  });
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));

  const waitForLog = (re: RegExp, timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const done = (fn: () => void) => {
        clearTimeout(timer);
        listeners.delete(listener);
        fn();
      };
      const listener = (line: string) => {
        if (re.test(line)) done(() => resolve(line));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`server log never matched ${re} within ${timeoutMs}ms; last lines:\n${lines.slice(-10).join('\n')}`))), timeoutMs);
      listeners.add(listener);
      void exited.then((code) => done(() => reject(new Error(`server exited (${code}) before its log matched ${re}:\n${lines.slice(-20).join('\n')}`))));
    });

  const serving = await waitForLog(/"msg":"serving"/, 60_000).catch((err: unknown) => {
    proc.kill('SIGKILL');
    throw err;
  });
  const port = /"address":"[^"]*:(\d+)"/.exec(serving)?.[1];
  if (!port) {
    proc.kill('SIGKILL');
    throw new Error(`no port in the serving line: ${serving}`);
  }
  // A server that lost its principals would measure the loopback check instead of the key lookup.
  if (keys && !/"principals":2[,}]/.test(serving)) {
    proc.kill('SIGKILL');
    throw new Error(`the server did not load the bench's two principals: ${serving}`);
  }
  let stopping: Promise<number | string> | undefined;
  return {
    pid: proc.pid!,
    address: `127.0.0.1:${port}`,
    apiKey: keys?.apiKey,
    adminKey: keys?.adminKey,
    waitForLog,
    stop() {
      stopping ??= (async () => {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
        const code = await exited;
        clearTimeout(timer);
        return code;
      })();
      return stopping;
    },
  };
}
