import { InvalidArgumentError, type Command } from 'commander';
import { apiKeySha256, newApiKey } from '../shared/api-keys';
import { PERMISSIONS, type Permission } from '../domain/principals';
import { principalsFromDocument } from '../domain/principals-document';
import { EXIT } from './run';

/*
 * `sessiond keys generate`: a new API key and the principals-file entry that
 * names it. It calls no server: the key exists only in this command's output
 * until an operator adds the entry to the file (which holds only the key's
 * SHA-256) and hands the key to the client. The key is printed once, on
 * stdout, and nowhere else: not on stderr, not in an error message.
 */

/** What a principal gets when no --permission is given: a backend's usual needs. */
export const DEFAULT_PERMISSIONS: readonly Permission[] = ['sessions.read', 'sessions.write'];

/** One entry of the principals file, with the fields named as the file names them. */
export interface GeneratedEntry {
  readonly name: string;
  readonly api_key_sha256: string[];
  readonly server_ids: string[];
  readonly permissions: Permission[];
}

/** What `keys generate --json` prints. */
export interface GeneratedKey {
  readonly name: string;
  readonly api_key: string;
  readonly entry: GeneratedEntry;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function collectPermission(value: string, previous: string[] | undefined): string[] {
  if (!(PERMISSIONS as readonly string[]).includes(value)) throw new InvalidArgumentError(`not one of ${PERMISSIONS.join(', ')}`);
  return collect(value, previous);
}

export function addKeysCommand(program: Command): void {
  const keys = program.command('keys').description('API keys for the principals file (no server is called)');
  keys
    .command('generate')
    .description(
      'print a new API key (once) and the principals-file entry for it, which holds only its SHA-256; ' +
        'add the entry to the file (reloaded on SIGHUP or when it changes) and give the key to the client as SESSIOND_API_KEY',
    )
    .argument('<name>', 'name of the principal: letters, digits and ._:@/- (at most 128), starting with a letter or digit')
    .option('--server-id <id>', 'a server_id the principal may act for: exact, "prefix-*", or "*" for every one (repeatable; at least one)', collect)
    .option('--permission <permission>', `a permission: ${PERMISSIONS.join(', ')} (repeatable; default ${DEFAULT_PERMISSIONS.join(', ')})`, collectPermission)
    .option('--json', 'print {name, api_key, entry} as JSON, for scripts')
    .action((name: string, options: { serverId?: string[]; permission?: Permission[]; json?: boolean }) => {
      const problems = entryProblems(name, options.serverId ?? [], options.permission ?? [...DEFAULT_PERMISSIONS]);
      if (problems.length > 0) {
        for (const p of problems) process.stderr.write(`sessiond: keys generate: ${p}\n`);
        process.exitCode = EXIT.usage;
        return;
      }
      const generated = generateKey(name, options.serverId!, options.permission ?? [...DEFAULT_PERMISSIONS]);
      process.stdout.write(options.json ? `${JSON.stringify(generated, null, 2)}\n` : humanText(generated));
      process.exitCode = EXIT.ok;
    });
}

/** A new key for `name` and its entry. Checked by entryProblems first. */
export function generateKey(name: string, serverIds: readonly string[], permissions: readonly Permission[]): GeneratedKey {
  const key = newApiKey();
  const entry: GeneratedEntry = { name, api_key_sha256: [apiKeySha256(key)], server_ids: [...new Set(serverIds)], permissions: [...new Set(permissions)] };
  return { name, api_key: key, entry };
}

/**
 * Why the entry would not load, in the principals file's own words: the entry
 * (with a stand-in hash) goes through the same check as the file, so that
 * what this command prints the server accepts.
 */
function entryProblems(name: string, serverIds: readonly string[], permissions: readonly Permission[]): string[] {
  if (serverIds.length === 0) return ['give at least one --server-id (an exact server_id, "prefix-*", or "*" for every one): a key should reach only the sessions it needs'];
  const entry = { name, api_key_sha256: ['0'.repeat(64)], server_ids: [...serverIds], permissions: [...permissions] };
  const labels = [`principals[0] (${name.slice(0, 64)}): `, 'principals[0]: '];
  return principalsFromDocument({ principals: [entry] }).problems.map((p) => {
    const label = labels.find((l) => p.startsWith(l));
    return label ? p.slice(label.length) : p;
  });
}

/** The entry as YAML, indented to go under `principals:`. JSON strings are YAML double-quoted scalars. */
export function entryYaml(entry: GeneratedEntry): string {
  const list = (xs: readonly string[]) => `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`;
  return [
    `  - name: ${JSON.stringify(entry.name)}`,
    `    api_key_sha256: ${list(entry.api_key_sha256)}`,
    `    server_ids: ${list(entry.server_ids)}`,
    `    permissions: ${list(entry.permissions)}`,
  ].join('\n');
}

function humanText(g: GeneratedKey): string {
  return [
    `API key of principal ${g.name} (shown only now; sessiond keeps only its SHA-256, so keep it in your secret store):`,
    '',
    `    ${g.api_key}`,
    '',
    'The client sends it as "authorization: Bearer <key>" (the CLI and smoke.py read SESSIOND_API_KEY).',
    '',
    'Entry for the principals file, under "principals:" (no secret in it):',
    '',
    entryYaml(g.entry),
    '',
  ].join('\n');
}
