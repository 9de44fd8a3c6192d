import test from 'ava';
import { Client, credentials, makeGenericClientConstructor, status, type ServiceError } from '@grpc/grpc-js';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BARE_PING_PATH } from '../bench/bare-server';
import { median } from '../bench/load';
import { OPS, type BenchOptions } from '../bench/options';
import { POSTGRES_CONFIGS } from '../bench/postgres';
import type { BenchResults } from '../bench/report';
import type { Summary } from '../bench/load';
import { startBareServer } from '../bench/server-process';
import type { UnaryRow } from '../bench/unary';
import type { LoopDelayFigures } from '../src/transport/bench-service';
import { startTestServer, tempDir } from './helpers/server';
import { requireTool, tool } from './helpers/tools';

/*
 * `make bench` end to end with tiny fills and windows (BENCH_SMOKE=1): servers
 * as their own processes, the bench-only service, Redis when installed, and
 * PostgreSQL (required: a bench that cannot start it fails, and so does this).
 * It checks that every figure is there and sane; never how fast anything is.
 * Every call is measured against a bare grpc-js server (bench/bare-server.ts).
 */

const ROOT = join(__dirname, '..');

function runSmokeBench(out: string): Promise<{ code: number | null; output: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BENCH_') && !k.startsWith('SESSIOND_')));
  const proc = spawn(process.execPath, ['--import', 'tsx', 'bench/main.ts'], { cwd: ROOT, env: { ...env, BENCH_SMOKE: '1', BENCH_OUT: out } });
  let output = '';
  proc.stdout.on('data', (c: Buffer) => (output += c.toString()));
  proc.stderr.on('data', (c: Buffer) => (output += c.toString()));
  return new Promise((resolve) => proc.on('exit', (code) => resolve({ code, output })));
}

const finitePositive = (n: unknown) => typeof n === 'number' && Number.isFinite(n) && n > 0;
const close = (a: number | null, b: number) => a !== null && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));

/** The ratios of a row are its call's figures over the bare server's, from the same run's windows. */
function ratiosToBare(row: UnaryRow, what: string): string[] {
  const problems: string[] = [];
  if (!close(row.ratio.rate, median(row.roundRatios))) problems.push(`${what}: rate ratio ${row.ratio.rate} is not the median of ${row.roundRatios.join(', ')}`);
  if (!close(row.ratio.p99, row.call.p99Ms / row.bare.p99Ms)) problems.push(`${what}: p99 ratio ${row.ratio.p99} is not ${row.call.p99Ms} / ${row.bare.p99Ms}`);
  // CPU comes in clock ticks (10 ms): a tiny window may see none, and then no ratio is claimed.
  const ticks = row.call.cpuUsPerCall! > 0 && row.bare.cpuUsPerCall! > 0;
  if (ticks ? !close(row.ratio.cpu, row.call.cpuUsPerCall! / row.bare.cpuUsPerCall!) : row.ratio.cpu !== null) problems.push(`${what}: cpu ratio ${row.ratio.cpu}`);
  return problems;
}

function saneSummary(s: Summary, what: string, cpu: boolean): string[] {
  const problems: string[] = [];
  if (!(s.calls > 0)) problems.push(`${what}: no calls`);
  if (s.errors !== 0) problems.push(`${what}: ${s.errors} errors (${s.firstError})`);
  if (!finitePositive(s.rate)) problems.push(`${what}: rate ${s.rate}`);
  if (!finitePositive(s.p50Ms)) problems.push(`${what}: p50 ${s.p50Ms}`);
  if (!(s.p99Ms >= s.p50Ms)) problems.push(`${what}: p99 ${s.p99Ms} < p50 ${s.p50Ms}`);
  if (cpu && !(typeof s.cpuUsPerCall === 'number' && s.cpuUsPerCall >= 0 && Number.isFinite(s.cpuUsPerCall))) problems.push(`${what}: cpu ${s.cpuUsPerCall}`);
  return problems;
}

/** The one smoke run both tests below read, started by the first to ask. */
let smoke: Promise<{ code: number | null; output: string; results: () => BenchResults }> | undefined;
let smokeDir: string | undefined;
function smokeRun() {
  smokeDir ??= tempDir('sessiond-bench-smoke-');
  const out = join(smokeDir, 'smoke.json');
  smoke ??= runSmokeBench(out).then(({ code, output }) => ({ code, output, results: () => JSON.parse(readFileSync(out, 'utf8')) as BenchResults }));
  return smoke;
}
test.after.always(() => smokeDir && rmSync(smokeDir, { recursive: true, force: true }));

// Optional for the bench (it reports the comparison as skipped without it), and
// not among the packages .ci/run installs: a visible skip where it is missing.
const REDIS = tool('redis-server (apt-get install redis-server)', 'redis-server', ['--version']);

requireTool(REDIS)('the smoke bench compares streaming validation with Redis GET when redis-server is installed', async (t) => {
  t.timeout(240_000);
  const { code, output, results } = await smokeRun();
  t.is(code, 0, output);
  const redis = results().streaming!.redis;
  t.true('version' in redis, JSON.stringify(redis));
  t.regex(output, /- redis-server \S+/);
});

test('the smoke bench runs end to end and reports every figure with sane values', async (t) => {
  t.timeout(240_000);
  const { code, output, results } = await smokeRun();
  t.is(code, 0, output);
  t.regex(output, /Targets/);
  const r = results();
  const o: BenchOptions = r.options;
  t.true(o.smoke);
  const problems: string[] = [];

  // Unary: every call at every concurrency on the NORMAL server, CreateSession on the FULL one too.
  const expected = [...OPS.map((op) => [op, 'NORMAL'] as const), ['CreateSession', 'FULL'] as const];
  for (const c of o.concurrency) {
    for (const [op, sync] of expected) {
      const row = r.unary.find((u) => u.op === op && u.synchronous === sync && u.concurrency === c && u.variant === undefined);
      const what = `${op} ${sync} c=${c}`;
      if (!row) {
        problems.push(`${what}: missing`);
        continue;
      }
      problems.push(...saneSummary(row.call, what, true), ...saneSummary(row.bare, `${what} (bare)`, true), ...ratiosToBare(row, what));
      if (row.roundRatios.length !== o.rounds) problems.push(`${what}: ${row.roundRatios.length} round ratios`);
      if (!finitePositive(row.ratio.rate)) problems.push(`${what}: rate ratio ${row.ratio.rate}`);
      if (!finitePositive(row.ratio.p99)) problems.push(`${what}: p99 ratio ${row.ratio.p99}`);
      if (op === 'ValidateSession+touch' && !(row.touchWriteShare! >= 0 && row.touchWriteShare! <= 1)) problems.push(`${what}: touch write share ${row.touchWriteShare}`);
    }
  }

  // The baseline is the bare server in a process of its own, run as the sessiond servers are; sessiond's
  // own empty RPC is a row of its own, and the bare server's CPU was read (not sessiond's) in its windows.
  t.deepEqual(r.meta['baseline'], { server: 'bench/bare-server.ts', rpc: BARE_PING_PATH, runs: 'node dist/bench/bare-server.js' });
  t.true(OPS[0] === 'Empty' && o.ops.includes('Empty'), 'sessiond\'s empty RPC is measured by default');
  const top = Math.max(...o.concurrency);
  const normal = r.unary.filter((u) => u.storage === 'sqlite' && u.synchronous === 'NORMAL' && !u.variant && u.concurrency === top);
  t.true(normal.some((u) => u.bare.cpuUsPerCall! > 0), 'the bare server\'s CPU shows in its windows');
  t.regex(output, /bare grpc-js empty RPC \(the baseline, mean of its windows\) +NORMAL +1 +\d+/);
  t.regex(output, /sessiond's empty RPC +NORMAL +\d+ +\d+/);
  t.regex(output, /x bare rate +x bare p99 +x bare CPU/);

  // PostgreSQL: every call at every concurrency on one replica and on two, each against the bare server's empty RPC.
  t.true(o.postgres, 'the PostgreSQL part is on by default');
  for (const config of POSTGRES_CONFIGS) {
    for (const c of o.concurrency) {
      for (const op of OPS) {
        const what = `${op} [${config.name}] c=${c}`;
        const row = r.unary.find((u) => u.op === op && u.variant === config.name && u.concurrency === c);
        if (!row) {
          problems.push(`${what}: missing`);
          continue;
        }
        if (row.storage !== 'postgres' || row.replicas !== config.replicas || row.synchronous !== 'on') problems.push(`${what}: ${row.storage} x${row.replicas} ${row.synchronous}`);
        problems.push(...saneSummary(row.call, what, true), ...saneSummary(row.bare, `${what} (bare)`, true), ...ratiosToBare(row, what));
        if (!finitePositive(row.ratio.rate) || !finitePositive(row.ratio.p99)) problems.push(`${what}: ratios ${JSON.stringify(row.ratio)}`);
      }
    }
  }
  t.regex(output, /PostgreSQL 15\.\d+/);
  t.regex(output, /SQLite and PostgreSQL side by side, \d+ in flight/);

  // The hot-path changes, old and new way in-process: both figures for each, and the whole validation for scale.
  t.deepEqual(r.micro.map((m) => m.change), [
    'session row read by token hash', 'token hash (SHA-256)', 'ValidateSession answer encoding', 'token lookups of a stream batch', 'new token and id (CSPRNG)',
    'CreateSession row insert (the id index)', 'ValidateSession in-process, all of it (for scale)',
  ]);
  for (const m of r.micro.slice(0, -1)) {
    if (!(m.beforeUs > 0 && m.afterUs > 0 && Number.isFinite(m.beforeUs) && Number.isFinite(m.afterUs))) problems.push(`micro ${m.change}: ${m.beforeUs} -> ${m.afterUs}`);
  }
  if (!(r.micro.at(-1)!.afterUs > 0)) problems.push(`micro validation: ${r.micro.at(-1)!.afterUs}`);
  t.regex(output, /Hot-path changes, before and after/);

  // A max-size message of empty items, decoded and refused before decoding: heap counts are not noise, times are.
  const d = r.decodeLimit!;
  t.truthy(d);
  t.is(d.items, Math.floor(d.messageBytes / 2));
  for (const [name, c] of [['generated', d.generated], ['refused', d.refused]] as const) {
    if (!(finitePositive(c.cpuUs) && finitePositive(c.allocatedBytes) && c.retainedBytes >= 0 && Number.isFinite(c.retainedBytes))) problems.push(`decode limit ${name}: ${JSON.stringify(c)}`);
  }
  // An object per item is tens of bytes; the refusal walks 1001 items and keeps one error.
  if (!(d.generated.retainedBytes > d.items * 16)) problems.push(`decode limit: the decoded message holds only ${d.generated.retainedBytes} bytes`);
  if (!(d.ratio.allocated > 10 && finitePositive(d.ratio.cpu))) problems.push(`decode limit ratios: ${JSON.stringify(d.ratio)}`);

  // The GC cap's probes ran, with and without it, and counted collections (how many is V8's business).
  const g = r.gcTuning!;
  t.truthy(g, 'the GC part ran');
  if (!(Number.isInteger(g.plainMajors) && g.plainMajors >= 1 && Number.isInteger(g.tunedMajors) && g.tunedMajors >= 1)) problems.push(`gc tuning: ${JSON.stringify(g)}`);
  t.regex(output, /Old-space growth cap \(--heap-growing-percent=\d+\): the same promoted garbage \(\d+ rounds\) took \d+ major collections by default and \d+ with the cap/);
  t.regex(output, /ValidateSessionStream item limit: one /);

  // The on/off rows: CreateSession without group commit, the checkpoint worker
  // or the off-loop fsync, and RotateSessionToken with and without durable
  // revocations, at the largest concurrency only, each against its own empty RPC.
  const variants = r.unary.filter((u) => u.variant !== undefined && u.storage === 'sqlite');
  t.deepEqual(
    variants.map((u) => `${u.synchronous} ${u.variant}`).sort(),
    ['FULL fsync in commits', 'FULL no group commit', 'NORMAL checkpoints in commits', 'NORMAL durable revocations off', 'NORMAL durable revocations on',
      'NORMAL no group commit', 'NORMAL no group commit, checkpoints in commits', 'NORMAL no session events'],
  );
  for (const u of variants) {
    const op = u.variant!.startsWith('durable revocations') ? 'RotateSessionToken' : 'CreateSession';
    const what = `${op} ${u.synchronous} [${u.variant}]`;
    if (u.op !== op || u.concurrency !== Math.max(...o.concurrency)) problems.push(`${what}: ${u.op} at ${u.concurrency}`);
    problems.push(...saneSummary(u.call, what, true), ...saneSummary(u.bare, `${what} (bare)`, true), ...ratiosToBare(u, what));
  }
  t.regex(output, /CreateSession \[no group commit, checkpoints in commits\]/);
  // What the outbox costs a create, on both backends, from rows of this run.
  t.deepEqual(r.outbox.map((b) => b.backend), ['SQLite, synchronous=NORMAL', 'PostgreSQL, 2 replicas']);
  for (const b of r.outbox) if (!(finitePositive(b.onRate) && finitePositive(b.offRate) && b.extraCpuUs !== null && Number.isFinite(b.extraCpuUs))) problems.push(`outbox ${b.backend}: ${JSON.stringify(b)}`);
  t.regex(output, /Session events outbox \(CreateSession, SQLite, synchronous=NORMAL, \d+ in flight\): with it \d+\/s .* without \d+\/s .*; rate [\d.]+x, -?[\d.]+ us more server CPU per create/);
  t.regex(output, /Session events outbox \(CreateSession, PostgreSQL, 2 replicas, \d+ in flight\)/);
  const durability = r.durability!;
  t.truthy(durability, 'the durable part ran');
  for (const [k, v] of Object.entries(durability)) if (!finitePositive(v)) problems.push(`durability ${k}: ${v}`);
  t.regex(output, /Durable revocations \(RotateSessionToken, synchronous=NORMAL, \d+ in flight\): on \d+\/s .* off \d+\/s .*; on\/off [\d.]+/);

  // Streaming, and Redis when this machine has it.
  const hasRedis = !spawnSync('redis-server', ['--version']).error;
  t.truthy(r.streaming);
  t.is(r.streaming!.rows.length, o.streamConcurrency.length);
  for (const s of r.streaming!.rows) {
    problems.push(...saneSummary(s.stream, `stream c=${s.concurrency}`, true));
    if (hasRedis) {
      problems.push(...saneSummary(s.redis!, `redis c=${s.concurrency}`, true));
      if (!finitePositive(s.ratio)) problems.push(`stream c=${s.concurrency}: ratio ${s.ratio}`);
    } else if (s.redis !== null || s.ratio !== null) problems.push('Redis figures without redis-server');
  }
  t.is('version' in r.streaming!.redis, hasRedis, JSON.stringify(r.streaming!.redis));

  // The lookups on worker threads: every mode at every stream concurrency, answers checked against sessiond's first.
  const th = r.threads!;
  t.truthy(th, 'the threads part ran');
  t.true(th.checked > 0);
  t.deepEqual(th.rows.map((x) => x.threads), o.streamConcurrency.flatMap(() => [null, 0, 1, 2]));
  for (const x of th.rows) {
    problems.push(...saneSummary(x.summary, `threads ${x.name} c=${x.concurrency}`, true));
    if (!(x.mainCpuUsPerCall !== null && x.mainCpuUsPerCall >= 0 && Number.isFinite(x.mainCpuUsPerCall))) problems.push(`threads ${x.name}: main thread ${x.mainCpuUsPerCall}`);
    if (!finitePositive(x.vsMainThread)) problems.push(`threads ${x.name}: ratio ${x.vsMainThread}`);
  }
  t.regex(output, /Stream lookups on worker threads/);

  // Workers: both counts measured (the server has --workers, so a skipped row is a failure), 2 workers in a tree of 3 processes.
  const wk = r.workers!;
  t.truthy(wk, 'the workers part ran');
  t.deepEqual(wk.rows.map((x) => x.workers), [1, 2]);
  for (const x of wk.rows) {
    if (x.skipped !== undefined) {
      problems.push(`workers ${x.workers}: skipped (${x.skipped})`);
      continue;
    }
    problems.push(...saneSummary(x.unary!, `workers ${x.workers} unary`, true), ...saneSummary(x.stream!, `workers ${x.workers} stream`, true));
    if (x.processes !== (x.workers === 1 ? 1 : x.workers + 1)) problems.push(`workers ${x.workers}: ${x.processes} processes`);
  }
  if (!(finitePositive(wk.scaling.unary) && finitePositive(wk.scaling.stream))) problems.push(`workers scaling ${JSON.stringify(wk.scaling)}`);
  if (hasRedis) problems.push(...saneSummary(wk.redis!, 'workers redis', true));
  else if (wk.redis !== null) problems.push('workers: Redis figures without redis-server');
  t.regex(output, /Workers \(SESSIOND_WORKERS\)/);

  // Stalls and memory.
  const st = r.stalls!;
  t.truthy(st);
  t.is(st.purge.purged, o.stallSessions, 'the purge removed every expired session');
  t.is(st.sweep.purged, o.stallSessions, 'the sweep removed every expired session');
  for (const [name, s] of [['baseline', st.baseline], ['purge', st.purge], ['sweep', st.sweep], ['checkpoint', st.checkpoint]] as const) {
    if (!(s.loop.samples > 0 && Number.isFinite(s.loop.maxMs) && s.loop.maxMs >= s.loop.p50Ms && s.loop.maxMs > 0)) problems.push(`${name}: loop delay ${JSON.stringify(s.loop)}`);
    const gc = s.loop.gc;
    if (!(gc.count >= gc.major && gc.major >= 0 && gc.totalMs >= gc.maxMs && gc.maxMs >= 0 && (gc.count === 0) === (gc.maxKind === ''))) problems.push(`${name}: GC ${JSON.stringify(gc)}`);
    problems.push(...saneSummary(s.load, `${name} load`, false));
    if (!(s.walPeakBytes >= 0)) problems.push(`${name}: WAL peak ${s.walPeakBytes}`);
  }
  if (!(st.checkpoint.durationMs >= 0 && st.checkpoint.walFramesBefore >= 0)) problems.push(`checkpoint: ${JSON.stringify(st.checkpoint)}`);
  for (const [k, v] of Object.entries(st.rss)) if (!(v > 10 && v < 10_000)) problems.push(`rss ${k}: ${v} MB`);

  // Targets: issue 16's, as ratios to the bare server at the largest concurrency, each the figure of its row;
  // and each one judged, except what needs Redis when it is absent.
  const unaryTargets: [string, string, 'cpu' | 'rate'][] = [
    ["sessiond's empty RPC server CPU per call", 'Empty', 'cpu'], ['ValidateSession server CPU per call', 'ValidateSession', 'cpu'],
    ['GetSession server CPU per call', 'GetSession', 'cpu'], ['CreateSession NORMAL server CPU per call', 'CreateSession', 'cpu'],
    ['ValidateSession rate', 'ValidateSession', 'rate'], ['GetSession rate', 'GetSession', 'rate'], ['CreateSession NORMAL rate', 'CreateSession', 'rate'],
  ];
  for (const [name, op, figure] of unaryTargets) {
    const target = r.targets.find((x) => x.name === `${name} at ${top} in flight`);
    const row = normal.find((u) => u.op === op);
    if (!target || !row) problems.push(`target ${name}: ${target ? 'no row' : 'missing'}`);
    else if (target.value !== row.ratio[figure]) problems.push(`target ${name}: ${target.value}, the row says ${row.ratio[figure]}`);
    else if (!target.target.endsWith('x the bare empty RPC')) problems.push(`target ${name}: ${target.target}`);
  }
  // The stream target with 2 workers is one more.
  t.is(r.targets.length, unaryTargets.length + 2 * o.streamConcurrency.length + 1 + 4, r.targets.map((x) => x.name).join('; '));
  for (const target of r.targets) {
    const mayBeUnjudged = (!hasRedis && target.name.includes('Redis')) || target.note?.startsWith('skipped: ') === true;
    if (target.met === null && !mayBeUnjudged) problems.push(`target not judged: ${target.name}`);
    if (target.met !== null && !Number.isFinite(target.value)) problems.push(`target without a value: ${target.name}`);
  }
  t.deepEqual(problems, [], output);
  t.truthy(r.meta['commit']);
});

test('the bare baseline server answers Ping with an empty message, and serves nothing else', async (t) => {
  const bare = await startBareServer();
  t.teardown(() => bare.stop());
  const Bare = makeGenericClientConstructor({
    ping: {
      path: BARE_PING_PATH, requestStream: false, responseStream: false, originalName: 'ping',
      requestSerialize: () => Buffer.alloc(0), requestDeserialize: () => ({}),
      responseSerialize: () => Buffer.alloc(0), responseDeserialize: (b: Buffer) => ({ bytes: b.length }),
    },
  }, 'Bare');
  const client = new Bare(bare.address, credentials.createInsecure()) as unknown as Client & { ping(req: object, cb: (err: ServiceError | null, res?: { bytes: number }) => void): void };
  t.teardown(() => client.close());
  const answer = await new Promise<{ bytes: number }>((resolve, reject) => client.ping({}, (err, res) => (err ? reject(err) : resolve(res!))));
  t.deepEqual(answer, { bytes: 0 });
  t.is(bare.apiKey, undefined, 'it knows no principals');
  const refused = await t.throwsAsync<ServiceError>(benchCall(bare.address, 'Empty'));
  t.is(refused?.code, status.UNIMPLEMENTED, 'not sessiond\'s bench service');
});

function benchCall(address: string, method: string): Promise<Buffer> {
  const client = new Client(address, credentials.createInsecure());
  const identity = (b: Buffer) => b;
  return new Promise<Buffer>((resolve, reject) =>
    client.makeUnaryRequest(`/sessiond.bench.v1.Bench/${method}`, identity, identity, Buffer.alloc(0), (err: ServiceError | null, res?: Buffer) =>
      err ? reject(err) : resolve(res!))).finally(() => client.close());
}

test('the bench service is served only with --bench-service: an empty RPC and the event-loop delay figures', async (t) => {
  const off = await startTestServer();
  t.teardown(() => off.close());
  const refused = await t.throwsAsync<ServiceError>(benchCall(off.address, 'Empty'));
  t.is(refused?.code, status.UNIMPLEMENTED);

  const on = await startTestServer({ env: { SESSIOND_BENCH_SERVICE: 'true' } });
  t.teardown(() => on.close());
  t.is((await benchCall(on.address, 'Empty')).length, 0);
  const never = JSON.parse((await benchCall(on.address, 'LoopDelayStop')).toString()) as LoopDelayFigures;
  t.is(never.samples, 0, 'Stop without Start reports nothing');
  await benchCall(on.address, 'LoopDelayStart');
  const started = Date.now();
  while (Date.now() - started < 25); // a 25 ms block of this process's loop, where the server runs too
  // Garbage enough for several young-generation collections (semi-spaces are a few MB).
  let keep: number[][] = [];
  for (let i = 0; i < 400_000; i++) keep = i % 1000 === 0 ? [] : (keep.push([i, i + 1]), keep);
  t.true(keep.length < 1000);
  // The delay histogram samples on a timer: the block shows only in the samples taken after it.
  await new Promise((r) => setTimeout(r, 20));
  const figures = JSON.parse((await benchCall(on.address, 'LoopDelayStop')).toString()) as LoopDelayFigures;
  t.true(figures.samples > 0);
  t.true(figures.maxMs >= 15, `the 25 ms block shows: max ${figures.maxMs} ms`);
  t.true(figures.maxMs >= figures.p99Ms && figures.p99Ms >= figures.p50Ms && figures.durationMs > 0);
  t.true(figures.gc.count > 0, `the garbage was collected while the monitor ran: ${JSON.stringify(figures.gc)}`);
  t.true(figures.gc.maxMs > 0 && figures.gc.totalMs >= figures.gc.maxMs && ['major', 'minor', 'incremental', 'weakcb'].includes(figures.gc.maxKind));
  t.is(never.gc.count, 0);
  t.true(on.config.benchService);
  t.false(off.config.benchService, 'off by default');
});
