/*
 * CPU time from /proc beyond one process's total (server-process.ts
 * cpuMicros): one thread's (the main JavaScript thread is the bound of a
 * Node.js server), and a process tree's (a primary and the workers it forks).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { cpuMicros } from './server-process';

/** utime + stime of thread `tid` of `pid`, in microseconds (the main thread's tid is the pid). */
export function threadCpuMicros(pid: number, tid = pid): number {
  return cpuMicros(pid, `/proc/${pid}/task/${tid}/stat`);
}

/** Field 4 of /proc/<pid>/stat; undefined once the process is gone. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** `pid` and every process descended from it, now. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = Number(name);
    const parent = parentOf(p);
    if (parent === undefined) continue;
    const list = children.get(parent);
    if (list) list.push(p);
    else children.set(parent, [p]);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** The node processes of `pid`'s tree (under tsx, the server also has an esbuild child, which serves no calls). */
export function nodeProcesses(pid: number): number[] {
  return processTree(pid).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'node';
    } catch {
      return false;
    }
  });
}
