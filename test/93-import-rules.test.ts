import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

/*
 * `make lint` runs dependency-cruiser with .dependency-cruiser.cjs over src/.
 * Here the same command runs over the real tree (it must be clean) and over a
 * small tree that breaks each rule once (each break must be reported by name).
 */

const ROOT = join(__dirname, '..');
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = join(ROOT, 'node_modules', '.bin', 'depcruise');
const run = promisify(execFile);

async function cruise(cwd: string): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(DEPCRUISE, ['--config', CONFIG, '--output-type', 'err', 'src'], { cwd });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

test('src/ keeps the import rules', async (t) => {
  const { code, output } = await cruise(ROOT);
  t.is(code, 0, output);
  t.regex(output, /no dependency violations found/);
});

test('each import rule fails the check when an import breaks it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-imports-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const files: Record<string, string> = {
    'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'node16', moduleResolution: 'node16', strict: true } }),
    'src/domain/rule.ts': "import { row } from '../storage/row';\nexport const rule = row;\n",
    'src/domain/id.ts': "import { shared } from '../shared/value';\nexport const id = shared;\n",
    'src/storage/row.ts': 'export const row = 1;\n',
    'src/storage/uses-transport.ts': "import { handler } from '../transport/handler';\nexport const x = handler;\n",
    'src/transport/handler.ts': 'export const handler = 2;\n',
    'src/transport/reads-db.ts': "import { row } from '../storage/row';\nexport const y = row;\n",
    'src/transport/reads-config.ts': "import { config } from '../server/config';\nexport const z = config;\n",
    'src/server/config.ts': 'export const config = 3;\n',
    'src/client/client.ts': "import { handler } from '../transport/handler';\nexport const c = handler;\n",
    'src/cli/main.ts': "import { config } from '../server/config';\nimport { row } from '../storage/row';\nexport const m = config + row;\n",
    'src/shared/value.ts': 'export const shared = 4;\n',
    'src/shared/reaches-domain.ts': "import { rule } from '../domain/rule';\nexport const s = rule;\n",
    'src/domain/a.ts': "import { b } from './b';\nexport const a = (): number => b();\n",
    'src/domain/b.ts': "import { a } from './a';\nexport const b = (): number => a();\n",
  };
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  const { code, output } = await cruise(dir);
  t.not(code, 0, 'the check fails');
  const expected: Array<[string, string]> = [
    ['domain-imports-only-domain', 'src/domain/rule.ts → src/storage/row.ts'],
    ['domain-imports-only-domain', 'src/domain/id.ts → src/shared/value.ts'],
    ['storage-imports-only-domain-and-shared', 'src/storage/uses-transport.ts → src/transport/handler.ts'],
    ['transport-never-imports-storage', 'src/transport/reads-db.ts → src/storage/row.ts'],
    ['transport-uses-only-log-and-metrics-of-server', 'src/transport/reads-config.ts → src/server/config.ts'],
    ['client-and-cli-never-import-server-code', 'src/client/client.ts → src/transport/handler.ts'],
    ['client-and-cli-never-import-server-code', 'src/cli/main.ts → src/server/config.ts'],
    ['client-and-cli-never-import-server-code', 'src/cli/main.ts → src/storage/row.ts'],
    ['shared-imports-only-shared', 'src/shared/reaches-domain.ts → src/domain/rule.ts'],
    // A cycle is printed over several lines, from whichever of its files comes first.
    ['no-circular', 'src/domain/'],
  ];
  for (const [rule, edge] of expected) {
    t.true(output.split('\n').some((line) => line.includes(`error ${rule}: ${edge}`)), `${rule} reports ${edge}\n${output}`);
  }
  // Nothing else: the allowed imports (domain to domain, storage to shared) pass.
  const errors = output.split('\n').filter((line) => /^\s*error /.test(line));
  t.is(errors.length, expected.length, output);
});
