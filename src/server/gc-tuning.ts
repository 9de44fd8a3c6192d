import { setFlagsFromString } from 'node:v8';

/*
 * Node's HTTP/2 layer hands every request header value that is not in HPACK's
 * static table (:path, :authority, content-type, te, user-agent, the grpc-*
 * headers) to JavaScript as an external string, and V8 allocates external
 * strings in old space. So each call leaves a few of them there, and only a
 * major collection frees them: it finalizes every one inside its pause, then
 * evacuates the pages they left sparse. By default V8 lets old space grow to
 * several times its live size between major collections, so under a steady
 * load they come seldom, each with much garbage to finalize in one long pause
 * of the event loop. Capping the growth at 10 % makes them come more often
 * with less garbage each: shorter worst pauses, for a slightly larger share of
 * the loop's time spent in pauses. V8 reads the flag at each collection, so
 * setting it at start-up covers the whole run.
 */
export const HEAP_GROWING_PERCENT = 10;

const GIVEN = /^--heap[-_]growing[-_]percent(=|$)/;

/**
 * The V8 flag to set, or undefined when the operator passed one on node's
 * command line. Only there: node refuses to start with it in NODE_OPTIONS.
 */
export function heapGrowthFlag(execArgv: readonly string[]): string | undefined {
  return execArgv.some((arg) => GIVEN.test(arg)) ? undefined : `--heap-growing-percent=${HEAP_GROWING_PERCENT}`;
}

/** Applies heapGrowthFlag to this process; the server's entry points call it before anything else. */
export function tuneGc(): void {
  const flag = heapGrowthFlag(process.execArgv);
  if (flag) setFlagsFromString(flag);
}
