import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configurationDoc, DOC_PATH, REGENERATE } from '../scripts/configuration-doc';
import { envName, SETTINGS, type Spec } from '../src/server/settings';

/*
 * docs/configuration.md is written from the settings table: the page in the
 * repository is what the table writes now, and what the table writes covers
 * every setting, the measurement-only ones apart.
 */

const ROOT = join(__dirname, '..');
const ALL: readonly Spec[] = SETTINGS;

/** The first line where two texts part, with a line either side, for a failure message. */
function firstDifference(have: string, want: string): string {
  const [a, b] = [have.split('\n'), want.split('\n')];
  const i = a.findIndex((line, n) => line !== b[n]);
  const at = i === -1 ? Math.min(a.length, b.length) : i;
  const show = (lines: string[]) => lines.slice(Math.max(0, at - 1), at + 2).map((l) => `    ${l}`).join('\n');
  return `first difference at line ${at + 1}:\n  in docs/configuration.md:\n${show(a)}\n  from the table:\n${show(b)}`;
}

test('docs/configuration.md is what the settings table writes', (t) => {
  const have = readFileSync(DOC_PATH, 'utf8');
  const want = configurationDoc();
  t.true(have === want, `docs/configuration.md differs from the settings table: run ${REGENERATE}\n${have === want ? '' : firstDifference(have, want)}`);
});

test('the page lists every setting once, with its variable and default; the measurement-only ones only in their own last section', (t) => {
  const doc = configurationDoc();
  const sections = doc.split(/^## /m);
  const last = sections.at(-1)!;
  t.regex(last, /^Measurement-only switches\n/);
  t.regex(last, /\(performance\.md\)/, 'it points to the performance page');
  const rows = (text: string) => [...text.matchAll(/^\| `--([a-z0-9-]+)` \| `([A-Z0-9_]+)` \| ([^|]+) \|/gm)];
  const main = sections.slice(0, -1).flatMap(rows);
  const measuring = rows(last);
  t.deepEqual(main.map((m) => m[1]), ALL.filter((s) => !s.measurementOnly).map((s) => s.flag));
  t.deepEqual(measuring.map((m) => m[1]), ALL.filter((s) => s.measurementOnly).map((s) => s.flag));
  for (const m of [...main, ...measuring]) {
    const s = ALL.find((x) => x.flag === m[1])!;
    t.is(m[2], envName(s.flag));
    t.is(m[3]!.trim(), s.default === '' || s.secret ? '(none)' : `\`${s.default}\``, `--${s.flag}'s default`);
  }
  t.true(ALL.filter((s) => s.measurementOnly).length >= 5, 'group-commit, off-loop-fsync, durable-revocations, checkpoint-worker, bench-service');
});

test('the script run with --check passes the page as it is and fails a stale copy, naming the command that regenerates it', (t) => {
  const check = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'scripts/configuration-doc.ts', '--check', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  const current = check();
  t.is(current.status, 0, current.stderr);
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-configuration-doc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stale = join(dir, 'configuration.md');
  writeFileSync(stale, configurationDoc().replace('`--sweep-interval`', '`--sweep-every`'));
  const r = check(stale);
  t.is(r.status, 1, r.stderr);
  t.true(r.stderr.includes('make docs'), r.stderr);
});
