import { parseArgs } from 'node:util';
import { formatDuration, parseDuration, parseSize } from './units';

/*
 * A table of settings read from --flags and PREFIX_* variables: the server's
 * (settings.ts) and the bench's (bench/options.ts) feed the same engine. One
 * spec per setting says how its text parses; settings-describe.ts writes
 * the --help text and the configuration reference from the same specs.
 */

/**
 * How a setting's text parses: a list of words is "one of them";
 * { someOf } is a comma-separated, non-empty selection of them.
 */
export type Kind = 'string' | 'duration' | 'size' | 'int' | 'number' | 'bool' | 'int-list' | readonly string[] | { readonly someOf: readonly string[] };

export interface Spec {
  /** Flag name; the variable is the table's prefix + upper snake case of it. */
  readonly flag: string;
  readonly kind: Kind;
  /** As it would be typed, so that it parses like any given value. */
  readonly default: string;
  readonly help: string;
  /** Bounds of a number, in the unit it parses to (ms, bytes); of each item of an int-list. */
  readonly min?: number;
  readonly max?: number;
  /** Its value is never printed: not in --help, not in a parse error, not in the start-up log. */
  readonly secret?: boolean;
  /** What a string looks like (host:port, a file), where "text" would say too little. */
  readonly allowed?: string;
  /** The heading it is listed under in --help and the docs. */
  readonly group?: string;
  /** Exists to measure something (make bench): it parses as any other, but --help and the main list of the docs leave it out. */
  readonly measurementOnly?: boolean;
}

/** What a value of each kind parses to. */
export type ValueOf<K> = K extends 'string'
  ? string
  : K extends 'bool'
    ? boolean
    : K extends 'duration' | 'size' | 'int' | 'number'
      ? number
      : K extends 'int-list'
        ? readonly number[]
        : K extends { readonly someOf: readonly (infer E)[] }
          ? readonly E[]
          : K extends readonly (infer E)[]
            ? E
            : never;

/** Every setting of a table by flag name, each with the type its kind parses to. */
export type Values<T extends readonly Spec[]> = { readonly [S in T[number] as S['flag']]: ValueOf<S['kind']> };

export type Value = string | number | boolean | readonly number[] | readonly string[];

export type Parsed = { readonly ok: true; readonly value: Value } | { readonly ok: false; readonly problem: string };

/**
 * The longest delay a Node timer keeps is 2^31-1 ms (about 24.8 days): a
 * longer one fires after 1 ms, and grpc-js takes that value as "never". A
 * duration is held to 24 days, a round figure below it, unless its spec says
 * otherwise.
 */
export const TIMER_MAX_MS = 24 * 86_400_000;

export function envName(prefix: string, flag: string): string {
  return `${prefix}${flag.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * One value of one setting. A problem names what was expected; it quotes the
 * value given only when the setting is not secret.
 */
export function parseValue(s: Spec, text: string): Parsed {
  const shown = (t: string) => (s.secret ? 'the value given' : JSON.stringify(t));
  const bad = (expected: string): Parsed => ({ ok: false, problem: `${shown(text)} is not ${expected}` });
  const outOfRange = (n: number, label: string, max = s.max): string | undefined => {
    const what = s.secret ? 'the value given' : label;
    if (s.min !== undefined && n < s.min) return `${what} is below the minimum of ${formatBound(s, s.min)}`;
    if (max !== undefined && n > max) return `${what} is above the maximum of ${formatBound(s, max)}`;
    return undefined;
  };
  const ranged = (n: number, label: string, max = s.max): Parsed => {
    const problem = outOfRange(n, label, max);
    return problem === undefined ? { ok: true, value: n } : { ok: false, problem };
  };
  const kind = s.kind;
  if (isOneOf(kind)) {
    const v = text.trim().toLowerCase();
    return kind.includes(v) ? { ok: true, value: v } : bad(`one of ${kind.join(', ')}`);
  }
  if (typeof kind === 'object') {
    const items = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
    const unknown = items.filter((t) => !kind.someOf.includes(t));
    if (items.length === 0 || unknown.length > 0) return { ok: false, problem: `${s.secret ? 'the value given' : unknown.map((u) => JSON.stringify(u)).join(', ') || 'an empty list'}: expected some of ${kind.someOf.join(', ')}` };
    return { ok: true, value: items };
  }
  switch (kind) {
    case 'string':
      return { ok: true, value: text };
    case 'bool':
      if (/^(true|1|yes|on)$/i.test(text.trim())) return { ok: true, value: true };
      if (/^(false|0|no|off)$/i.test(text.trim())) return { ok: true, value: false };
      return bad('a boolean (true or false)');
    case 'int':
      if (!/^-?\d+$/.test(text.trim())) return bad('an integer');
      return ranged(Number(text), text.trim());
    case 'number': {
      const n = Number(text);
      if (text.trim() === '' || !Number.isFinite(n)) return bad('a number');
      return ranged(n, text.trim());
    }
    case 'duration': {
      const ms = parseDuration(text);
      if (ms === undefined) return bad('a duration (e.g. 250ms, 30s, 5m, 24h, 7d)');
      return ranged(ms, `${text.trim()} (${ms}ms)`, s.max ?? TIMER_MAX_MS);
    }
    case 'size': {
      const n = parseSize(text);
      if (n === undefined) return bad('a size (e.g. 4096, 64KiB, 8MiB)');
      return ranged(n, text.trim());
    }
    case 'int-list': {
      const items = text.split(',').map((t) => t.trim());
      if (!items.every((t) => /^-?\d+$/.test(t))) return bad('a list of integers (e.g. 1,16,64)');
      const numbers = items.map(Number);
      for (const [i, n] of numbers.entries()) {
        const problem = outOfRange(n, items[i]!);
        if (problem !== undefined) return { ok: false, problem };
      }
      return { ok: true, value: numbers };
    }
  }
}

export function isOneOf(kind: Kind): kind is readonly string[] {
  return Array.isArray(kind);
}

/** A bound as a person would type it: 24d, 64MiB, -1. */
export function formatBound(s: Spec, n: number): string {
  if (n === 0) return '0';
  if (s.kind === 'duration') return formatDuration(n);
  if (s.kind === 'size') return formatSize(n);
  return String(n);
}

/** Bytes in the largest binary unit that divides them exactly. */
export function formatSize(n: number): string {
  for (const [unit, size] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (n !== 0 && n % size === 0) return `${n / size}${unit}`;
  }
  return String(n);
}

export interface ReadOptions<T extends readonly Spec[]> {
  /** Of every variable of the table (SESSIOND_); any other variable with it is a problem. */
  readonly envPrefix: string;
  /** Variables with the prefix that something else reads: accepted without complaint. */
  readonly otherVariables?: readonly string[];
  /** The text a setting not given takes; called in table order, with the values parsed so far. */
  readonly defaultFor?: (spec: T[number], sofar: Partial<Values<T>>) => string;
}

/** What was read: every setting that parsed, and every problem so far (callers add theirs). */
export interface Reading<V> {
  readonly values: Partial<V>;
  readonly problems: string[];
  /** --help or -h was given. */
  readonly help: boolean;
}

export type Outcome<V> = { readonly ok: true; readonly values: V; readonly help: boolean } | { readonly ok: false; readonly problems: readonly string[] };

/**
 * Defaults, then variables, then --flags (the last of a flag wins); each
 * value parsed by its spec. Flags take `--flag value` and `--flag=value`; a
 * boolean also stands alone for true, or takes the next argument as its value
 * (`--reflection false`), as documented. Unknown flags and variables, stray
 * arguments and bad values are all collected, never thrown.
 */
export function readSettings<const T extends readonly Spec[]>(table: T, argv: readonly string[], env: NodeJS.ProcessEnv, o: ReadOptions<T>): Reading<Values<T>> {
  const problems: string[] = [];
  const byFlag = new Map<string, Spec>(table.map((s) => [s.flag, s]));
  const given = new Map<string, { text: string; from: 'flag' | 'variable' }>();
  for (const s of table) {
    const text = env[envName(o.envPrefix, s.flag)];
    if (text !== undefined) given.set(s.flag, { text, from: 'variable' });
  }
  const known = new Set([...table.map((s) => envName(o.envPrefix, s.flag)), ...(o.otherVariables ?? [])]);
  for (const key of Object.keys(env)) {
    if (key.startsWith(o.envPrefix) && !known.has(key)) problems.push(`unknown variable ${key}${suggest(key.slice(o.envPrefix.length).toLowerCase().replace(/_/g, '-'), byFlag, o.envPrefix)}`);
  }

  // Not strict: strict mode throws at the first problem, where every problem
  // is to be listed at once; and it refuses `--cache-size -3000` and
  // `--reflection false`, which are documented forms. The checks strict mode
  // would make are made below, token by token.
  const { tokens } = parseArgs({
    args: [...argv],
    options: Object.fromEntries([
      ['help', { type: 'boolean', short: 'h' }],
      ...table.map((s) => [s.flag, { type: s.kind === 'bool' ? 'boolean' : 'string' }]),
    ]),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  let help = false;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') {
      problems.push(`unexpected argument ${JSON.stringify(token.value)}`);
      continue;
    }
    if (token.name === 'help') {
      help = true;
      continue;
    }
    const next = tokens[i + 1];
    // The argument right after a flag with no value of its own, when it is not a flag itself.
    const following = token.value === undefined && next?.kind === 'positional' && next.index === token.index + 1 ? next.value : undefined;
    const spec = token.rawName.startsWith('--') ? byFlag.get(token.name) : undefined;
    if (!spec) {
      problems.push(`unknown flag ${token.rawName}${suggest(token.name, byFlag, o.envPrefix)}`);
      if (following !== undefined) i++;
      continue;
    }
    let text = token.value;
    if (text === undefined && spec.kind === 'bool') {
      text = following ?? 'true';
      if (following !== undefined) i++;
    } else if (text === undefined) {
      problems.push(`--${spec.flag} needs a value`);
      continue;
    } else if (!token.inlineValue && text.startsWith('--')) {
      // parseArgs takes whatever follows a string flag, `--tls-cert --tls-key` too.
      // The argument may be a secret meant as the value, so a secret's is not quoted.
      problems.push(`--${spec.flag} needs a value, and ${spec.secret ? 'the argument after it' : JSON.stringify(text)} is taken for a flag (a value that starts with -- is given as --${spec.flag}=...)`);
      continue;
    }
    given.set(spec.flag, { text, from: 'flag' });
  }

  const values: Record<string, Value> = {};
  for (const s of table) {
    const g = given.get(s.flag);
    const text = g?.text ?? (o.defaultFor ? o.defaultFor(s, values as Partial<Values<T>>) : s.default);
    const parsed = parseValue(s, text);
    if (parsed.ok) values[s.flag] = parsed.value;
    else {
      const flag = `--${s.flag}`;
      const variable = envName(o.envPrefix, s.flag);
      const where = g === undefined ? `the default of ${flag} (${variable})` : g.from === 'flag' ? `${flag} (variable ${variable})` : `${variable} (flag ${flag})`;
      problems.push(`${where}: ${parsed.problem}`);
    }
  }
  // Each value was parsed by its own spec, so it has its kind's type.
  return { values: values as Partial<Values<T>>, problems, help };
}

/** The reading, whole when nothing (the engine's problems and the caller's) is wrong. */
export function settle<const T extends readonly Spec[]>(table: T, r: Reading<Values<T>>): Outcome<Values<T>> {
  if (r.problems.length > 0) return { ok: false, problems: r.problems };
  const values = r.values;
  if (!isWhole(table, values)) return { ok: false, problems: table.filter((s) => !(s.flag in values)).map((s) => `--${s.flag} has no value`) };
  return { ok: true, values, help: r.help };
}

function isWhole<T extends readonly Spec[]>(table: T, values: object): values is Values<T> {
  return table.every((s) => s.flag in values);
}

function suggest(name: string, known: Map<string, Spec>, envPrefix: string): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const flag of known.keys()) {
    const d = distance(name, flag);
    if (d < bestDistance) [best, bestDistance] = [flag, d];
  }
  return best ? ` (did you mean --${best} / ${envName(envPrefix, best)}?)` : '';
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
