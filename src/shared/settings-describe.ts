import { envName, formatBound, isOneOf, TIMER_MAX_MS, type Spec } from './settings-engine';

/*
 * A table of settings in words, for --help and docs/configuration.md: the
 * default as typed, the values allowed, the groups.
 */

/** The default as a person would type it; (none) for an empty one or a secret. */
export function shownDefault(s: Spec): string {
  return s.secret || s.default === '' ? '(none)' : s.default;
}

/** What values a setting takes, in words; `code` marks literal words (backticks in Markdown). */
export function allowedValues(s: Spec, code: (word: string) => string = (w) => w): string {
  const kind = s.kind;
  if (isOneOf(kind)) return kind.map(code).join(', ');
  if (typeof kind === 'object') return `some of ${kind.someOf.map(code).join(', ')}, comma-separated`;
  const range = (noun: string) => {
    const [min, max] = [s.min, kind === 'duration' ? (s.max ?? TIMER_MAX_MS) : s.max].map((n) => (n === undefined ? undefined : code(formatBound(s, n))));
    if (min !== undefined && max !== undefined) return `${noun}, ${min} to ${max}`;
    if (min !== undefined) return `${noun}, at least ${min}`;
    if (max !== undefined) return `${noun}, at most ${max}`;
    return noun;
  };
  switch (kind) {
    case 'string':
      return s.allowed ?? 'text';
    case 'bool':
      return `${code('true')} or ${code('false')}`;
    case 'int':
      return range('integer');
    case 'number':
      return range('number');
    case 'duration':
      return range('duration');
    case 'size':
      return range('size');
    case 'int-list':
      return range('integers, comma-separated');
  }
}

/** The groups of a table in the order their first setting comes, each with its settings. */
export function groups<S extends Spec>(specs: readonly S[]): [string, S[]][] {
  const out = new Map<string, S[]>();
  for (const s of specs) {
    const name = s.group ?? 'Other';
    out.set(name, [...(out.get(name) ?? []), s]);
  }
  return [...out];
}

/**
 * --help: every setting but the measurement-only ones, by group, each with
 * its variable, default, allowed values and meaning.
 * @param note more to say after a setting's default (the bench's smoke values).
 */
export function helpFor(table: readonly Spec[], envPrefix: string, intro: readonly string[], note: (s: Spec) => string = () => ''): string {
  const lines = [...intro];
  for (const [group, specs] of groups(table.filter((s) => !s.measurementOnly))) {
    lines.push('', `${group}:`);
    for (const s of specs) {
      lines.push(`  --${s.flag} <${allowedValues(s)}>`, `      ${envName(envPrefix, s.flag)}, default ${shownDefault(s)}${note(s)}`, `      ${s.help}`);
    }
  }
  return lines.join('\n');
}
