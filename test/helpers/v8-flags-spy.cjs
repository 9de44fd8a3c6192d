/*
 * Preloaded (node --require) by test/09-gc-tuning.test.ts into a server
 * process: writes every V8 flag set at run time to stderr as a JSON line,
 * then sets it. V8 has no way to read a flag back from JavaScript.
 */
const v8 = require('node:v8');
const { syncBuiltinESMExports } = require('node:module');

const set = v8.setFlagsFromString;
v8.setFlagsFromString = (flags) => {
  process.stderr.write(`${JSON.stringify({ v8Flags: flags })}\n`);
  set(flags);
};
syncBuiltinESMExports();
