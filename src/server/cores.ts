import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

/**
 * The cores this process may use, for --workers auto: the CPUs it may run on
 * (os.availableParallelism follows the affinity mask, and so cgroup cpusets),
 * capped by a cgroup CPU quota, rounded up. A container limited to 2 CPUs on
 * a 32-core node has 32 CPUs in its affinity mask but 2 CPUs' worth of time:
 * 32 workers would share it, for no gain and 16 times the memory.
 * @param root where /sys/fs/cgroup is found (a test's own folder).
 */
export function usableCores(root = '/', cpus = availableParallelism()): number {
  const quota = cgroupQuota(root);
  return Math.max(1, quota === undefined ? cpus : Math.min(cpus, Math.ceil(quota)));
}

/**
 * The smallest CPU quota, in CPUs, on this process's cgroup and its parents:
 * cgroup v2's cpu.max ("max 100000" is none), else v1's cfs quota over its
 * period. Undefined when none is set or readable.
 */
function cgroupQuota(root: string): number | undefined {
  const own = read(join(root, 'proc/self/cgroup')) ?? '';
  const v2Path = /^0::(\/.*)$/m.exec(own)?.[1] ?? '/';
  const v1Path = /^\d+:[^:]*\bcpu\b[^:]*:(\/.*)$/m.exec(own)?.[1] ?? '/';
  const quotas: number[] = [];
  // A container's cgroup namespace shows its own cgroup as the root; without one, the path names it.
  for (let dir = v2Path; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
    const [quota, period] = (read(join(root, 'sys/fs/cgroup', dir, 'cpu.max')) ?? '').split(/\s+/);
    const q = ratio(quota, period);
    if (q !== undefined) quotas.push(q);
    if (dir === '/') break;
  }
  for (const dir of new Set([v1Path, '/'])) {
    const base = join(root, 'sys/fs/cgroup/cpu', dir);
    const q = ratio(read(join(base, 'cpu.cfs_quota_us')), read(join(base, 'cpu.cfs_period_us')));
    if (q !== undefined) quotas.push(q);
  }
  return quotas.length > 0 ? Math.min(...quotas) : undefined;
}

function ratio(quota: string | undefined, period: string | undefined): number | undefined {
  const q = Number(quota);
  const p = Number(period);
  // "max", -1 (v1's none) and anything unreadable mean no quota.
  return Number.isFinite(q) && Number.isFinite(p) && q > 0 && p > 0 ? q / p : undefined;
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}
