/** Parsing of human-friendly durations ("1h30m", "250ms", "7d") and sizes ("8MiB"). */

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, kb: 1000, mb: 1000 ** 2, gb: 1000 ** 3 };

/** Milliseconds, or undefined when the text is not a duration. A bare number is milliseconds. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(t)) return undefined;
  let total = 0;
  for (const [, num, , unit] of t.matchAll(/(\d+(\.\d+)?)(ms|s|m|h|d)/g)) total += Number(num) * DURATION_UNITS[unit!]!;
  return Math.round(total);
}

/** Bytes, or undefined when the text is not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(-?\d+)\s*([a-z]*)$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  return unit === undefined ? undefined : Number(m[1]) * unit;
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
