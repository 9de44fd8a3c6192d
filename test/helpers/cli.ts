import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { spawnServer, type ServerProcess } from './process';

export const BIN = join(__dirname, '..', '..', 'bin', 'sessiond.js');

export interface CliResult {
  /** The exit code, or the signal name. */
  code: number | string;
  stdout: string;
  stderr: string;
}

/** The parent's environment without SESSIOND_* variables, so that each run sees only what it is given. */
function cleanEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SESSIOND_')));
  return { ...base, ...env };
}

/*
 * At most two CLI processes at a time per test file: each starts Node and tsx,
 * and dozens at once on a small machine time out for want of CPU, not of anything we test.
 */
const MAX_RUNNING = 2;
let running = 0;
const waiting: (() => void)[] = [];

async function slot<T>(fn: () => Promise<T>): Promise<T> {
  // A finished run hands its slot straight to the next in line.
  if (running >= MAX_RUNNING) await new Promise<void>((resolve) => waiting.push(resolve));
  else running++;
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

/** Runs `node bin/sessiond.js ...args` to completion, as a user's shell would. */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return slot(() => runNow(args, env, timeoutMs));
}

function runNow(args: string[], env: Record<string, string>, timeoutMs: number): Promise<CliResult> {
  const proc = spawn(process.execPath, [BIN, ...args], { env: cleanEnv(env) });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    });
  });
}

/**
 * Starts `node bin/sessiond.js ...args` as a server and waits for its "serving"
 * line: spawnServer with the CLI as the entry point, and only the given
 * SESSIOND_* variables.
 */
export function spawnCliServer(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<ServerProcess> {
  return spawnServer({}, args, timeoutMs, { entry: [BIN], env: cleanEnv(env) });
}
