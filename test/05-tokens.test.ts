import test from 'ava';
import { createHash } from 'node:crypto';
import { hashToken, ID_PATTERN, newSessionId, newToken, TOKEN_LENGTH } from '../src/domain/tokens';

/*
 * Tokens and ids come from a pooled CSPRNG draw (tokens.ts): these would fail
 * if the pool handed out a byte twice, handed out the zeros it leaves behind,
 * or were cut at a refill.
 */

test('tokens and ids are well formed and never repeat across many pool refills', (t) => {
  const seen = new Set<string>();
  // 48 bytes a pair: 2000 pairs go through the 4 KiB pool about 23 times.
  for (let i = 0; i < 2000; i++) {
    const token = newToken();
    const id = newSessionId();
    t.regex(token, /^[A-Za-z0-9_-]+$/);
    if (token.length !== TOKEN_LENGTH || !ID_PATTERN.test(id)) t.fail(`malformed: ${token} ${id}`);
    seen.add(token);
    seen.add(id);
  }
  t.is(seen.size, 4000);
});

test('no token or id carries a run of zero bytes (the pool zeroes what it hands out)', (t) => {
  for (let i = 0; i < 2000; i++) {
    for (const text of [newToken(), newSessionId()]) {
      // Eight zero bytes in a row: about one in 2^64 from a real CSPRNG.
      if (Buffer.from(text, 'base64url').includes(Buffer.alloc(8))) t.fail(`zero run in ${text}`);
    }
  }
  t.pass();
});

test('the stored hash of a token is its SHA-256', (t) => {
  const token = newToken();
  t.deepEqual(hashToken(token), createHash('sha256').update(token, 'utf8').digest());
});
