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
  const zeroRuns: string[] = [];
  for (let i = 0; i < 2000; i++) {
    for (const text of [newToken(), newSessionId()]) {
      // Eight zero bytes in a row: about one in 2^64 from a real CSPRNG.
      if (Buffer.from(text, 'base64url').includes(Buffer.alloc(8))) zeroRuns.push(text);
    }
  }
  t.deepEqual(zeroRuns, []);
});

test('the stored hash of a token is its SHA-256', (t) => {
  const token = newToken();
  t.deepEqual(hashToken(token), createHash('sha256').update(token, 'utf8').digest());
});

test('an id starts with its creation time in milliseconds, so new ids sit together in the id index', (t) => {
  const at = Date.UTC(2026, 10, 27, 16, 0, 0, 123);
  const id = newSessionId(at);
  t.regex(id, ID_PATTERN);
  t.is(Buffer.from(id, 'base64url').readUIntBE(0, 6), at);
  // Ids a millisecond apart share their leading characters; ids years apart do not.
  t.is(newSessionId(at + 1).slice(0, 6), id.slice(0, 6));
  t.not(newSessionId(at + 365 * 86_400_000).slice(0, 4), id.slice(0, 4));
  // A clock before 1970 or past the 48 bits still gives a well-formed id.
  t.regex(newSessionId(-5), ID_PATTERN);
  t.regex(newSessionId(2 ** 60), ID_PATTERN);
});

test('ids made in the same millisecond differ in their 80 random bits, and the pool hands out no zeros', (t) => {
  const at = Date.UTC(2026, 10, 27);
  const tails = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const bytes = Buffer.from(newSessionId(at), 'base64url');
    t.is(bytes.length, 16);
    const tail = bytes.subarray(6);
    // Six zero bytes in a row out of ten random ones: about one in 2^44.
    if (tail.includes(Buffer.alloc(6))) t.fail(`zero run in ${tail.toString('hex')}`);
    tails.add(tail.toString('hex'));
  }
  t.is(tails.size, 3000);
});
