import test from 'ava';
import { ID_PATTERN, newSessionId } from '../src/domain/tokens';
import { SESSION_ID_PATTERN } from '../src/shared/ids';

// The CLI and clients check ids with the shared pattern; the server makes and
// checks them with its own (domain/ imports nothing outside itself).
test('the shared session-id pattern is the one the server makes and checks ids with', (t) => {
  t.is(SESSION_ID_PATTERN.source, ID_PATTERN.source);
  t.is(SESSION_ID_PATTERN.flags, ID_PATTERN.flags);
  for (let i = 0; i < 100; i++) t.regex(newSessionId(), SESSION_ID_PATTERN);
  t.notRegex('a'.repeat(21), SESSION_ID_PATTERN);
  t.notRegex('a'.repeat(23), SESSION_ID_PATTERN);
});
