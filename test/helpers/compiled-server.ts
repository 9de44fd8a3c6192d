import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import ts from 'typescript';

/*
 * The server as plain JavaScript, for tests that start it dozens of times
 * (the crash test restarts it after every SIGKILL): under tsx each start also
 * loads the TypeScript loader, in the main thread and again in the checkpoint
 * worker, which made up most of such a test's time. Each file is transpiled
 * on its own (no type check: tsc in make lint does that), into a folder
 * named by the hash of the sources, so that a build is never stale and test
 * files running side by side share it. Coverage is not lost: a process ended
 * by SIGKILL writes none, whatever it runs.
 */

const ROOT = join(__dirname, '..', '..');
const OUT = join(ROOT, '.test-output', 'compiled');

function sources(dir: string): string[] {
  return (readdirSync(join(ROOT, dir), { recursive: true }) as string[])
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => join(dir, f))
    .sort();
}

let built: string | undefined;

/** The node arguments that run the compiled server (spawnServer's `entry`), building it first if needed. */
export function compiledServerEntry(): string[] {
  built ??= build();
  return [join(built, 'src', 'main.js')];
}

function build(): string {
  const files = [...sources('src'), ...sources('generated')];
  const hash = createHash('sha256');
  for (const f of files) hash.update(f).update('\0').update(readFileSync(join(ROOT, f))).update('\0');
  hash.update(readFileSync(join(ROOT, 'descriptors', 'sessiond.binpb')));
  const target = join(OUT, hash.digest('hex').slice(0, 16));
  if (existsSync(join(target, 'src', 'main.js'))) return target;
  const tmp = join(OUT, `tmp-${process.pid}-${Date.now()}`);
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, inlineSourceMap: true,
  };
  for (const f of files) {
    const { outputText } = ts.transpileModule(readFileSync(join(ROOT, f), 'utf8'), { compilerOptions: options, fileName: join(ROOT, f) });
    const out = join(tmp, f.replace(/\.ts$/, '.js'));
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, outputText);
  }
  // reflection.ts finds descriptors/ two folders above itself, as in dist/.
  cpSync(join(ROOT, 'descriptors'), join(tmp, 'descriptors'), { recursive: true });
  try {
    renameSync(tmp, target);
    // Builds of earlier sources are of no more use.
    for (const old of readdirSync(OUT)) if (/^[0-9a-f]{16}$/.test(old) && join(OUT, old) !== target) rmSync(join(OUT, old), { recursive: true, force: true });
  } catch (err) {
    // Another test file built the same sources first: use theirs.
    rmSync(tmp, { recursive: true, force: true });
    if (!existsSync(join(target, 'src', 'main.js'))) throw err;
  }
  return target;
}

