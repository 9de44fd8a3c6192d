import test, { type ExecutionContext } from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './helpers/server';

/*
 * scripts/buf-breaking.sh, the `make breaking` step of `make test`, on
 * throw-away git repositories holding a copy of proto/: a wire-incompatible
 * change fails it, a compatible one passes, and the awkward cases (the first
 * commit, a branch, a shallow clone, no git history at all) do what the
 * script's header says.
 */

const ROOT = join(__dirname, '..');
const SCRIPT = join(ROOT, 'scripts', 'buf-breaking.sh');
const SERVICE_PROTO = join('proto', 'sessions', 'v1', 'session_service.proto');

const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'test',
  GIT_AUTHOR_EMAIL: 'test@example.invalid',
  GIT_COMMITTER_NAME: 'test',
  GIT_COMMITTER_EMAIL: 'test@example.invalid',
  GIT_CONFIG_NOSYSTEM: '1',
  BUF_CACHE_DIR: join(ROOT, '.cache', 'buf'),
};

function git(dir: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd: dir, env: GIT_ENV, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function commitAll(dir: string, message: string): void {
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '--allow-empty', '-m', message);
}

/** Edits session_service.proto in place. */
function editProto(dir: string, from: string, to: string): void {
  const file = join(dir, SERVICE_PROTO);
  const text = readFileSync(file, 'utf8');
  if (!text.includes(from)) throw new Error(`${from} not in ${SERVICE_PROTO}`);
  writeFileSync(file, text.replace(from, to));
}

const RENUMBER = ['  string except_session_id = 3;\n}\n\nmessage RevokeSessionsResponse', '  string except_session_id = 7;\n}\n\nmessage RevokeSessionsResponse'] as const;
const ADD_FIELD = ['message RevokeSessionsResponse {\n', 'message RevokeSessionsResponse {\n  // Added later: compatible.\n  string note = 9;\n'] as const;

/** A repository on main whose first commit is this working tree's proto/ and buf.yaml. */
function repoWithProto(t: ExecutionContext): string {
  const dir = tempDir('sessiond-breaking-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  git(dir, 'init', '-q', '-b', 'main');
  cpSync(join(ROOT, 'proto'), join(dir, 'proto'), { recursive: true });
  cpSync(join(ROOT, 'buf.yaml'), join(dir, 'buf.yaml'));
  commitAll(dir, 'proto v1');
  return dir;
}

async function breaking(dir: string, env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('bash', [SCRIPT], { cwd: dir, env: { ...GIT_ENV, ...env } });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

test('a renumbered field fails, a new field passes, and the first commit is skipped with the reason', async (t) => {
  const dir = repoWithProto(t);
  const first = await breaking(dir);
  t.is(first.code, 0, first.out);
  t.regex(first.out, /SKIPPED: HEAD is the first commit/);

  editProto(dir, ...ADD_FIELD);
  commitAll(dir, 'add a field');
  const added = await breaking(dir);
  t.is(added.code, 0, added.out);
  t.regex(added.out, /against the previous commit \(HEAD~1\)/);
  t.regex(added.out, /no breaking change/);

  // Uncommitted: the working tree is what is checked.
  editProto(dir, ...RENUMBER);
  const dirty = await breaking(dir);
  t.not(dirty.code, 0, dirty.out);
  t.regex(dirty.out, /Previously present field "3" with name "except_session_id" on message "RevokeSessionsRequest"/);

  commitAll(dir, 'renumber subject');
  const committed = await breaking(dir);
  t.not(committed.code, 0, committed.out);
  t.regex(committed.out, /RevokeSessionsRequest/);
  t.notRegex(committed.out, /no breaking change/);

  // An explicit base, as CI might set it.
  const explicit = await breaking(dir, { BREAKING_AGAINST: 'HEAD~2' });
  t.not(explicit.code, 0, explicit.out);
  t.regex(explicit.out, /against HEAD~2/);
  const bogus = await breaking(dir, { BREAKING_AGAINST: 'no-such-ref' });
  t.not(bogus.code, 0);
  t.regex(bogus.out, /BREAKING_AGAINST=no-such-ref is not a commit/);
});

test('on a branch, every commit since it left main is checked, not only the last one', async (t) => {
  const dir = repoWithProto(t);
  commitAll(dir, 'main moves on');
  git(dir, 'checkout', '-q', '-b', 'feature');
  editProto(dir, ...RENUMBER);
  commitAll(dir, 'break it');
  writeFileSync(join(dir, 'NOTES'), 'harmless\n');
  commitAll(dir, 'harmless change on top');
  // HEAD~1 alone already has the break; the fork point is what catches it.
  const r = await breaking(dir);
  t.not(r.code, 0, r.out);
  t.regex(r.out, /against the fork point of feature from main/);
  t.regex(r.out, /RevokeSessionsRequest/);
});

test('a shallow clone is deepened to find the previous commit; without a remote it skips, saying why', async (t) => {
  const origin = repoWithProto(t);
  editProto(origin, ...RENUMBER);
  commitAll(origin, 'renumber subject');
  const clones = tempDir('sessiond-breaking-clone-');
  t.teardown(() => rmSync(clones, { recursive: true, force: true }));

  const shallow = join(clones, 'shallow');
  git(clones, 'clone', '-q', '--depth', '1', `file://${origin}`, shallow);
  t.is(git(shallow, 'rev-parse', '--is-shallow-repository').trim(), 'true');
  const deepened = await breaking(shallow);
  t.not(deepened.code, 0, deepened.out);
  t.regex(deepened.out, /shallow clone; fetching history/);
  t.regex(deepened.out, /RevokeSessionsRequest/);

  const orphan = join(clones, 'orphan');
  git(clones, 'clone', '-q', '--depth', '1', `file://${origin}`, orphan);
  git(orphan, 'remote', 'remove', 'origin');
  const skipped = await breaking(orphan);
  t.is(skipped.code, 0, skipped.out);
  t.regex(skipped.out, /SKIPPED: shallow clone, and git fetch could not get the previous commit/);
});

test('no proto/ at the base, or no git checkout at all: skipped with the reason', async (t) => {
  const dir = tempDir('sessiond-breaking-new-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  git(dir, 'init', '-q', '-b', 'main');
  writeFileSync(join(dir, 'README'), 'before the API\n');
  commitAll(dir, 'readme');
  cpSync(join(ROOT, 'proto'), join(dir, 'proto'), { recursive: true });
  cpSync(join(ROOT, 'buf.yaml'), join(dir, 'buf.yaml'));
  commitAll(dir, 'proto v1');
  const r = await breaking(dir);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /SKIPPED: proto\/ does not exist at the previous commit/);

  const plain = tempDir('sessiond-breaking-plain-');
  t.teardown(() => rmSync(plain, { recursive: true, force: true }));
  cpSync(join(ROOT, 'proto'), join(plain, 'proto'), { recursive: true });
  const none = await breaking(plain, { GIT_CEILING_DIRECTORIES: plain.replace(/\/[^/]+$/, '') });
  t.is(none.code, 0, none.out);
  t.regex(none.out, /SKIPPED: not a git checkout/);
});
