/*
 * make bench: the server as its own process on fresh, pre-filled databases,
 * with principals configured, measured against a bare grpc-js server's empty
 * RPC in a process of its own (bench/bare-server.ts). Both are compiled first
 * and run as node dist/..., as in the Docker image (BENCH_SERVER=tsx runs them
 * from the sources). In order:
 *   micro   the hot-path changes, old and new way alternately, in-process;
 *           and a max-size ValidateSessionStream message of empty items,
 *           decoded against refused before decoding (time and heap); and the
 *           major collections of the same garbage with and without the
 *           server's cap on old-space growth
 *   unary   sessiond's empty RPC and every call, alternately with the bare
 *           server's empty RPC, synchronous=NORMAL;
 *           then (--postgres on) the same on PostgreSQL, one replica and two
 *           on one database, in a cluster the bench starts and removes
 *   stream  ValidateSessionStream vs Redis GET (same server process)
 *   threads the stream's lookups on worker threads: an experiment server with
 *           them on its main thread, on 1 and on 2 threads, and sessiond's own
 *           stream, alternately (bench/stream-threads.ts)
 *   workers sessiond with --workers 1 and 2: ValidateSession, the stream and
 *           Redis GET alternately, CPU summed over each process tree (bench/workers.ts)
 *   full    CreateSession with synchronous=FULL on a second server process
 *   ablation CreateSession on servers with group commit, the checkpoint worker
 *           or the off-loop fsync switched off: what each buys
 *   durable RotateSessionToken at synchronous=NORMAL with --durable-revocations on,
 *           then off: what the fsync before each answer costs
 *   stalls  purge, sweep and TRUNCATE checkpoint with a million expired sessions; RSS
 * Prints the tables and writes the same figures as JSON (BENCH_OUT).
 * Settings: bench/options.ts, or `node --import tsx bench/main.ts --help`.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { BARE_PING_PATH } from './bare-server';
import { fillDatabase } from './fill';
import { BenchOptionsError, helpText, loadBenchOptions, type BenchOptions, type OpName } from './options';
import { withRedis } from './redis';
import { checkTargets, durabilityCost, formatReport, outboxCost, type BenchResults } from './report';
import { Channels } from './rpc';
import { buildServer, startBareServer, startServer, useServerSettings, writeBenchCallers, type ServerProcess } from './server-process';
import { measureStalls, type StallResults } from './stalls';
import { measureStreaming, type StreamResults } from './stream';
import { measureStreamThreads, type ThreadsResults } from './stream-threads';
import { measureWorkers, type WorkersResults } from './workers';
import { measureDecodeLimit, type DecodeLimitResults } from './decode-limit';
import { measureGcTuning, type GcTuningResults } from './gc-tuning';
import { measureMicro, type MicroRow } from './micro';
import { measurePostgres } from './postgres';
import { measureUnary, type Baseline, type UnaryRow } from './unary';
import { Pools } from './workloads';

const ROOT = join(__dirname, '..');
const log = (line: string) => process.stdout.write(`${line}\n`);

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}+uncommitted changes` : head;
  } catch {
    return 'unknown';
  }
}

/** Measures `ops` on a fresh server process over `dbPath`; the server is stopped afterwards. */
async function onServer<T>(dbPath: string, env: Record<string, string>, o: BenchOptions, fn: (s: ServerProcess, ch: Channels) => Promise<T>): Promise<T> {
  const server = await startServer(dbPath, env, o.cpuProfDir);
  const channels = new Channels(server.address, o.channels, server.apiKey);
  try {
    await channels.ready();
    return await fn(server, channels);
  } finally {
    channels.close();
    const code = await server.stop();
    if (code !== 0) log(`  warning: server ${server.pid} exited with ${code}`);
  }
}

/**
 * Starts the bare baseline server and the load client's connections to it.
 * They send sessiond's API key too, so that both servers get the same headers.
 */
async function startBaseline(apiKey: string, o: BenchOptions): Promise<Baseline & { stop(): Promise<void> }> {
  const server = await startBareServer(o.cpuProfDir);
  const channels = new Channels(server.address, o.channels, apiKey);
  const stop = async () => {
    channels.close();
    const code = await server.stop();
    if (code !== 0) log(`  warning: bare server ${server.pid} exited with ${code}`);
  };
  try {
    await channels.ready();
  } catch (err) {
    await stop();
    throw err;
  }
  log(`bare grpc-js baseline server (pid ${server.pid})`);
  return { server, channels, stop };
}

function assertNever(why: string): never {
  throw new Error(why);
}

/**
 * Servers without some of the write-path optimisations (the measurement-only
 * settings --group-commit, --checkpoint-worker and --off-loop-fsync), to measure what each buys;
 * the rows with both on come from the unary and full parts.
 */
const ABLATIONS: { name: string; synchronous: UnaryRow['synchronous']; env: Record<string, string> }[] = [
  { name: 'no group commit, checkpoints in commits', synchronous: 'NORMAL', env: { SESSIOND_GROUP_COMMIT: 'false', SESSIOND_CHECKPOINT_WORKER: 'false' } },
  { name: 'no group commit', synchronous: 'NORMAL', env: { SESSIOND_GROUP_COMMIT: 'false' } },
  { name: 'checkpoints in commits', synchronous: 'NORMAL', env: { SESSIOND_CHECKPOINT_WORKER: 'false' } },
  { name: 'no group commit', synchronous: 'FULL', env: { SESSIOND_SYNCHRONOUS: 'full', SESSIOND_GROUP_COMMIT: 'false' } },
  { name: 'fsync in commits', synchronous: 'FULL', env: { SESSIOND_SYNCHRONOUS: 'full', SESSIOND_OFF_LOOP_FSYNC: 'false' } },
  // The other way round: what the events outbox costs a create (its row, in the create's transaction).
  { name: 'no session events', synchronous: 'NORMAL', env: { SESSIOND_SESSION_EVENTS: 'false' } },
];

/**
 * The same rotations with the fsync before each answer and without it
 * (--durable-revocations), each server against its own empty RPC.
 */
const DURABILITY: { name: string; env: Record<string, string> }[] = [
  { name: 'durable revocations on', env: { SESSIOND_DURABLE_REVOCATIONS: 'true' } },
  { name: 'durable revocations off', env: { SESSIOND_DURABLE_REVOCATIONS: 'false' } },
];

async function run(o: BenchOptions): Promise<BenchResults> {
  if (o.server === 'dist') {
    log('compiling the server (tsc -p tsconfig.build.json): it runs as node dist/src/main.js, as in the Docker image');
    buildServer();
  }
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-bench-'));
  const callers = writeBenchCallers(dir);
  useServerSettings(o.serverSettings, { args: o.serverNodeArgs, stdout: o.serverStdout, compiled: o.server === 'dist', callers });
  const meta: Record<string, unknown> = {
    startedAt: new Date().toISOString(),
    commit: gitCommit(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    loadavgAtStart: loadavg(),
  };
  let unary: UnaryRow[] = [];
  let micro: MicroRow[] = [];
  let decodeLimit: DecodeLimitResults | null = null;
  let gcTuning: GcTuningResults | null = null;
  let streaming: StreamResults | null = null;
  let threads: ThreadsResults | null = null;
  let workers: WorkersResults | null = null;
  let stalls: StallResults | null = null;
  try {
    const wants = (p: BenchOptions['parts'][number]) => o.parts.includes(p);
    if ((['micro', 'unary', 'stream', 'threads', 'workers', 'full', 'ablation', 'durable'] as const).some(wants)) {
      const dbPath = join(dir, 'sessions.db');
      const spare = Math.max(100, Math.floor(o.sessions / 4));
      log(`filling ${o.sessions} live (+${spare} spare) sessions...`);
      const fillMs = await fillDatabase(dbPath, { live: o.sessions, spare });
      meta['fillMs'] = fillMs;
      log(`  filled in ${(fillMs / 1000).toFixed(1)} s`);
      const pools = new Pools(o.sessions, spare);
      if (wants('micro')) {
        log('hot-path changes, before and after (in-process)');
        micro = await measureMicro(dbPath, o.sessions, o.smoke, log);
        log('ValidateSessionStream item limit, before and after decoding (in-process)');
        decodeLimit = measureDecodeLimit(o.serverSettings, o.smoke, log);
        log('major collections with and without the cap on old-space growth (probe processes)');
        gcTuning = await measureGcTuning(o.smoke, log);
      }
      // One bare server for the whole run: every sessiond server's calls alternate with its empty RPC.
      const bare = (['unary', 'full', 'ablation', 'durable'] as const).some(wants) ? await startBaseline(callers.apiKey, o) : undefined;
      const baseline = () => bare ?? assertNever('the bare baseline server was not started');
      if (bare) meta['baseline'] = { server: 'bench/bare-server.ts', rpc: BARE_PING_PATH, runs: o.server === 'dist' ? 'node dist/bench/bare-server.js' : 'node --import tsx bench/bare-server.ts' };
      try {
        if (wants('unary') || wants('stream') || wants('threads')) {
          await onServer(dbPath, {}, o, async (server, channels) => {
            if (wants('unary')) {
              log(`unary calls, synchronous=NORMAL (server pid ${server.pid})`);
              unary = await measureUnary(server, channels, baseline(), pools, o.ops, 'NORMAL', o, log);
            }
            if (wants('stream')) {
              log('streaming validation vs Redis');
              streaming = await withRedis(log, (redis) => measureStreaming(server, pools, redis, o, log));
            }
            if (wants('threads')) {
              log('streaming validation with the lookups on worker threads (an experiment server, 0, 1 and 2 threads) and sessiond\'s own stream');
              threads = await measureStreamThreads(server, dbPath, pools, o, cpus().length, log);
            }
          });
        }
        if (wants('workers')) {
          log('sessiond with 1 and 2 workers: ValidateSession, the stream and Redis GET, alternately');
          workers = await withRedis(log, (redis) => measureWorkers(dbPath, pools, redis, o, log));
        }
        if (wants('unary') && o.postgres) {
          const pg = await measurePostgres(dir, baseline(), o, log);
          unary = unary.concat(pg.rows);
          meta['postgres'] = pg.meta;
        }
        const fullOps = o.ops.filter((op): op is OpName => op === 'CreateSession');
        if (wants('full') && fullOps.length > 0) {
          await onServer(dbPath, { SESSIOND_SYNCHRONOUS: 'full' }, o, async (server, channels) => {
            log(`CreateSession, synchronous=FULL (server pid ${server.pid})`);
            unary = unary.concat(await measureUnary(server, channels, baseline(), pools, fullOps, 'FULL', o, log));
          });
        }
        if (wants('ablation') && o.ops.includes('CreateSession')) {
          const top = [Math.max(...o.concurrency)];
          for (const v of ABLATIONS) {
            await onServer(dbPath, v.env, o, async (server, channels) => {
              log(`CreateSession, synchronous=${v.synchronous}, ${v.name} (server pid ${server.pid})`);
              unary = unary.concat(await measureUnary(server, channels, baseline(), pools, ['CreateSession'], v.synchronous, o, log, { name: v.name, concurrency: top }));
            });
          }
        }
        // Last of the parts on the filled database: rotations leave the pool's tokens stale.
        if (wants('durable')) {
          const top = [Math.max(...o.concurrency)];
          for (const v of DURABILITY) {
            await onServer(dbPath, v.env, o, async (server, channels) => {
              log(`RotateSessionToken, synchronous=NORMAL, ${v.name} (server pid ${server.pid})`);
              unary = unary.concat(await measureUnary(server, channels, baseline(), pools, ['RotateSessionToken'], 'NORMAL', o, log, { name: v.name, concurrency: top }));
            });
          }
        }
      } finally {
        await bare?.stop();
      }
      meta['deleteMisses'] = pools.deleteMisses;
      if (pools.deleteMisses > 0) log(`  note: ${pools.deleteMisses} DeleteSession calls found no session left to delete (sent with allow_missing)`);
    }
    if (wants('stalls')) {
      log('stalls and memory');
      stalls = await measureStalls(dir, o, log);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  meta['loadavgAtEnd'] = loadavg();
  meta['finishedAt'] = new Date().toISOString();
  return { meta, options: o, unary, micro, decodeLimit, gcTuning, streaming, threads, workers, stalls, durability: durabilityCost(unary), outbox: outboxCost(unary), targets: checkTargets(o, unary, streaming, stalls, workers) };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help')) {
    log(helpText());
    return;
  }
  let o: BenchOptions;
  try {
    o = loadBenchOptions(argv, process.env);
  } catch (err) {
    if (err instanceof BenchOptionsError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  log(`sessiond bench${o.smoke ? ' (smoke run: tiny figures, for checking the harness only)' : ''}: ` +
    `${o.sessions} sessions, windows of ${o.windowMs} ms x ${o.rounds} rounds, concurrency ${o.concurrency.join(',')}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const results = await run(o);
  log('');
  log(formatReport(results));
  const out = resolve(ROOT, o.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  log(`\nwrote ${out}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  },
);
