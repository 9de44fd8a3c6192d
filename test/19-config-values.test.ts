import test from 'ava';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { SessiondClient } from '../src/client/client';
import { ConfigError, loadConfig } from '../src/server/config';
import { parseSetting, SETTINGS, type Spec } from '../src/server/settings';
import { spawnServer } from './helpers/process';
import { tempDir } from './helpers/server';

/*
 * One value of one setting parses to a typed result: any text is a possible
 * value (a token may start with "!"), and a problem never quotes a secret.
 */

const BAD_VALUES = ['!Zq9-secret-looking-value', 'not a value Zq9', '-99999999999999999999', '1e400', '', ' '];

test('a secret starting with "!" is a value like any other', (t) => {
  const { config } = loadConfig([], { SESSIOND_ADMIN_TOKEN: '!0123456789abcdefXYZ' });
  t.is(config.server.adminToken, '!0123456789abcdefXYZ');
  t.is(loadConfig(['--db-path=!odd/name.db'], {}).config.storage.path, '!odd/name.db');
});

test('a server started with a "!" admin token serves, and the token works', async (t) => {
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = await spawnServer({ SESSIOND_DB_PATH: join(dir, 's.db'), SESSIOND_ADMIN_TOKEN: '!0123456789abcdefXYZ' });
  t.teardown(() => void (p.proc.exitCode === null && p.proc.kill('SIGKILL')));
  const admin = new SessiondClient(p.address, { adminToken: '!0123456789abcdefXYZ', defaultDeadlineMs: 10_000 });
  t.teardown(() => admin.close());
  t.is((await admin.getStorageStatus()).journalMode, 'wal');
  t.false(p.stderr().includes('0123456789abcdefXYZ'));
  p.proc.kill('SIGTERM');
  t.is(await p.exited, 0);
});

test('every setting: a bad value is a problem naming the setting; a secret one never quotes the value', (t) => {
  let refused = 0;
  for (const s of SETTINGS as readonly Spec[]) {
    for (const value of BAD_VALUES) {
      for (const [argv, env] of [[[`--${s.flag}=${value}`], {}], [[], { [`SESSIOND_${s.flag.toUpperCase().replace(/-/g, '_')}`]: value }]] as const) {
        let problems: string[] = [];
        try {
          loadConfig(argv, env);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
          problems = err.problems;
        }
        const text = problems.join('\n');
        if (s.secret && value.trim() !== '') t.false(text.includes(value.trim()), `--${s.flag}: ${text}`);
        const own = problems.filter((p) => p.includes(s.flag));
        if (own.length > 0) refused++;
      }
    }
  }
  t.true(refused > SETTINGS.length, `most settings refuse most of these values (${refused})`);
});

test('parseSetting of a secret of any kind never quotes the value, and a non-secret one does', (t) => {
  const kinds: Spec['kind'][] = ['int', 'number', 'bool', 'duration', 'size', ['a', 'b']];
  for (const kind of kinds) {
    const secret: Spec = { flag: 'x', kind, default: '', help: '', secret: true, min: 0, max: 10 };
    const open: Spec = { ...secret, secret: false };
    for (const value of ['Zq9-not-valid', '12345']) {
      const r = parseSetting(secret, value);
      if (!r.ok) t.false(r.problem.includes(value), `${JSON.stringify(kind)}: ${r.problem}`);
      const o = parseSetting(open, value);
      if (!o.ok) t.true(o.problem.includes(value), `${JSON.stringify(kind)}: ${o.problem}`);
    }
  }
  t.deepEqual(parseSetting({ flag: 'x', kind: 'string', default: '', help: '' }, '!x'), { ok: true, value: '!x' });
});
