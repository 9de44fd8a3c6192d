import test, { type ExecutionContext } from 'ava';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, helpText, loadConfig, redactedConfig, type Config } from '../src/server/config';
import { envName, SETTINGS, type Spec } from '../src/server/settings';
import { runServerToExit } from './helpers/process';
import { tempDir } from './helpers/server';

/*
 * Configuration: the documented defaults, SESSIOND_* variables and --flags
 * (flags win), validation that lists every problem at once, and start-up
 * through the real entry point.
 */

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

function problemsOf(t: ExecutionContext, argv: string[], env: Record<string, string>): string[] {
  const err = t.throws(() => loadConfig(argv, env), { instanceOf: ConfigError }) as ConfigError | undefined;
  if (!err) throw new Error('expected a ConfigError');
  t.true(Array.isArray(err.problems));
  // The message lists every problem, too.
  for (const p of err.problems) t.true(err.message.includes(p), `message lacks the problem ${p}`);
  return err.problems;
}

/** Asserts that exactly one problem matches each pattern. */
function assertEachListed(t: ExecutionContext, problems: string[], patterns: RegExp[]) {
  for (const re of patterns) {
    const hits = problems.filter((p) => re.test(p));
    t.is(hits.length, 1, `expected one problem matching ${re}, got ${JSON.stringify(problems)}`);
  }
}

function cfg(argv: string[] = [], env: Record<string, string> = {}): Config {
  return loadConfig(argv, env).config;
}

test('defaults are the documented ones', (t) => {
  const { config, help } = loadConfig([], {});
  t.false(help);
  t.is(config.server.listen, '127.0.0.1:50051');
  t.is(config.storage.path, './data/sessions.db');
  t.is(config.storage.journalMode.toLowerCase(), 'wal');
  t.is(config.storage.synchronous.toUpperCase(), 'NORMAL');
  t.is(config.storage.cacheSize, -2000);
  t.is(config.storage.busyTimeoutMs, 5000);
  t.is(config.storage.walAutocheckpoint, 1000);
  t.true(config.storage.journalSizeLimit > 0, 'a journal_size_limit is set so the WAL shrinks back');
  t.is(config.policy.defaultTtlMs, 24 * HOUR);
  t.is(config.policy.defaultIdleTimeoutMs, 30 * MIN);
  // Limits the proto comments state.
  t.is(config.policy.maxTtlMs, 30 * DAY);
  t.is(config.policy.maxAttributes, 64);
  t.is(config.policy.maxAttributeKeyBytes, 256);
  t.is(config.policy.maxAttributeValueBytes, 4096);
  t.is(config.policy.maxIdBytes, 256);
  t.is(config.policy.maxUserAgentBytes, 1024);
  t.is(config.server.adminToken, undefined);
  t.true(config.server.reflection, 'reflection is on by default');
  t.true(config.sweepIntervalMs > 0);
  t.true(config.sweepBatchSize > 0);
});

test('environment variables set values', (t) => {
  const c = cfg([], {
    SESSIOND_LISTEN: '0.0.0.0:6000',
    SESSIOND_DB_PATH: '/var/lib/sessiond/s.db',
    SESSIOND_JOURNAL_MODE: 'delete',
    SESSIOND_SYNCHRONOUS: 'FULL',
    SESSIOND_CACHE_SIZE: '-4000',
    SESSIOND_BUSY_TIMEOUT: '2s',
    SESSIOND_WAL_AUTOCHECKPOINT: '0',
    SESSIOND_JOURNAL_SIZE_LIMIT: '64KiB',
    SESSIOND_DEFAULT_TTL: '12h',
    SESSIOND_DEFAULT_IDLE_TIMEOUT: '15m',
    SESSIOND_MAX_TTL: '7d',
    SESSIOND_TOUCH_THRESHOLD: '0.25',
    SESSIOND_MAX_ATTRIBUTES: '10',
    SESSIOND_SWEEP_INTERVAL: '30s',
    SESSIOND_SWEEP_BATCH_SIZE: '250',
    SESSIOND_ADMIN_TOKEN: 'a-long-enough-admin-token',
    SESSIOND_REFLECTION: 'false',
    SESSIOND_LOG_LEVEL: 'warn',
  });
  t.is(c.server.listen, '0.0.0.0:6000');
  t.is(c.storage.path, '/var/lib/sessiond/s.db');
  t.is(c.storage.journalMode, 'delete');
  t.is(c.storage.synchronous.toUpperCase(), 'FULL');
  t.is(c.storage.cacheSize, -4000);
  t.is(c.storage.busyTimeoutMs, 2000);
  t.is(c.storage.walAutocheckpoint, 0);
  t.is(c.storage.journalSizeLimit, 64 * 1024);
  t.is(c.policy.defaultTtlMs, 12 * HOUR);
  t.is(c.policy.defaultIdleTimeoutMs, 15 * MIN);
  t.is(c.policy.maxTtlMs, 7 * DAY);
  t.is(c.policy.touchThreshold, 0.25);
  t.is(c.policy.maxAttributes, 10);
  t.is(c.sweepIntervalMs, 30 * SEC);
  t.is(c.sweepBatchSize, 250);
  t.is(c.server.adminToken, 'a-long-enough-admin-token');
  t.false(c.server.reflection);
  t.is(c.logLevel, 'warn');
});

test('flags set values, in --flag=value and --flag value forms, and win over variables', (t) => {
  const env = { SESSIOND_CACHE_SIZE: '-4000', SESSIOND_LISTEN: '0.0.0.0:6000', SESSIOND_DEFAULT_TTL: '1h', SESSIOND_REFLECTION: 'true' };
  const c = cfg(['--cache-size=-8000', '--listen', '[::1]:7000', '--default-ttl', '90m', '--reflection', 'false', '--db-path=/tmp/x.db'], env);
  t.is(c.storage.cacheSize, -8000);
  t.is(c.server.listen, '[::1]:7000');
  t.is(c.policy.defaultTtlMs, 90 * MIN);
  t.false(c.server.reflection);
  t.is(c.storage.path, '/tmp/x.db');
  // A variable the flags do not override still applies.
  t.is(cfg(['--listen=127.0.0.1:1'], env).storage.cacheSize, -4000);
  // The negative value after a space is a value, not a flag.
  t.is(cfg(['--cache-size', '-3000']).storage.cacheSize, -3000);
  // A bare boolean flag means true, also before another flag.
  t.true(cfg(['--reflection', '--cache-size=1'], { SESSIOND_REFLECTION: 'false' }).server.reflection);
  t.true(cfg(['--reflection'], { SESSIOND_REFLECTION: 'off' }).server.reflection);
  // The last occurrence of a flag wins.
  t.is(cfg(['--cache-size=1', '--cache-size=2']).storage.cacheSize, 2);
  t.true(loadConfig(['--help'], {}).help);
  t.true(loadConfig(['-h'], {}).help);
});

test('durations parse in every unit and in combinations', (t) => {
  const ttl = (v: string) => cfg([`--default-ttl=${v}`, '--max-ttl=365d']).policy.defaultTtlMs;
  t.is(ttl('1500ms'), 1500);
  t.is(ttl('90s'), 90 * SEC);
  t.is(ttl('5m'), 5 * MIN);
  t.is(ttl('2h'), 2 * HOUR);
  t.is(ttl('7d'), 7 * DAY);
  t.is(ttl('1h30m'), 90 * MIN);
  t.is(ttl('1d2h3m4s5ms'), DAY + 2 * HOUR + 3 * MIN + 4 * SEC + 5);
  t.is(ttl('1.5h'), 90 * MIN);
  t.is(ttl(' 30s '), 30 * SEC);
  t.is(ttl('60000'), 60_000, 'a bare number is milliseconds');
  for (const bad of ['', 'abc', '5', '-5s', '5 s', '5x', 'h', '1e3s', '5sec', 'm5']) {
    const problems = problemsOf(t, [`--default-ttl=${bad}`], {});
    assertEachListed(t, problems, [/--default-ttl/]);
  }
  // Below the minimum and above the maximum are problems, naming the setting.
  assertEachListed(t, problemsOf(t, ['--busy-timeout=11m'], {}), [/--busy-timeout.*maximum/]);
  assertEachListed(t, problemsOf(t, ['--default-ttl=500ms'], {}), [/--default-ttl.*minimum/]);
});

test('sizes parse with and without units', (t) => {
  const limit = (v: string) => cfg([`--journal-size-limit=${v}`]).storage.journalSizeLimit;
  t.is(limit('4096'), 4096);
  t.is(limit('64KiB'), 64 * 1024);
  t.is(limit('8MiB'), 8 * 1024 * 1024);
  t.is(limit('1GiB'), 1024 ** 3);
  t.is(limit('10kb'), 10_000);
  t.is(limit('2MB'), 2_000_000);
  t.is(limit('-1'), -1, '-1 means no limit');
  t.is(cfg(['--max-message-bytes=16MiB']).server.maxMessageBytes, 16 * 1024 * 1024);
  for (const bad of ['', 'big', '1.5MiB', '10XB', 'MiB']) {
    assertEachListed(t, problemsOf(t, [`--journal-size-limit=${bad}`], {}), [/--journal-size-limit/]);
  }
  assertEachListed(t, problemsOf(t, ['--journal-size-limit=-2'], {}), [/--journal-size-limit.*minimum/]);
  assertEachListed(t, problemsOf(t, ['--max-message-bytes=1GiB'], {}), [/--max-message-bytes.*maximum/]);
});

test('every problem is listed at once', (t) => {
  const problems = problemsOf(
    t,
    ['--busy-timeout=soon', '--listen=nowhere', '--log-level=loud', '--touch-threshold=2', '--bogus-flag=1', 'stray'],
    {
      SESSIOND_CACHE_SIZE: 'abc',
      SESSIOND_SYNCHRONOUS: 'sometimes',
      SESSIOND_REFLECTION: 'maybe',
      SESSIOND_MAX_ATTRIBUTES: '1.5',
      SESSIOND_SWEEP_BATCH_SIZE: '0',
      SESSIOND_ADMIN_TOKEN: 'Tk-9q2x',
      SESSIOND_DEFAULT_TTL: '40d',
      SESSIOND_KEEPALIVE_TIME: '15s',
      SESSIOND_KEEPALIVE_TIMEOUT: '20s',
      SESSIOND_NOT_A_SETTING: 'x',
    },
  );
  assertEachListed(t, problems, [
    /--busy-timeout/,
    /listen/,
    /--log-level/,
    /--touch-threshold/,
    /--bogus-flag/,
    /stray/,
    /SESSIOND_CACHE_SIZE/,
    /SESSIOND_SYNCHRONOUS/,
    /SESSIOND_REFLECTION/,
    /SESSIOND_MAX_ATTRIBUTES/,
    /SESSIOND_SWEEP_BATCH_SIZE/,
    /admin-token/,
    /default-ttl.*max-ttl/,
    /keepalive-timeout/,
    /SESSIOND_NOT_A_SETTING/,
  ]);
  t.is(problems.length, 15, JSON.stringify(problems, null, 2));
  // The bad admin token itself is never echoed.
  t.false(problems.some((p) => p.includes('Tk-9q2x')), 'the admin token value appears in a problem');
});

test('problems that depend on several settings are listed alongside problems with single values', (t) => {
  // Each alone...
  assertEachListed(t, problemsOf(t, ['--listen=nowhere'], {}), [/listen/]);
  assertEachListed(t, problemsOf(t, ['--default-idle-timeout=2h', '--max-ttl=1h'], {}), [/default-idle-timeout.*max-ttl/]);
  assertEachListed(t, problemsOf(t, ['--db-path='], {}), [/db-path/]);
  assertEachListed(t, problemsOf(t, ['--db-path=:memory:'], {}), [/db-path/]);
  assertEachListed(t, problemsOf(t, ['--listen=127.0.0.1:70000'], {}), [/listen/]);
  // ...and together with an unrelated bad value.
  const problems = problemsOf(t, ['--listen=nowhere', '--db-path=', '--cache-size=x'], {});
  assertEachListed(t, problems, [/listen/, /db-path/, /--cache-size/]);
});

test('unknown variables and flags are problems, with a suggestion when close to a real name', (t) => {
  const problems = problemsOf(t, ['--db-pat=/tmp/x', '--lisen', '127.0.0.1:1', '--completely-unrelated'], {
    SESSIOND_CACHE_SIZ: '10',
    SESSIOND_ZZZZZZZZZZZZ: '1',
    OTHER_VARIABLE: 'ignored',
  });
  assertEachListed(t, problems, [
    /--db-pat\b.*did you mean --db-path/,
    /--lisen\b.*did you mean --listen/,
    /SESSIOND_CACHE_SIZ\b.*SESSIOND_CACHE_SIZE/,
  ]);
  const unrelated = problems.find((p) => p.includes('--completely-unrelated'));
  t.truthy(unrelated);
  t.false(/did you mean/.test(unrelated!), 'no suggestion for a name far from any setting');
  const zz = problems.find((p) => p.includes('SESSIOND_ZZZZZZZZZZZZ'));
  t.truthy(zz);
  t.false(/did you mean/.test(zz!));
  t.false(problems.some((p) => p.includes('OTHER_VARIABLE')), 'variables without the SESSIOND_ prefix are not ours');
  // The value of an unknown flag given as a separate argument is not a stray argument.
  t.is(problems.length, 5, JSON.stringify(problems));
});

test('integer pragmas are bounded to what SQLite applies, instead of wrapping silently', (t) => {
  t.is(cfg(['--cache-size=2147483647']).storage.cacheSize, 2147483647);
  t.is(cfg(['--cache-size=-2147483648']).storage.cacheSize, -2147483648);
  t.is(cfg(['--wal-autocheckpoint=2147483647']).storage.walAutocheckpoint, 2147483647);
  // 2^31 pages would reach SQLite as -2^31 KiB: a sign flip, not a cap.
  assertEachListed(t, problemsOf(t, ['--cache-size=2147483648'], {}), [/--cache-size.*maximum/]);
  assertEachListed(t, problemsOf(t, ['--cache-size=-2147483649'], {}), [/--cache-size.*minimum/]);
  assertEachListed(t, problemsOf(t, ['--wal-autocheckpoint=4294967297'], {}), [/--wal-autocheckpoint.*maximum/]);
  assertEachListed(t, problemsOf(t, ['--wal-autocheckpoint=-1'], {}), [/--wal-autocheckpoint.*minimum/]);
});

test('a flag without its value is a problem', (t) => {
  assertEachListed(t, problemsOf(t, ['--listen'], {}), [/--listen.*value/]);
});

test('enums are case-insensitive and checked', (t) => {
  t.is(cfg(['--synchronous=EXTRA']).storage.synchronous.toUpperCase(), 'EXTRA');
  t.is(cfg(['--journal-mode=WAL']).storage.journalMode.toLowerCase(), 'wal');
  assertEachListed(t, problemsOf(t, ['--journal-mode=memory'], {}), [/--journal-mode/]);
});

test('the returned config is deeply frozen', (t) => {
  const c = cfg();
  for (const o of [c, c.server, c.storage, c.policy]) t.true(Object.isFrozen(o));
  t.false(Reflect.set(c.storage as object, 'path', '/elsewhere'));
  t.is(c.storage.path, './data/sessions.db');
  t.false(Reflect.set(c.policy as object, 'maxAttributes', 1_000_000));
  t.is(c.policy.maxAttributes, 64);
  // And a second load is independent of the first.
  t.is(cfg(['--max-attributes=3']).policy.maxAttributes, 3);
  t.is(cfg().policy.maxAttributes, 64);
});

test('the redacted config hides the admin token', (t) => {
  const c = cfg(['--admin-token=super-secret-admin-token-1234']);
  t.is(c.server.adminToken, 'super-secret-admin-token-1234');
  t.false(JSON.stringify(redactedConfig(c)).includes('super-secret-admin-token-1234'));
});

test('start-up with a bad configuration exits 2 and lists every problem on stderr', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runServerToExit(
    { SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_CACHE_SIZE: 'abc', SESSIOND_SYNCHRONOUS: 'sometimes' },
    ['--busy-timeout=soon', '--no-such-flag'],
  );
  t.is(r.code, 2, r.stderr);
  for (const needle of ['SESSIOND_CACHE_SIZE', 'SESSIOND_SYNCHRONOUS', '--busy-timeout', '--no-such-flag']) {
    t.true(r.stderr.includes(needle), `stderr lacks ${needle}:\n${r.stderr}`);
  }
  t.false(r.stderr.includes('"msg":"serving"'));
});

test('start-up with only a bad listen address exits 2', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runServerToExit({ SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_LISTEN: 'no-port-here' });
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /listen/);
});

const MEASUREMENT_ONLY = ['group-commit', 'off-loop-fsync', 'durable-revocations', 'checkpoint-worker', 'bench-service'];

test('--help prints every setting but the measurement-only ones, and exits 0 without starting', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runServerToExit({ SESSIOND_DB_PATH: join(dir, 'sessions.db') }, ['--help']);
  t.is(r.code, 0, r.stderr);
  for (const s of SETTINGS as readonly Spec[]) {
    const listed = new RegExp(`--${s.flag} <`).test(r.stderr);
    t.is(listed, !s.measurementOnly, `--${s.flag} ${s.measurementOnly ? 'is measurement-only, yet listed' : 'is not listed'}`);
    if (!s.measurementOnly) t.true(r.stderr.includes(envName(s.flag)), `help lacks ${envName(s.flag)}`);
  }
  t.deepEqual((SETTINGS as readonly Spec[]).filter((s) => s.measurementOnly).map((s) => s.flag), MEASUREMENT_ONLY);
  t.false(r.stderr.includes('"msg":"serving"'));
});

test('the measurement-only switches, left out of --help, still parse as flags and as variables', (t) => {
  for (const flag of MEASUREMENT_ONLY) t.false(helpText().includes(`--${flag}`), `--help names --${flag}`);
  const byFlag = cfg(['--group-commit=false', '--off-loop-fsync', 'false', '--durable-revocations=no', '--checkpoint-worker=0', '--bench-service']);
  t.deepEqual(
    [byFlag.storage.groupCommit, byFlag.storage.offLoopFsync, byFlag.storage.durableRevocations, byFlag.storage.checkpointWorker, byFlag.benchService],
    [false, false, false, false, true],
  );
  const byVariable = cfg([], { SESSIOND_GROUP_COMMIT: 'off', SESSIOND_OFF_LOOP_FSYNC: 'false', SESSIOND_DURABLE_REVOCATIONS: '0', SESSIOND_CHECKPOINT_WORKER: 'no', SESSIOND_BENCH_SERVICE: 'true' });
  t.deepEqual(
    [byVariable.storage.groupCommit, byVariable.storage.offLoopFsync, byVariable.storage.durableRevocations, byVariable.storage.checkpointWorker, byVariable.benchService],
    [false, false, false, false, true],
  );
  const defaults = cfg();
  t.deepEqual([defaults.storage.groupCommit, defaults.storage.offLoopFsync, defaults.storage.durableRevocations, defaults.storage.checkpointWorker, defaults.benchService], [true, true, true, true, false]);
  assertEachListed(t, problemsOf(t, ['--group-commit=sometimes'], {}), [/--group-commit.*boolean/]);
});

test('a value problem names the flag and the variable, whichever was given', (t) => {
  assertEachListed(t, problemsOf(t, ['--cache-size=x'], {}), [/^--cache-size \(variable SESSIOND_CACHE_SIZE\): "x" is not an integer$/]);
  assertEachListed(t, problemsOf(t, [], { SESSIOND_CACHE_SIZE: 'x' }), [/^SESSIOND_CACHE_SIZE \(flag --cache-size\): "x" is not an integer$/]);
  // The flag wins, so its value is the one in question.
  assertEachListed(t, problemsOf(t, ['--cache-size=y'], { SESSIOND_CACHE_SIZE: '1' }), [/^--cache-size .*"y"/]);
  // A string flag followed by another flag has no value; parseArgs alone would take "--tls-key" as it.
  assertEachListed(t, problemsOf(t, ['--tls-cert', '--tls-key=k.pem'], {}), [/^--tls-cert needs a value, and "--tls-key=k.pem" is taken for a flag/]);
  // Unless it is a secret meant as the value.
  const secret = problemsOf(t, ['--admin-token', '--Zq9-token-like-value'], {});
  assertEachListed(t, secret, [/^--admin-token needs a value/]);
  t.false(secret.some((p) => p.includes('Zq9-token-like-value')), JSON.stringify(secret));
});

test('every duration has a maximum a Node timer keeps, and one past it is refused at start-up naming the setting', async (t) => {
  const durations = (SETTINGS as readonly Spec[]).filter((s) => s.kind === 'duration');
  t.true(durations.length >= 10);
  for (const s of durations) {
    t.true(s.max !== undefined, `--${s.flag} has a maximum`);
    // Lifetimes are stored as expiry times, and event retention is a cutoff the sweep computes: not armed as timers.
    if (!['default-ttl', 'default-idle-timeout', 'max-ttl', 'events-retention'].includes(s.flag)) t.true(s.max! < 2 ** 31, `--${s.flag}: ${s.max} ms is more than a Node timer keeps`);
  }
  t.is(cfg(['--keepalive-time=24d', '--sweep-interval=24d']).server.keepaliveTimeMs, 24 * DAY);
  assertEachListed(t, problemsOf(t, ['--max-connection-age=23d'], {}), [/--max-connection-age .*above the maximum of 22d/]);
  assertEachListed(t, problemsOf(t, ['--max-ttl=3651d'], {}), [/--max-ttl .*above the maximum of 3650d/]);

  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runServerToExit({ SESSIOND_DB_PATH: join(dir, 'sessions.db'), SESSIOND_KEEPALIVE_TIME: '30d' }, ['--keepalive-timeout=25d', '--sweep-interval', '25d']);
  t.is(r.code, 2, r.stderr);
  for (const line of [
    'SESSIOND_KEEPALIVE_TIME (flag --keepalive-time): 30d (2592000000ms) is above the maximum of 24d',
    '--keepalive-timeout (variable SESSIOND_KEEPALIVE_TIMEOUT): 25d (2160000000ms) is above the maximum of 24d',
    '--sweep-interval (variable SESSIOND_SWEEP_INTERVAL): 25d (2160000000ms) is above the maximum of 24d',
  ]) t.true(r.stderr.includes(line), `stderr lacks ${line}:\n${r.stderr}`);
  t.false(r.stderr.includes('"msg":"serving"'));
});

test('storage postgres takes its settings, and needs a database URL', (t) => {
  const c = cfg(['--storage', 'postgres'], {
    SESSIOND_DATABASE_URL: 'postgres://sessiond:s3cret-pw@db-a:5432,db-b:5432/sessiond?target_session_attrs=read-write',
    SESSIOND_DATABASE_POOL_SIZE: '25', SESSIOND_DATABASE_STATEMENT_TIMEOUT: '2s', SESSIOND_DATABASE_CONNECT_TIMEOUT: '750ms',
  });
  t.is(c.backend, 'postgres');
  t.like(c.postgres, { poolSize: 25, statementTimeoutMs: 2000, connectTimeoutMs: 750 });
  t.is(cfg().backend, 'sqlite');
  t.is(cfg().postgres, undefined);
  assertEachListed(t, problemsOf(t, ['--storage', 'postgres'], {}), [/^storage postgres needs database-url/]);
  assertEachListed(t, problemsOf(t, ['--storage', 'mysql'], {}), [/storage/]);
});

test('a bad database URL is named without quoting it, and a URL without the postgres backend is a problem', (t) => {
  const secret = 'hunter2-not-to-be-echoed';
  for (const [url, pattern] of [
    [`mysql://u:${secret}@db/x`, /^database-url must start with postgres:\/\/ or postgresql:\/\/ \(got mysql:\/\/\)$/],
    [`postgres://u:${secret}@/x`, /^database-url names no host/],
    [`postgres://u:${secret}@db:99999/x`, /^database-url has a host with a port that is not 1-65535$/],
    [`postgres://u:${secret}@db:5432,/x`, /^database-url names no host/],
  ] as const) {
    const problems = problemsOf(t, ['--storage', 'postgres', '--database-url', url], {});
    assertEachListed(t, problems, [pattern]);
    t.false(problems.join('\n').includes(secret), 'the password is never echoed');
  }
  assertEachListed(t, problemsOf(t, [], { SESSIOND_DATABASE_URL: 'postgres://db/x' }), [/^database-url is set but storage is sqlite/]);
});

test('the redacted config hides the database password, in the userinfo and as a query parameter', (t) => {
  for (const url of ['postgres://sessiond:pw-in-userinfo@db:5432/sessiond', 'postgresql://db:5432/sessiond?sslmode=require&password=pw-in-query']) {
    const shown = JSON.stringify(redactedConfig(cfg(['--storage', 'postgres', '--database-url', url])));
    t.false(shown.includes('pw-in-'), shown);
    t.true(shown.includes('[redacted]'));
  }
});
