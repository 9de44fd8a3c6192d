import test from 'ava';
import { BenchOptionsError, loadBenchOptions } from '../bench/options';

// The bench reads its settings with the server's engine: every problem at
// once, flags and BENCH_* variables alike, and server settings checked
// against the server's own table before a long run starts.

function problems(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  const err = (() => {
    try {
      loadBenchOptions(argv, env);
      return undefined;
    } catch (e) {
      return e;
    }
  })();
  if (!(err instanceof BenchOptionsError)) throw new Error(`expected a BenchOptionsError, got ${String(err)}`);
  return err.message;
}

test('defaults, smoke defaults, and flags over variables', (t) => {
  const full = loadBenchOptions([], {});
  t.is(full.sessions, 100000);
  t.deepEqual(full.concurrency, [1, 16, 64]);
  t.is(full.server, 'dist');
  // sessiond's own empty RPC is a call like the others, measured against the bare server, and first.
  t.is(full.ops[0], 'Empty');
  t.deepEqual(loadBenchOptions([], { BENCH_OPS: 'Empty,GetSession' }).ops, ['Empty', 'GetSession']);
  const smoke = loadBenchOptions(['--smoke'], {});
  t.true(smoke.smoke);
  t.is(smoke.sessions, 400);
  t.is(smoke.windowMs, 60);
  const both = loadBenchOptions(['--window', '3s'], { BENCH_WINDOW: '1s', BENCH_ROUNDS: '5' });
  t.is(both.windowMs, 3000);
  t.is(both.rounds, 5);
  t.true(full.postgres, 'the PostgreSQL rows are on by default');
  t.true(smoke.postgres, 'and in a smoke run, so that test 80 runs them');
  t.false(loadBenchOptions(['--postgres', 'off'], {}).postgres);
  t.false(loadBenchOptions([], { BENCH_POSTGRES: 'off' }).postgres);
  t.true(loadBenchOptions(['--postgres', 'on'], { BENCH_POSTGRES: 'off' }).postgres);
  const settings = loadBenchOptions([], { BENCH_SERVER_SETTINGS: 'cache-size=-65536, group-commit=false' });
  t.deepEqual(settings.serverSettings, { SESSIOND_CACHE_SIZE: '-65536', SESSIOND_GROUP_COMMIT: 'false' });
});

test('every bad bench setting is reported at once, by flag or variable', (t) => {
  const message = problems(['--window', 'soon', '--no-such-thing', '1', '--parts', 'micro,nope', '--ops', 'Bare'], { BENCH_ROUNDS: '0', BENCH_SERVER: 'docker', BENCH_POSTGRES: 'maybe' });
  t.regex(message, /--window.*"soon"/);
  t.regex(message, /--no-such-thing/);
  t.regex(message, /--parts.*nope/);
  t.regex(message, /--ops.*Bare/, 'the bare baseline is not a call of sessiond\'s');
  t.regex(message, /BENCH_ROUNDS/);
  t.regex(message, /BENCH_SERVER/);
  t.regex(message, /BENCH_POSTGRES.*"maybe"/);
  t.regex(message, /make bench settings/, 'the help follows the problems');
});

test('server settings are checked against the server table', (t) => {
  const message = problems(['--server-settings', 'cache-siz=1,cache-size=x,just-a-word']);
  t.regex(message, /--cache-siz is not a server setting/);
  t.regex(message, /--cache-size: .*x/);
  t.regex(message, /"just-a-word" is not flag=value/);
});
