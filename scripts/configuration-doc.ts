/*
 * Writes docs/configuration.md from the settings table, so that the page and
 * --help cannot disagree with what the server reads. `make docs` runs it;
 * `--check [file]` only compares, and exits 1 when they differ.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLIENT_VARIABLES } from '../src/server/config';
import { allowedValues, groups, shownDefault } from '../src/shared/settings-describe';
import { TIMER_MAX_MS, type Spec } from '../src/shared/settings-engine';
import { envName, SETTINGS } from '../src/server/settings';
import { formatDuration } from '../src/shared/units';

export const DOC_PATH = join(__dirname, '..', 'docs', 'configuration.md');
export const REGENERATE = 'make docs (or: node --import tsx scripts/configuration-doc.ts)';

const code = (text: string) => `\`${text}\``;
const cell = (text: string) => text.replace(/\|/g, '\\|');

function table(specs: readonly Spec[]): string[] {
  const rows = ['| Flag | Variable | Default | Values | Meaning |', '|---|---|---|---|---|'];
  for (const s of specs) {
    const shown = shownDefault(s);
    rows.push(`| ${code(`--${s.flag}`)} | ${code(envName(s.flag))} | ${shown === '(none)' ? shown : code(shown)} | ${cell(allowedValues(s, code))} | ${cell(s.help)} |`);
  }
  return rows;
}

/** The whole page, as the table says it. */
export function configurationDoc(): string {
  const all: readonly Spec[] = SETTINGS;
  const main = all.filter((s) => !s.measurementOnly);
  const measuring = all.filter((s) => s.measurementOnly);
  const out = [
    '# Configuration',
    '',
    '<!-- Written by `make docs` from the settings table (src/server/settings.ts): edit the table, not this page. -->',
    '',
    'Every setting is a flag and an environment variable: `--db-path /var/lib/sessiond/sessions.db` or',
    '`SESSIOND_DB_PATH=/var/lib/sessiond/sessions.db`. `sessiond --help` prints the same list.',
    '',
    '## How values are read',
    '',
    '- **Order**: the default, then the `SESSIOND_*` variable, then the flag: a flag wins over its variable,',
    '  and the last of a repeated flag wins.',
    '- **Flags** take `--flag value` or `--flag=value`. A value that itself starts with `--` needs the `=` form;',
    '  a negative number does not (`--cache-size -4000`).',
    '- **Booleans**: a flag alone means true (`--reflection`); `--reflection false` and `--reflection=false` set',
    '  it. `true`, `1`, `yes`, `on` and `false`, `0`, `no`, `off` are accepted, in any case.',
    '- **Durations**: `250ms`, `30s`, `5m`, `24h`, `7d`, combined (`1h30m`) or with a fraction (`1.5h`); a bare',
    `  number is milliseconds. A duration that sets a timer is at most ${code(formatDuration(TIMER_MAX_MS))}: a Node timer longer than`,
    '  2^31-1 ms (about 24.8 days) would fire at once.',
    '- **Sizes**: bytes, or `KiB`, `MiB`, `GiB` (powers of 1024) and `kB`, `MB`, `GB` (powers of 1000).',
    '- **Words** (journal mode, synchronous, log level) are taken in any case.',
    '- **Problems**: sessiond lists every bad setting at once on stderr and exits with status 2 without',
    '  serving. Each names the flag and its variable; the value of a secret setting (`--admin-token`) is',
    '  never quoted. An unknown flag or `SESSIOND_*` variable is a problem too, with a suggestion when it is',
    '  close to a real name.',
    '',
  ];
  for (const [group, specs] of groups(main)) out.push(`## ${group}`, '', ...table(specs), '');
  out.push(
    '## Checks across settings',
    '',
    'Besides each value on its own, start-up refuses (exit 2, listed with the rest):',
    '',
    '- `--default-ttl` or `--default-idle-timeout` above `--max-ttl`;',
    '- `--keepalive-timeout` not shorter than `--keepalive-time`;',
    '- `--max-message-bytes` below the largest legitimate request (a full `ValidateSessionStream` batch, or a',
    '  session with every attribute at its limit), and `--max-page-bytes` not at least 1KiB below it;',
    '- `--max-db-size` between 1 byte and 64KiB (the schema alone needs about 50KiB);',
    '- `--tls-cert` without `--tls-key` or the other way round, `--tls-client-ca` without both, and any of',
    '  their files that cannot be read or does not match;',
    '- a `--principals-file` that does not load, and an `--admin-token` shorter than 16 characters;',
    '- a `--listen` address other than loopback with no principals (protected mode, see',
    '  [security.md](security.md)), unless `--allow-unauthenticated` is set, which in turn is refused when',
    '  principals are configured; and a principals file that lists nobody, with such an address;',
    '- a `--metrics-listen` equal to `--listen`, and `--db-path` empty or `:memory:`.',
    '',
    '## Variables of the command-line client',
    '',
    'The `sessiond` client commands read these; the server accepts them in its environment without',
    'complaint, so that one environment can serve both:',
    '',
    ...CLIENT_VARIABLES.map((v) => `- ${code(v)}`),
    '',
    '## Measurement-only switches',
    '',
    '`make bench` switches these to measure what a mechanism buys (`--bench-service` on, each of the others',
    'off); they are left out of `--help`. In production leave each at its default. What each measures:',
    '[performance.md](performance.md).',
    '',
    ...table(measuring),
    '',
  );
  return out.join('\n');
}

if (require.main === module) {
  const want = configurationDoc();
  const check = process.argv.indexOf('--check');
  if (check !== -1) {
    // A path after --check compares that file instead (the test compares a stale copy).
    const path = process.argv[check + 1] ?? DOC_PATH;
    if (readFileSync(path, 'utf8') !== want) {
      process.stderr.write(`${path} is not what the settings table writes: run ${REGENERATE}\n`);
      process.exit(1);
    }
  } else {
    writeFileSync(DOC_PATH, want);
    process.stdout.write(`wrote ${DOC_PATH}\n`);
  }
}
