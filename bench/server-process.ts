/*
 * The server under test, as its own process: `node dist/src/main.js` (or
 * `node --import tsx src/main.ts`) is one PID, so /proc/<pid>/stat holds the
 * server's CPU time (every thread: the main loop, the checkpoint worker,
 * libuv's pool) and nothing of the load generator's.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..');

/** Clock ticks per second of utime/stime in /proc/<pid>/stat (USER_HZ, 100 on Linux almost everywhere). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of every thread of `pid`, in microseconds; resolution 1/CLK_TCK s. */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
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
  /** Resolves with the first stderr line matching `re` from now on (or already seen, with `seen`). */
  waitForLog(re: RegExp, timeoutMs: number): Promise<string>;
  /** SIGTERM, then waits for the exit (SIGKILL after 60 s); resolves with the exit code. */
  stop(): Promise<number | string>;
}

/**
 * Starts the server on `dbPath` with the bench service on, on a free loopback
 * port, and waits for its "serving" line. SESSIOND_* variables of the calling
 * shell are not passed on: the bench sets what it measures.
 */
let settings: Record<string, string> = {};
let nodeFlags: string[] = [];
let stdoutFile: string | undefined;
let entry = ['--import', 'tsx', 'src/main.ts'];

/**
 * Settings for every server started from now on: SESSIOND_* variables (under
 * what a part sets itself), node flags, where node's own stdout goes, and
 * whether the server runs compiled (dist/src/main.js, which buildServer()
 * makes) or from the sources through tsx.
 */
export function useServerSettings(env: Record<string, string>, node: { args?: string[]; stdout?: string; compiled?: boolean } = {}): void {
  settings = { ...env };
  nodeFlags = [...(node.args ?? [])];
  stdoutFile = node.stdout;
  entry = node.compiled ? [join('dist', 'src', 'main.js')] : ['--import', 'tsx', 'src/main.ts'];
}

/**
 * Compiles the server as the Docker image does (tsc -p tsconfig.build.json into
 * dist/), so that the figures are those of what runs in production: under tsx
 * the same server holds more memory (the loader, the transformed sources and
 * their source maps) and collects more garbage.
 */
export function buildServer(): void {
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}

export async function startServer(dbPath: string, env: Record<string, string>, cpuProfDir?: string): Promise<ServerProcess> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_') && !k.startsWith('BENCH_')));
  const nodeArgs = [...nodeFlags, ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [])];
  const proc: ChildProcessWithoutNullStreams = spawn(process.execPath, [...nodeArgs, ...entry], {
    cwd: ROOT,
    env: {
      ...inherited,
      SESSIOND_DB_PATH: dbPath,
      SESSIOND_LISTEN: '127.0.0.1:0',
      SESSIOND_LOG_LEVEL: 'info',
      SESSIOND_BENCH_SERVICE: 'true',
      ...settings,
      ...env,
    },
  });
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
  let stopping: Promise<number | string> | undefined;
  return {
    pid: proc.pid!,
    address: `127.0.0.1:${port}`,
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
