/*
 * The shell commands a Markdown page shows, as test/91-doc-commands.test.ts
 * runs them. Conventions of the pages:
 * - commands are in ```sh blocks, one a line (a trailing backslash continues it);
 *   lines that are only a comment are not commands;
 * - a block whose lines start with "$ " is a transcript: the "$ " lines are the
 *   commands, and the lines after each are the output it shows;
 * - the prose just before a block (since the previous block or heading) is
 *   where the page says that a block is not run here, or which test runs it.
 */

export interface DocCommand {
  /** The page, relative to the repository. */
  page: string;
  /** 1-based line of the command in the page. */
  line: number;
  /** The command as shown, continuations joined with a space. */
  text: string;
  /** The output the page shows for it (transcripts only), possibly empty. */
  output: string[];
  /** The prose between the previous block or heading and this block. */
  context: string;
}

export interface DocBlock {
  page: string;
  lang: string;
  /** 1-based line of the opening fence. */
  line: number;
  body: string;
  context: string;
}

/** Every fenced block of `md`, with the prose before it. */
export function fencedBlocks(page: string, md: string): DocBlock[] {
  const lines = md.split('\n');
  const blocks: DocBlock[] = [];
  let prose: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i]!);
    if (!open) {
      if (/^#+ /.test(lines[i]!)) prose = [];
      prose.push(lines[i]!);
      continue;
    }
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    blocks.push({ page, lang: open[1]!, line: start + 1, body: body.join('\n'), context: prose.join('\n') });
    prose = [];
  }
  return blocks;
}

/** The commands of one ```sh block. */
export function blockCommands(block: DocBlock): DocCommand[] {
  const raw = block.body.split('\n');
  const transcript = raw.some((l) => l.startsWith('$ '));
  const out: DocCommand[] = [];
  for (let i = 0; i < raw.length; i++) {
    let text = raw[i]!;
    const line = block.line + 1 + i;
    if (transcript) {
      if (!text.startsWith('$ ')) continue; // output of the command before, taken below
      text = text.slice(2);
    }
    while (text.endsWith('\\') && i + 1 < raw.length) text = `${text.slice(0, -1).trimEnd()} ${raw[++i]!.trim()}`;
    if (text.trim() === '' || text.trim().startsWith('#')) continue;
    const output: string[] = [];
    if (transcript) while (i + 1 < raw.length && !raw[i + 1]!.startsWith('$ ')) output.push(raw[++i]!);
    out.push({ page: block.page, line, text: text.trim(), output, context: block.context });
  }
  return out;
}

/**
 * `NAME` when the command is only an assignment (`NAME=word` or
 * `export NAME=word`, a word being quoted strings, $(...) and plain
 * characters, up to an optional comment), so that later commands of the page
 * see it; undefined for a command run with a VAR=... prefix.
 */
export function assignedName(text: string): string | undefined {
  const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=/.exec(text);
  if (!m) return undefined;
  let i = m[0].length;
  while (i < text.length && !/\s/.test(text[i]!)) i = skipWordPart(text, i);
  const rest = text.slice(i).trim();
  return rest === '' || rest.startsWith('#') ? m[1] : undefined;
}

/** The index just past the word part at `i`: a quoted string, a $(...) or one plain character. */
function skipWordPart(text: string, i: number): number {
  const c = text[i]!;
  if (c === "'") return text.indexOf("'", i + 1) + 1 || text.length;
  if (c === '"') {
    for (let j = i + 1; j < text.length; j++) {
      if (text[j] === '\\') j++;
      else if (text[j] === '$' && text[j + 1] === '(') j = skipWordPart(text, j) - 1;
      else if (text[j] === '"') return j + 1;
    }
    return text.length;
  }
  if (c === '$' && text[i + 1] === '(') {
    let depth = 0;
    for (let j = i + 1; j < text.length; j++) {
      if (text[j] === "'" || text[j] === '"') j = skipWordPart(text, j) - 1;
      else if (text[j] === '(') depth++;
      else if (text[j] === ')' && --depth === 0) return j + 1;
    }
    return text.length;
  }
  return i + 1;
}

const columns = (line: string) => line.trim().split(/\s{2,}/);
const HEADER = /^[A-Z][A-Z ]*[A-Z](\s{2,}[A-Z][A-Z ]*[A-Z])+$/;

/**
 * What the shown output says the real one must have, as problems (none: it
 * has it). Shown JSON: every key it shows, at every depth (values differ from
 * run to run). Otherwise line by line: `exit N` exactly; `sessiond: CODE:` and
 * `sessiond: cannot reach the server at ADDRESS:` as a prefix; a table header
 * with the same columns, and rows of as many columns after it; `key: value`
 * lines by their key; any other line exactly.
 */
export function outputProblems(shown: string[], actual: string): string[] {
  if (shown.length === 0) return [];
  const got = actual.split('\n').map((l) => l.trimEnd());
  const joined = shown.join('\n');
  if (joined.trimStart().startsWith('{')) {
    let want: unknown;
    let have: unknown;
    try {
      want = JSON.parse(joined);
    } catch {
      return [`the output shown is not JSON: ${joined}`];
    }
    try {
      have = JSON.parse(actual);
    } catch {
      return [`the output is not JSON: ${actual}`];
    }
    return missingKeys(want, have, '');
  }
  const problems: string[] = [];
  let header: string[] | undefined;
  for (const line of shown) {
    const exit = /^exit \d+$/.exec(line);
    const error = /^(sessiond: (?:[A-Z_]+|cannot reach the server at \S+?):)/.exec(line);
    const field = /^([a-z][a-z ]*):\s+\S/.exec(line);
    if (exit) {
      if (!got.includes(line)) problems.push(`no line "${line}"`);
    } else if (error) {
      if (!got.some((l) => l.startsWith(error[1]!))) problems.push(`no line starting "${error[1]}"`);
    } else if (HEADER.test(line)) {
      header = columns(line);
      if (!got.some((l) => columns(l).join('|') === header!.join('|'))) problems.push(`no table header ${header.join(', ')}`);
    } else if (header && columns(line).length === header.length) {
      const at = got.findIndex((l) => columns(l).join('|') === header!.join('|'));
      if (!got.slice(at + 1).some((l) => columns(l).length === header!.length)) problems.push(`no row of ${header.length} columns under the header`);
    } else if (field) {
      if (!got.some((l) => l.startsWith(`${field[1]}:`))) problems.push(`no "${field[1]}:" line`);
    } else if (!got.includes(line.trimEnd())) {
      problems.push(`no line "${line}"`);
    }
  }
  return problems;
}

function missingKeys(want: unknown, have: unknown, path: string): string[] {
  if (typeof want !== 'object' || want === null || Array.isArray(want)) return [];
  if (typeof have !== 'object' || have === null) return [`${path || 'the answer'} is not an object`];
  const problems: string[] = [];
  for (const [k, v] of Object.entries(want)) {
    if (!(k in have)) problems.push(`no field ${path}${k}`);
    else problems.push(...missingKeys(v, (have as Record<string, unknown>)[k], `${path}${k}.`));
  }
  return problems;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens. */
export function anchorOf(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}
