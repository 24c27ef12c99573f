/**
 * CPU time and page faults of a process or of its main thread, from /proc/<pid>/stat (Linux), for the
 * benches that report what a run cost the CPU (ingest.ts, proxy.ts, proxy-fanout.ts, index-layer.ts).
 *
 * Not here: timing (callers), peak memory (proxy-fanout.ts).
 */
import { readFileSync } from 'node:fs';

/** Clock ticks per second of utime/stime (Linux USER_HZ). */
const USER_HZ = 100;

/** The fields of a stat file after its `(comm)`, which may hold spaces: [0] is the state. */
function statFields(path: string): string[] {
  const f = readFileSync(path, 'latin1');
  return f.slice(f.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of a stat file, seconds. */
function statCpu(path: string): number {
  const f = statFields(path);
  return (Number(f[11]) + Number(f[12])) / USER_HZ;
}

/** user + system CPU seconds of a process so far, all threads. */
export function cpuSeconds(pid: number): number {
  return statCpu(`/proc/${pid}/stat`);
}

/** CPU seconds of a process's main thread (its event loop) so far; default: this process's. */
export function mainThreadCpu(pid: number = process.pid): number {
  return statCpu(`/proc/${pid}/task/${pid}/stat`);
}

/** System (kernel) CPU seconds of a process, all threads. */
export function sysSeconds(pid: number): number {
  return Number(statFields(`/proc/${pid}/stat`)[12]) / USER_HZ;
}

/** Minor page faults of a process so far, all threads. */
export function minorFaults(pid: number): number {
  return Number(statFields(`/proc/${pid}/stat`)[7]);
}
