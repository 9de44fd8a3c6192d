#!/usr/bin/env node
'use strict';
// The `sessiond` command (package.json "bin"). From a checkout it runs the
// TypeScript source through tsx, so it is never stale; where only the compiled
// tree exists (`make build` output without src/), it runs dist/.
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const source = join(root, 'src', 'sessiond.ts');
let cli;
if (existsSync(source)) {
  require('tsx/cjs/api').register();
  cli = require(source);
} else {
  cli = require(join(root, 'dist', 'src', 'sessiond.js'));
}
cli.sessiond(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`sessiond: ${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
});
