/*
 * Where a server's main thread spent its time, from the .cpuprofile files that
 * `make bench BENCH_CPU_PROF=dir` leaves (node --cpu-prof): each sample goes
 * to the innermost frame of the first group it falls in, so that native work
 * (SQLite's read, a hash) counts for the sessiond code that called it.
 *   node --import tsx bench/profile-summary.ts dir/CPU.....cpuprofile
 */
import { readFileSync } from 'node:fs';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string }; children?: number[] }
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

/** First match wins, tried from the sampled frame outwards. */
const GROUPS: [string, (url: string) => boolean][] = [
  ['token lookup: SQLite read, row to record', (u) => u.includes('/src/storage/')],
  ['token hash', (u) => u.includes('/src/domain/tokens')],
  ['answer encoding', (u) => u.includes('session-wire') || u.includes('stream-answers')],
  ['validation rules', (u) => u.includes('/src/domain/')],
  ['request decoding', (u) => u.includes('request-decoding') || u.includes('stream-request') || u.includes('/generated/')],
  ['sessiond stream and turns', (u) => u.includes('/src/transport/')],
  ['grpc-js', (u) => u.includes('@grpc/grpc-js')],
  ['node HTTP/2, streams, net', (u) => /node:(internal\/)?(http2|stream|net|_stream)/.test(u) || u.includes('stream_base_commons')],
];

export function summarizeProfile(p: Profile): { group: string; ms: number; shareOfBusy: number }[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const totals = new Map<string, number>();
  for (const [id, us] of self) {
    const fn = byId.get(id)!.callFrame.functionName;
    let group = fn.startsWith('(') ? fn : 'other';
    if (!fn.startsWith('(')) {
      for (let at: number | undefined = id; at !== undefined && group === 'other'; at = parent.get(at)) {
        const url = byId.get(at)!.callFrame.url;
        group = GROUPS.find(([, test]) => test(url))?.[0] ?? 'other';
      }
    }
    totals.set(group, (totals.get(group) ?? 0) + us);
  }
  const busy = [...totals].filter(([g]) => g !== '(idle)').reduce((n, [, us]) => n + us, 0);
  return [...totals].filter(([g]) => g !== '(idle)').sort((a, b) => b[1] - a[1]).map(([group, us]) => ({ group, ms: us / 1000, shareOfBusy: us / busy }));
}

if (require.main === module) {
  for (const file of process.argv.slice(2)) {
    process.stdout.write(`${file}\n`);
    for (const r of summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as Profile)) {
      process.stdout.write(`  ${r.group.padEnd(42)} ${r.ms.toFixed(0).padStart(7)} ms ${(100 * r.shareOfBusy).toFixed(1).padStart(5)}% of the busy time\n`);
    }
  }
}
