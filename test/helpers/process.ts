import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');

export interface ServerProcess {
  proc: ChildProcessWithoutNullStreams;
  port: number;
  address: string;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  exited: Promise<number | string>;
}

/**
 * Starts `node --import tsx src/main.ts` as one process (so that signals reach
 * the server itself) and waits for its "serving" log line. `entry` replaces
 * the node arguments before `args` (e.g. ["dist/src/main.js"] with `cwd`);
 * `env` replaces the inherited environment and its defaults.
 * @throws when the process exits or stays silent for `timeoutMs` first.
 */
export function spawnServer(
  env: Record<string, string>,
  args: string[] = [],
  timeoutMs = 60_000,
  {
    cwd = ROOT,
    entry = ['--import', 'tsx', 'src/main.ts'],
    env: base = { ...process.env, SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_LOG_LEVEL: 'info' },
  }: { cwd?: string; entry?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [...entry, ...args], { cwd, env: { ...base, ...env } });
  let err = '';
  const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server did not start within ${timeoutMs}ms:\n${err}`));
    }, timeoutMs);
    proc.stdout.resume();
    proc.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      const m = /"msg":"serving","address":"([^"]+):(\d+)"/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, port: Number(m[2]), address: `127.0.0.1:${m[2]}`, stderr: () => err, exited });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before serving:\n${err}`));
    });
  });
}

/** Runs the server entry point to completion (for start-up failures); returns its exit code and stderr. */
export function runServerToExit(env: Record<string, string>, args: string[] = [], timeoutMs = 60_000): Promise<{ code: number | string; stderr: string }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, SESSIOND_LISTEN: '127.0.0.1:0', SESSIOND_LOG_LEVEL: 'info', ...env },
  });
  let stderr = '';
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  proc.stdout.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stderr });
    });
  });
}
