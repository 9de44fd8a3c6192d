import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { apiKeySha256, newApiKey } from '../../src/shared/api-keys';
import { readPrincipalsFile } from '../../src/server/principals-file';

export const ROOT = join(__dirname, '..', '..');
export const K8S = join(ROOT, 'deploy', 'kubernetes');

// Loose shapes: the manifests are data; a missing field fails the assertion that reads it.
/* eslint-disable @typescript-eslint/no-explicit-any */
export type Doc = any;

export function manifests(): { file: string; doc: Doc }[] {
  const out: { file: string; doc: Doc }[] = [];
  for (const file of readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const d of parseAllDocuments(readFileSync(join(K8S, file), 'utf8'))) {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      const doc = d.toJS() as Doc;
      if (doc !== null) out.push({ file, doc });
    }
  }
  return out;
}

export function one(kind: string, name?: string): Doc {
  const found = manifests().filter(({ doc }) => doc.kind === kind && (name === undefined || doc.metadata?.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!.doc;
}

export const statefulSet = () => one('StatefulSet');
export const container = () => statefulSet().spec.template.spec.containers[0];
export const configMapData = (): Record<string, string> => one('ConfigMap', container().envFrom[0].configMapRef.name).data;
export const principalsPath = (): string => configMapData()['SESSIOND_PRINCIPALS_FILE']!;

/** The volume and mount that put the principals file where SESSIOND_PRINCIPALS_FILE says, and the Secret it comes from. */
export function principalsVolume(): { volume: Doc; mount: Doc; secret: Doc } {
  const mount = container().volumeMounts.find((m: Doc) => m.mountPath === posix.dirname(principalsPath()));
  if (!mount) throw new Error(`nothing is mounted at ${posix.dirname(principalsPath())}`);
  const volume = statefulSet().spec.template.spec.volumes.find((v: Doc) => v.name === mount.name);
  return { volume, mount, secret: one('Secret', volume.secret.secretName) };
}

/** The Secret's principals file as shipped: placeholders where the key hashes go. */
export const examplePrincipalsText = (): string => principalsVolume().secret.stringData[posix.basename(principalsPath())];
export const PLACEHOLDER = /"REPLACE[^"]*"/g;

/**
 * The example principals file with each placeholder replaced by the hash of a
 * new key, as an operator does with `sessiond keys generate`, written to `dir`.
 * @returns its path and each principal's key, by name.
 */
export function realPrincipals(dir: string): { file: string; keys: Map<string, string> } {
  const made: string[] = [];
  const text = examplePrincipalsText().replace(PLACEHOLDER, () => {
    made.push(newApiKey());
    return JSON.stringify(apiKeySha256(made.at(-1)!));
  });
  const file = join(dir, 'principals.yaml');
  writeFileSync(file, text, { mode: 0o600 });
  const keys = new Map<string, string>();
  for (const e of readPrincipalsFile(file).entries) {
    const key = made.find((k) => e.apiKeySha256.includes(apiKeySha256(k)));
    if (key) keys.set(e.principal.name, key);
  }
  return { file, keys };
}

/** The Dockerfile as instructions (continuations joined), with the stage each belongs to. */
export function dockerfile(): { stage: string; op: string; args: string }[] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const out: { stage: string; op: string; args: string }[] = [];
  let stage = '';
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith('#')) continue;
    if (m[1] === 'FROM') stage = /\bAS\s+(\S+)/i.exec(m[2]!)?.[1] ?? '';
    out.push({ stage, op: m[1]!, args: m[2]!.trim() });
  }
  return out;
}

export function finalStage() {
  const all = dockerfile();
  const last = all.filter((i) => i.op === 'FROM').at(-1)!.stage;
  return all.filter((i) => i.stage === last);
}
