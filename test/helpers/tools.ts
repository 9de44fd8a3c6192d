import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';

/*
 * Tests that need a program from outside node_modules (protoc, python3 with
 * grpc, sqlite3, openssl, git, go, grpcurl). Where one is missing, the test
 * must not pass as if it had run: on a developer's machine it is registered
 * as skipped, so that TAP shows "# SKIP" and scripts/test.sh counts it; in CI
 * (TESTS_REQUIRE_TOOLS=1, set by .ci/run, which installs them all) it is registered
 * as a test that fails and names what is missing.
 */

/** True in CI, where every tool must be there. */
export const IN_CI = process.env['TESTS_REQUIRE_TOOLS'] === '1';

export interface Tool {
  /** What the test needs, as a person would install it (e.g. "sqlite3 (apt-get install sqlite3)"). */
  name: string;
  /** Whether it is usable here. */
  present: boolean;
  /**
   * False for a tool that CI cannot install (no package in the registries it
   * reaches): skipped visibly there too, rather than failing every run.
   */
  inCi?: boolean;
}

const probed = new Map<string, boolean>();

/** Whether `bin args…` runs and exits 0 (probed once per process). */
export function runs(bin: string, args: string[] = ['--version']): boolean {
  const key = [bin, ...args].join('\0');
  let ok = probed.get(key);
  if (ok === undefined) {
    const r = spawnSync(bin, args, { stdio: 'ignore', timeout: 30_000 });
    ok = !r.error && r.status === 0;
    probed.set(key, ok);
  }
  return ok;
}

/** A tool that is present when `bin args…` exits 0. */
export function tool(name: string, bin: string, args: string[] = ['--version'], inCi = true): Tool {
  return { name, present: runs(bin, args), inCi };
}

type Impl = (t: ExecutionContext) => unknown;
type Register = (title: string, impl: Impl) => void;

function gated(tools: Tool[], run: Register, skip: (title: string, impl: Impl) => void): Register {
  const missing = tools.filter((x) => !x.present);
  if (missing.length === 0) return run;
  const what = missing.map((x) => x.name).join(', ');
  if (IN_CI && missing.some((x) => x.inCi !== false)) return (title) => run(title, (t) => t.fail(`needs ${what}, which is not installed (TESTS_REQUIRE_TOOLS=1: every tool must be)`));
  return (title, impl) => skip(`${title} (needs ${what})`, impl);
}

/**
 * `test`, when every tool is present; otherwise a visible skip, or a failure
 * under TESTS_REQUIRE_TOOLS=1. Use as `requireTool(SQLITE3)('title', async (t) => …)`.
 */
export function requireTool(...tools: Tool[]): Register {
  return gated(tools, (title, impl) => test(title, impl), (title, impl) => test.skip(title, impl));
}

/** The same, registered with test.serial. */
export function requireToolSerial(...tools: Tool[]): Register {
  return gated(tools, (title, impl) => test.serial(title, impl), (title, impl) => test.serial.skip(title, impl));
}
