import type { JsonValue } from '@bufbuild/protobuf';

/*
 * Human-readable output: a reply's proto JSON (see proto-json.ts) as aligned
 * "key: value" lines, or as a table. Rendering the JSON, rather than each
 * reply field by hand, shows every field, fields added to the API later
 * included, with the same values as --json.
 */

/** "walFrames" -> "wal frames". */
export function label(jsonName: string): string {
  return jsonName.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();
}

/** One value on one line: objects as k=v pairs, byte counts with a readable size. */
export function scalar(key: string, value: JsonValue | undefined): string {
  if (value === undefined || value === null || value === '') return '-';
  if (Array.isArray(value)) return value.length === 0 ? '-' : value.map((v) => scalar('', v)).join(', ');
  if (typeof value === 'object') {
    const entries = Object.entries(value);
    return entries.length === 0 ? '-' : entries.map(([k, v]) => `${k}=${scalar(k, v)}`).join(', ');
  }
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (/Bytes$/.test(key) && /^-?\d+$/.test(String(value)) && Math.abs(Number(value)) >= 1024) return `${value} (${size(Number(value))})`;
  return String(value);
}

/** Aligned "key: value" lines for every field of a proto JSON object; nested messages indented below their key. */
export function keyValues(obj: JsonValue, indent = ''): string {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return `${indent}${scalar('', obj)}`;
  const entries = Object.entries(obj);
  const width = Math.max(0, ...entries.map(([k]) => label(k).length)) + 1;
  const lines: string[] = [];
  for (const [k, v] of entries) {
    const nested = v !== null && typeof v === 'object' && !Array.isArray(v) && k !== 'attributes';
    if (nested && Object.keys(v).length > 0) lines.push(`${indent}${label(k)}:`, keyValues(v, `${indent}  `));
    else lines.push(`${indent}${`${label(k)}:`.padEnd(width + 1)}${scalar(k, v)}`);
  }
  return lines.join('\n');
}

/** A plain-text table with a header row; columns padded to their widest cell. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

function size(n: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}
