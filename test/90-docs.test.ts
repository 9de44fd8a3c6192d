import test from 'ava';
import type { Command } from 'commander';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { buildProgram } from '../src/cli/main';
import { CLIENT_VARIABLES, envName, SETTINGS } from '../src/server/config';
import { principalsFromDocument, readPrincipalsFile } from '../src/server/principals-file';
import { runCli } from './helpers/cli';

const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');

test('the README shows the two newcomer commands and every admin RPC', (t) => {
  for (const needle of ['make run', 'make test', 'AdminService/Checkpoint', 'AdminService/GetStorageStatus', 'AdminService/PurgeExpiredSessions', 'grpc.health.v1.Health/Check', 'CHECKPOINT_MODE_TRUNCATE', 'buf curl']) {
    t.true(readme.includes(needle), `README mentions ${needle}`);
  }
});

/*
 * docs/security.md: it exists and covers its topics; its example principals
 * file loads through the same reader as the server's; every flag, variable and
 * metric it names exists; every `sessiond` command it shows parses, and the
 * ones that need no server (keys generate) run.
 */

const ROOT = join(__dirname, '..');
const security = readFileSync(join(ROOT, 'docs', 'security.md'), 'utf8');

/** The bodies of the fenced code blocks of `lang`. */
function codeBlocks(md: string, lang: string): string[] {
  return [...md.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].filter((m) => m[1] === lang).map((m) => m[2]!);
}

/** Shell words, with '…' and "…" quoting (enough for the commands these docs show). */
function shellWords(line: string): string[] {
  return [...line.matchAll(/(?:'[^']*'|"[^"]*"|[^\s'"]+)+/g)].map((m) => m[0].replace(/'([^']*)'|"([^"]*)"/g, '$1$2'));
}

/** Every `sessiond …` command the page shows, in code blocks and inline code, as argv (leading VAR=… assignments dropped). */
function sessiondCommands(md: string): string[][] {
  const lines = [
    ...codeBlocks(md, 'sh').flatMap((b) => b.split('\n')),
    ...[...md.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!),
  ];
  const out: string[][] = [];
  for (const line of lines) {
    const words = shellWords(line.replace(/\s+#.*$/, '').replace(/^\$\s+/, ''));
    while (words.length > 0 && /^[A-Z_]+=/.test(words[0]!)) words.shift();
    if (words[0] === 'sessiond' && words.length > 1) out.push(words.slice(1));
  }
  return out;
}

test('docs/security.md covers the threat model, protected mode behind a proxy, keys, rotation, mTLS, replays, files and limits; the README links it', (t) => {
  const headings = [...security.matchAll(/^#+ (.*)$/gm)].map((m) => m[1]!);
  for (const topic of [/threat model/i, /protected mode/i, /principals file/i, /making a key/i, /rotating a key/i, /mtls/i, /request_id/i, /files and durability/i, /transport limits/i, /operator must still do/i]) {
    t.true(headings.some((h) => topic.test(h)), `a section on ${topic}`);
  }
  for (const needle of ['`forwarded`', '`via`', '`x-real-ip`', '`x-forwarded-*`', '`x-envoy-*`', 'NOT_FOUND', 'ALREADY_EXISTS', 'UNAUTHENTICATED', 'PERMISSION_DENIED', '`0600`', '`0700`', 'SIGHUP', '--tls-client-ca', 'tls_identity', 'authorization', 'NetworkPolicy']) {
    t.true(security.includes(needle), `docs/security.md mentions ${needle}`);
  }
  // The README stays short: it says what protected mode means where the settings are, and links the page.
  t.true(readme.includes('(docs/security.md)'), 'the README links the page');
  t.regex(readme, /loopback callers only/);
});

test('the example principals file in docs/security.md loads without problems, through the server\'s own reader', (t) => {
  const examples = codeBlocks(security, 'yaml').filter((b) => /^principals:/m.test(b));
  t.true(examples.length >= 1);
  const dir = mkdtempSync(join(tmpdir(), 'sessiond-docs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [i, text] of examples.entries()) {
    t.deepEqual(principalsFromDocument(parseYaml(text)).problems, [], `example ${i}`);
    const file = join(dir, `example-${i}.yaml`);
    writeFileSync(file, text);
    const read = readPrincipalsFile(file);
    t.deepEqual(read.problems, [], `example ${i} as a file`);
    t.true(read.entries.length >= 2);
  }
  // It shows what the text explains: a key mid-rotation, a certificate identity, a validate-only gateway.
  const entries = examples.flatMap((text) => principalsFromDocument(parseYaml(text)).entries);
  t.true(entries.some((e) => e.apiKeySha256.length === 2));
  t.true(entries.some((e) => e.tlsIdentities.length > 0));
  t.true(entries.some((e) => [...e.principal.permissions].join() === 'sessions.validate'));
});

test('every flag, variable and metric docs/security.md names exists, and its limits table shows the defaults', (t) => {
  const cliOptions = new Set<string>();
  const walk = (c: Command) => {
    for (const o of c.options) if (o.long) cliOptions.add(o.long);
    c.commands.forEach(walk);
  };
  walk(buildProgram());
  // kubectl's, in the Secret update command.
  const otherTools = new Set(['--from-file', '--dry-run']);
  for (const m of security.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)) {
    const flag = `--${m[1]}`;
    t.true(SETTINGS.some((s) => s.flag === m[1]) || cliOptions.has(flag) || otherTools.has(flag), `${flag} is a server setting or a CLI option`);
  }
  for (const m of security.matchAll(/\bSESSIOND_[A-Z0-9_]+/g)) {
    t.true(SETTINGS.some((s) => envName(s.flag) === m[0]) || (CLIENT_VARIABLES as readonly string[]).includes(m[0]), `${m[0]} is a variable sessiond reads`);
  }
  const metricsSource = readFileSync(join(ROOT, 'src', 'server', 'metrics', 'metrics.ts'), 'utf8');
  for (const m of security.matchAll(/\bsessiond_[a-z_]+/g)) t.true(metricsSource.includes(`'${m[0]}'`), `${m[0]} is a metric`);

  const limits = new Map<string, string>();
  for (const m of security.matchAll(/^\| `--([a-z-]+)` \| `([^`]+)` \|/gm)) limits.set(m[1]!, m[2]!);
  for (const flag of ['max-message-bytes', 'max-concurrent-streams', 'max-connection-memory', 'max-connection-idle', 'max-connection-age', 'max-pending-writes', 'max-page-bytes', 'revoke-batch-size']) {
    t.true(limits.has(flag), `the limits table has --${flag}`);
  }
  for (const [flag, shown] of limits) t.is(shown as string | undefined, SETTINGS.find((s) => s.flag === flag)?.default, `--${flag}'s default`);
});

test('every sessiond command docs/security.md shows parses, and `keys generate` runs as shown', async (t) => {
  const commands = sessiondCommands(security);
  t.true(commands.length >= 4);
  t.true(commands.some((a) => a[0] === 'sessions'), 'a client command, after its VAR=... prefix, is found too');
  const program = buildProgram();
  const runs: Promise<void>[] = [];
  for (const argv of commands) {
    let command: Command = program;
    let i = 0;
    for (; i < argv.length; i++) {
      const sub = command.commands.find((c) => c.name() === argv[i]);
      if (!sub) break;
      command = sub;
    }
    const shown = argv.join(' ');
    t.not(command, program, `${shown}: a command`);
    t.is(command.commands.length, 0, `${shown}: a whole command, not a group`);
    const longs = new Set(command.options.map((o) => o.long));
    for (const word of argv.slice(i)) if (word.startsWith('--')) t.true(longs.has(word.split('=')[0]!), `${shown}: ${word} is an option of sessiond ${command.name()}`);
    // With arguments: an example to run, not a mention of the command's name.
    if (argv[0] === 'keys' && argv[1] === 'generate' && argv.length > 2) {
      runs.push(
        runCli(argv).then((r) => {
          t.is(r.code, 0, `${shown}: ${r.stderr}`);
          t.regex(r.stdout, /sk_sessiond_/, shown);
        }),
      );
    }
  }
  t.true(runs.length >= 2);
  await Promise.all(runs);
});

/*
 * The README is what a newcomer reads first: short, in a fixed order (what
 * sessiond is and when not to use it, how to run and test it, call it,
 * configure it, trust it, deploy it, reach it from code, how fast it is, how
 * to work on it), with the rest in docs/.
 */

test('the README stays under 15 KiB', (t) => {
  const bytes = Buffer.byteLength(readme, 'utf8');
  t.true(bytes < 15 * 1024, `README.md is ${bytes} bytes`);
});

test('the README has its sections in the newcomer\'s order, and says when not to use sessiond', (t) => {
  const headings = [...readme.matchAll(/^## (.*)$/gm)].map((m) => m[1]!);
  t.deepEqual(headings, ['The two commands', 'A first session', 'The API at a glance', 'The ten settings people change', 'Durability', 'Deploying', 'Clients', 'Performance', 'Development']);
  const intro = readme.slice(0, readme.indexOf('\n## '));
  t.regex(intro, /\*\*When not to use it\.\*\*/);
  const first = /^## A first session\n([\s\S]*?)^## /m.exec(readme)![1]!;
  t.regex(first, /buf curl/);
  t.regex(first, /grpcurl/);
  const deploying = /^## Deploying\n([\s\S]*?)^## /m.exec(readme)![1]!;
  for (const needle of ['Dockerfile', 'docker build', 'deploy/kubernetes', 'kubectl apply']) t.true(deploying.includes(needle), `Deploying mentions ${needle}`);
  const clients = /^## Clients\n([\s\S]*?)^## /m.exec(readme)![1]!;
  for (const needle of ['TypeScript', 'Python', 'clients/go/README.md']) t.true(clients.includes(needle), `Clients mentions ${needle}`);
  const performance = /^## Performance\n([\s\S]*?)^## /m.exec(readme)![1]!;
  t.regex(performance, /```sh\nmake bench\n```/, 'the command that made the table');
  t.true(performance.includes('| ValidateSession |'), 'the table');
});

test('the README\'s ten settings are settings, each with its own variable and default', (t) => {
  const section = /^## The ten settings people change\n([\s\S]*?)^## /m.exec(readme)![1]!;
  const rows = [...section.matchAll(/^\| `--([a-z0-9-]+)` \| `([A-Z0-9_]+)` \| ([^|]+) \|/gm)];
  t.is(rows.length, 10);
  for (const [, flag, variable, shown] of rows) {
    const s = SETTINGS.find((x) => x.flag === flag);
    t.truthy(s, `--${flag} is a setting`);
    if (!s) continue;
    t.is(variable, envName(s.flag), `--${flag}'s variable`);
    t.is(shown!.trim(), s.default === '' ? '(none)' : `\`${s.default}\``, `--${flag}'s default`);
  }
});

test('no page of the docs carries benchmark history: no commit hashes, nothing "measured and not kept"', (t) => {
  const pages = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];
  for (const page of pages) {
    const md = readFileSync(join(ROOT, page), 'utf8');
    // A hash has a letter among its hex digits; a number such as `1048576` has none.
    t.deepEqual([...md.matchAll(/\b(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b/g)].map((m) => m[0]).filter((w) => /\d/.test(w)), [], `${page}: commit hashes`);
    t.notRegex(md, /measured,? (and )?not kept|measured and dropped|issue \d+/i, page);
  }
});
