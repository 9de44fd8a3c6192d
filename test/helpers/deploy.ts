import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, posix, relative, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { apiKeySha256, newApiKey } from '../../src/shared/api-keys';
import { readPrincipalsFile } from '../../src/server/principals-file';

export const ROOT = join(__dirname, '..', '..');
export const K8S = join(ROOT, 'deploy', 'kubernetes');

// Loose shapes: the manifests are data; a missing field fails the assertion that reads it.
/* eslint-disable @typescript-eslint/no-explicit-any */
export type Doc = any;

export const POSTGRES = join(K8S, 'postgres');

/** A kustomization's folder: its kustomization.yaml, parsed. */
export function kustomization(dir: string): Doc {
  return parse(join(dir, 'kustomization.yaml'))[0];
}

function parse(path: string): Doc[] {
  const out: Doc[] = [];
  for (const d of parseAllDocuments(readFileSync(path, 'utf8'))) {
    if (d.errors.length > 0) throw new Error(`${relative(K8S, path)}: ${d.errors.map((e) => e.message).join('; ')}`);
    const doc = d.toJS() as Doc;
    if (doc !== null) out.push(doc);
  }
  return out;
}

/**
 * What `kubectl apply -k dir` applies, as kustomize collects it: each of the
 * kustomization's resources, a file or the folder of another kustomization
 * (recursively), with the kustomization itself first. `file` is relative to
 * deploy/kubernetes/. No transformer is applied (labels, images): the checks
 * read the manifests as written.
 */
export function manifests(dir: string = K8S): { file: string; doc: Doc }[] {
  const out: { file: string; doc: Doc }[] = [{ file: relative(K8S, join(dir, 'kustomization.yaml')), doc: kustomization(dir) }];
  for (const r of kustomization(dir).resources as string[]) {
    const path = resolve(dir, r);
    if (statSync(path).isDirectory()) out.push(...manifests(path));
    else for (const doc of parse(path)) out.push({ file: relative(K8S, path), doc });
  }
  return out;
}

/** Every folder under deploy/kubernetes/ that holds a kustomization.yaml. */
export function kustomizationDirs(dir: string = K8S): string[] {
  const here = readdirSync(dir).includes('kustomization.yaml') ? [dir] : [];
  return [...here, ...readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).flatMap((e) => kustomizationDirs(join(dir, e.name)))];
}

/** Every SESSIOND_ name the files of a deployment mention, in settings or comments. */
export function namedVariables(dir: string): Set<string> {
  const named = new Set<string>();
  for (const file of new Set(manifests(dir).map((m) => m.file))) {
    for (const m of readFileSync(join(K8S, file), 'utf8').matchAll(/\bSESSIOND_[A-Z0-9_]+/g)) named.add(m[0]);
  }
  return named;
}

export function one(kind: string, name?: string, dir: string = K8S): Doc {
  const found = manifests(dir).filter(({ doc }) => doc.kind === kind && (name === undefined || doc.metadata?.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''} in ${relative(ROOT, dir)}, found ${found.length}`);
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

/**
 * The one workload of a deployment (its StatefulSet or Deployment), with its
 * pod spec, its container and the data of the ConfigMap that container reads.
 */
export function workloadOf(dir: string): { workload: Doc; pod: Doc; container: Doc; config: Record<string, string> } {
  const found = manifests(dir).filter(({ doc }) => doc.kind === 'StatefulSet' || doc.kind === 'Deployment');
  if (found.length !== 1) throw new Error(`expected one workload in ${relative(ROOT, dir)}, found ${found.length}`);
  const workload = found[0]!.doc;
  const pod = workload.spec.template.spec;
  const container = pod.containers[0];
  return { workload, pod, container, config: one('ConfigMap', container.envFrom[0].configMapRef.name, dir).data };
}

/** Whether a label selector (matchLabels only, as these manifests write them) selects pods with these labels. */
export function selects(selector: Doc, labels: Record<string, string>): boolean {
  if (selector.matchExpressions !== undefined) throw new Error('matchExpressions: not read by this check');
  const want = Object.entries(selector.matchLabels ?? {});
  return want.length > 0 && want.every(([k, v]) => labels[k] === v);
}

/** The hosts (host:port) of a libpq URL, which may list several (host1:5432,host2:5432): not a WHATWG URL. */
export function urlHosts(url: string): string[] {
  const authority = url.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split(/[/?#]/, 1)[0]!;
  return authority.slice(authority.lastIndexOf('@') + 1).split(',');
}
