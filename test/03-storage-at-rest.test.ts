import test from 'ava';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { CheckpointMode } from '../generated/sessions/v1/admin_service';
import { server, createSome } from './helpers/storage';

/* What reaches the disk for a token: its SHA-256, never the token or its bytes. */

// ------------------------------------------------------------------ the token never reaches the disk

test('neither a token nor its decoded bytes are ever written; its SHA-256 is', async (t) => {
  const s = await server(t);
  const tokens = await createSome(s, 5);
  const rotated = await s.client.rotateSessionToken((await s.client.validateSession(tokens[0]!)).session!.id);
  tokens.push(rotated.token);

  const files = () => [s.dbPath, `${s.dbPath}-wal`, `${s.dbPath}-shm`].filter(existsSync).map((p) => ({ p, bytes: readFileSync(p) }));
  const sha = (token: string) => createHash('sha256').update(token, 'utf8').digest();
  const check = (stage: string) => {
    const all = files();
    t.true(all.length >= 2, `${stage}: the database and its WAL exist`);
    for (const token of tokens) {
      t.is(token.length, 43);
      const raw = Buffer.from(token, 'base64url');
      t.is(raw.length, 32);
      for (const { p, bytes } of all) {
        t.false(bytes.includes(Buffer.from(token, 'utf8')), `${stage}: token text in ${p}`);
        t.false(bytes.includes(raw), `${stage}: token bytes in ${p}`);
        t.false(bytes.includes(Buffer.from(token, 'utf16le')), `${stage}: token as UTF-16 in ${p}`);
      }
    }
    return all;
  };

  // Before any checkpoint the rows live only in the WAL.
  const before = check('before checkpoint');
  const walBefore = before.find((f) => f.p.endsWith('-wal'))!.bytes;
  for (const token of tokens) t.true(walBefore.includes(sha(token)), 'the hash is in the WAL, so the search works');

  const c = await s.client.checkpoint({ mode: CheckpointMode.CHECKPOINT_MODE_PASSIVE });
  t.true(c.checkpointedFrames > 0);
  const after = check('after PASSIVE checkpoint');
  const db = after.find((f) => f.p === s.dbPath)!.bytes;
  // tokens[0] was rotated away: its row now holds the new token's hash.
  for (const token of tokens.slice(1)) t.true(db.includes(sha(token)), 'the hash reached the database file');
});
