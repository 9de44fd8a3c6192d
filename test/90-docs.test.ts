import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envName, SETTINGS } from '../src/config';

const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');

test('the README configuration table names every setting, its variable and its default', (t) => {
  for (const s of SETTINGS) {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`--${s.flag}\` |`));
    t.truthy(row, `README has no row for --${s.flag}`);
    t.true(row!.includes(`\`${envName(s.flag)}\``), `row for --${s.flag} names ${envName(s.flag)}`);
    // An empty default (an optional setting: off unless given) shows as "(none)".
    if (s.default === '') t.true(row!.includes('(none)'), `row for --${s.flag} shows the default (none)`);
    else if (!('secret' in s)) t.true(row!.includes(`\`${s.default}\``), `row for --${s.flag} shows the default ${s.default}`);
  }
});

test('the README shows the two newcomer commands and every admin RPC', (t) => {
  for (const needle of ['make run', 'make test', 'AdminService/Checkpoint', 'AdminService/GetStorageStatus', 'AdminService/PurgeExpiredSessions', 'grpc.health.v1.Health/Check', 'CHECKPOINT_MODE_TRUNCATE', 'buf curl']) {
    t.true(readme.includes(needle), `README mentions ${needle}`);
  }
});
