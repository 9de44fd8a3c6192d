/*
 * Run as its own process by bench/gc-tuning.ts: allocates objects that live
 * long enough to be promoted and then die, the way the transport's header
 * strings do, and prints how many major collections that took. With `tuned`,
 * it first applies the server's GC setting. The second argument is the number
 * of rounds of garbage.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { tuneGc } from '../src/server/gc-tuning';

if (process.argv[2] === 'tuned') tuneGc();
const ROUNDS = Number(process.argv[3] ?? 1200);
let majors = 0;
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if ((e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
});
observer.observe({ entryTypes: ['gc'] });
const live = Array.from({ length: 200_000 }, (_, i) => ({ i, s: `live-${i}` }));
const ring: object[][] = [];
for (let round = 0; round < ROUNDS; round++) {
  ring.push(Array.from({ length: 5_000 }, (_, i) => ({ round, i, s: `g-${round}-${i}` })));
  if (ring.length > 20) ring.shift();
}
// gc entries are delivered asynchronously.
setTimeout(() => {
  observer.disconnect();
  process.stdout.write(`${JSON.stringify({ majors, live: live.length })}\n`);
}, 50);
