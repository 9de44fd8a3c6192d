import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { principalsFromDocument, type PrincipalsRead } from '../domain/principals-document';

export { principalsFromDocument, type PrincipalsRead };

/*
 * The principals file (YAML or JSON; JSON is YAML too), read at start-up and
 * on every reload; its entries are checked by domain/principals-document.ts.
 */

/** Reads and checks the file. An unreadable or unparsable file is one problem; a bad entry is one problem per field. */
export function readPrincipalsFile(path: string): PrincipalsRead {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return { entries: [], problems: [`cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`] };
  }
  let doc: unknown;
  try {
    // Aliases are YAML, but bounded: a few nested ones must not expand into gigabytes.
    doc = parseYaml(text, { uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    // The parser's own words say where (line and column), not what the file holds.
    const first = String((err as Error).message ?? err).split('\n')[0]!.slice(0, 160);
    return { entries: [], problems: [`not YAML or JSON: ${first}`] };
  }
  return principalsFromDocument(doc);
}

