/**
 * One bench trial in its own process (better-sqlite3's benchmark pattern: no state leaks between
 * trials, a crash costs one row). Usage: node dist/bench/trials.js '<TrialSpec JSON>'.
 * Prints exactly one JSON line (a TrialResult) on stdout; logs go to stderr.
 *
 * Builds the trial environment: a fresh temp dir, one WAN emulator + request counter per cloud-side
 * target the mode dials, the mode's driver (containerd, snapshotters). Then measures (see the
 * lifecycle in drivers/types.ts) and tears everything down — also on failure, timeout and
 * SIGINT/SIGTERM (the result then says "failed").
 *
 * Not here: planning and aggregation (run.ts), modes (drivers/).
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createLogger, type Logger } from '../src/log.js';
import { startRequestCounter, type RequestCounter } from './drivers/counter.js';
import { unmountUnder } from './drivers/containerd.js';
import { modeByName } from './drivers/index.js';
import { Cleanups } from './drivers/proc.js';
import { dropCaches, waitDeviceIdle, type DeviceIdle } from './drivers/quiesce.js';
import type { ImageVersion, LinkCounters, ModeDriver, TrialEnv, TrialSpec } from './drivers/types.js';
import type { TrialMetrics, TrialResult } from './report/types.js';
import { WanEmulator } from './wan/emulator.js';

/** Parent dir of trial dirs: short, so unix socket paths under it stay < 108 bytes. */
const TMP_PREFIX = '/tmp/slb-';
/** Exit code after SIGINT (128 + 2). */
const EXIT_INTERRUPTED = 130;

/**
 * The overhead workloads, each a shell snippet run in its own fresh container and timed inside it
 * (printed as "<KEY> <ms>"): read every regular file; `find` every entry and `stat` every path
 * (metadata only); read every regular file < 16 KiB (open/close-bound); an import-heavy python3
 * start (images with python3 only, else it prints nothing).
 */
export const OVERHEAD_WORKLOADS = {
  READALL: 'find / -xdev -type f -print0 | xargs -0 cat > /dev/null',
  FINDSTAT: 'find / -xdev | wc -l > /dev/null; find / -xdev -print0 | xargs -0 stat -c %s > /dev/null',
  SMALLFILES: 'find / -xdev -type f -size -16384c -print0 | xargs -0 cat > /dev/null',
  PYIMPORT: 'python3 -c "import json, email.parser, http.server, xml.etree.ElementTree, asyncio, decimal, unittest, argparse, logging, urllib.request, csv, zipfile, tarfile, multiprocessing, concurrent.futures, pydoc, difflib, inspect, sqlite3, ssl"',
} as const;
export type OverheadKey = keyof typeof OVERHEAD_WORKLOADS;

/**
 * Shell script timing the given workloads in order (milliseconds, from `date +%s%N`). After the
 * last one, untimed: `times` (CPU of the shell and of its children, i.e. the workloads) and the
 * shell's /proc/self/io, whose read_bytes include its reaped children's: what the container made the
 * disk read, i.e. its page cache misses (a warm run should have ~none). Both with shell builtins only.
 */
export function overheadScript(keys: readonly OverheadKey[], blockStat?: string): string {
  const lines = ['ms() { echo $(( $(date +%s%N) / 1000000 )); }'];
  // The block device's counters around the timed part (sysfs, outside any namespace): read requests,
  // 512-byte sectors, ms they spent queued + in service. The whole device, so other processes' reads
  // count too (none expected in the timed window); what tells a layout with more or slower disk reads
  // (more requests, or more ms per request) from a slower CPU (same requests, more own CPU).
  const dev = blockStat === undefined ? undefined : `"${blockStat.replace(/["$`\\]/g, '')}"`;
  const devBefore = dev ? `if [ -r ${dev} ]; then read -r dr _ ds dt _ < ${dev}; fi; ` : '';
  for (const k of keys) {
    // /proc/stat's cpu line around the timed part (builtins, untimed): what the whole machine ran
    // meanwhile, in USER_HZ ticks: busy (user+nice+system+irq+softirq) and steal.
    const machine = `read -r _ u2 n2 y2 i2 w2 q2 x2 t2 _ < /proc/stat; echo "${k}_MACHINE $((u2 + n2 + y2 + q2 + x2 - u - n - y - q - x)) $((t2 - t))"`;
    const disk = dev ? `; if [ -n "$dr" ]; then read -r dr2 _ ds2 dt2 _ < ${dev}; echo "${k}_DISK $((dr2 - dr)) $((ds2 - ds)) $((dt2 - dt))"; fi` : '';
    const timed = `${devBefore}read -r _ u n y i w q x t _ < /proc/stat; s=$(ms); ${OVERHEAD_WORKLOADS[k]}; e=$(ms); ${machine}${disk}; echo "${k} $((e - s))"`;
    lines.push(k === 'PYIMPORT' ? `if command -v python3 >/dev/null; then ${timed}; fi` : timed);
  }
  lines.push('echo TIMES; times', 'while read -r k v; do [ "$k" = read_bytes: ] && echo "READ_BYTES $v"; done < /proc/$$/io; true');
  return lines.join('\n');
}

/** USER_HZ: /proc/stat ticks per second. */
const TICKS_PER_S = 100;
/** Unit of the sector counts in a block device's stat file. */
const SECTOR_BYTES = 512;

/**
 * The sysfs stat file (`/sys/dev/block/<major>:<minor>/stat`) of the block device holding `dir`,
 * or undefined when there is none (tmpfs, overlay, a device sysfs does not list).
 */
export function blockStatOf(dir: string): string | undefined {
  const dev = statSync(dir, { bigint: true }).dev;
  // glibc's dev_t encoding (gnu_dev_major/minor).
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const path = `/sys/dev/block/${major}:${minor}/stat`;
  return existsSync(path) ? path : undefined;
}

/** What a workload container cost (overheadScript's lines): see parseWorkloadCost. */
export interface WorkloadCost {
  /** CPU of the container's own processes, user + sys, ms. */
  cpuMs?: number;
  /** Bytes its processes read from disk (page cache misses). */
  readBytes?: number;
  /** CPU the whole machine spent while `key` was timed (busy, all cores), ms; minus cpuMs = everything else. */
  machineBusyMs?: number;
  /** CPU time the hypervisor took from this VM meanwhile (steal), ms. */
  stealMs?: number;
  /** The block device's read requests while `key` was timed (all processes), when the script had its stat file. */
  deviceReads?: number;
  /** Bytes of those requests. */
  deviceReadBytes?: number;
  /** ms those requests spent queued and in service (summed over requests in flight at once). */
  deviceReadMs?: number;
}

/** Parses overheadScript's untimed lines for workload `key` (the container ran only that one). */
export function parseWorkloadCost(out: string, key?: OverheadKey): WorkloadCost {
  const r: WorkloadCost = {};
  const m = key ? new RegExp(`^${key}_MACHINE (-?\\d+) (-?\\d+)$`, 'm').exec(out) : null;
  if (m) {
    r.machineBusyMs = (Number(m[1]) * 1000) / TICKS_PER_S;
    r.stealMs = (Number(m[2]) * 1000) / TICKS_PER_S;
  }
  const d = key ? new RegExp(`^${key}_DISK (-?\\d+) (-?\\d+) (-?\\d+)$`, 'm').exec(out) : null;
  if (d) {
    r.deviceReads = Number(d[1]);
    r.deviceReadBytes = Number(d[2]) * SECTOR_BYTES;
    r.deviceReadMs = Number(d[3]);
  }
  // `times`: the shell's line, then its children's: "0m0.150s 0m0.300s".
  const t = /^TIMES\n.*\n(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/m.exec(out);
  if (t) r.cpuMs = Math.round((Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4])) * 1000);
  const b = /^READ_BYTES (\d+)$/m.exec(out);
  if (b) r.readBytes = Number(b[1]);
  return r;
}

/** The first (fetch-everything) pass: every workload once. */
export const OVERHEAD_SCRIPT = overheadScript(['READALL', 'FINDSTAT', 'SMALLFILES', 'PYIMPORT']);

/** Metric names of each workload: cold (page, dentry and inode caches dropped, fresh container) and warm. */
const OVERHEAD_METRICS: Record<OverheadKey, { cold: keyof TrialMetrics; warm: keyof TrialMetrics }> = {
  READALL: { cold: 'readAllMs', warm: 'readAllWarmMs' },
  FINDSTAT: { cold: 'findStatMs', warm: 'findStatWarmMs' },
  SMALLFILES: { cold: 'smallFilesMs', warm: 'smallFilesWarmMs' },
  PYIMPORT: { cold: 'pythonImportMs', warm: 'pythonImportWarmMs' },
};


interface Link {
  emu: WanEmulator;
  counter: RequestCounter;
}

export function makeEnv(spec: TrialSpec, dir: string, signal: AbortSignal, cleanups: Cleanups, log: Logger): TrialEnv {
  const links = new Map<string, Promise<Link>>();
  const open = async (target: string): Promise<Link> => {
    const counter = await startRequestCounter(target);
    cleanups.add(`stop request counter for ${target}`, () => counter.close());
    const emu = await WanEmulator.start({ target: counter.address, rttMs: spec.rttMs, bandwidthBps: spec.bandwidthBps });
    cleanups.add(`stop WAN emulator for ${target}`, () => emu.close());
    return { emu, counter };
  };
  const all = async (): Promise<Link[]> => Promise.all(links.values());
  let settled: Link[] = [];
  return {
    spec,
    image: spec.benchImage,
    dir,
    signal,
    cleanups,
    log,
    async link(target) {
      let l = links.get(target);
      if (!l) {
        l = open(target);
        links.set(target, l);
      }
      const got = await l;
      settled = await all();
      return got.emu.address;
    },
    counters(): LinkCounters {
      const c: LinkCounters = { bytes: 0, bytesDown: 0, requests: 0, connections: 0 };
      for (const l of settled) {
        const s = l.emu.stats();
        c.bytes += s.bytesUp + s.bytesDown;
        c.bytesDown += s.bytesDown;
        c.connections += s.connections;
        c.requests += l.counter.requests();
      }
      return c;
    },
    resetCounters() {
      for (const l of settled) {
        l.emu.resetStats();
        l.counter.reset();
      }
    },
  };
}

async function startup(driver: ModeDriver, env: TrialEnv): Promise<TrialMetrics> {
  let target: ImageVersion = 'v1';
  if (env.spec.scenario === 'update') {
    await driver.pull('v1', env);
    const c = await driver.run('v1', env);
    await c.stop();
    await driver.settle?.('v1', env);
    // In every mode, as before each timed overhead container (timeWorkload): v1's writeback (the
    // unpack, a graduation, the logs) done and the disk idle first. An update comes after v1 has run
    // a while; without this, whichever mode flushes first (a sync, an fsync) pays for the disk work
    // of v1's pull that the trial made seconds before.
    const idle = await waitDeviceIdle(blockStatOf(env.dir), env.signal);
    process.stderr.write(`[bench] ${env.image.name} ${driver.name} before the timed update: ${describeIdle(idle)}\n`);
    env.resetCounters();
    target = 'v2';
  }
  const t0 = performance.now();
  await driver.pull(target, env);
  const t1 = performance.now();
  const c = await driver.run(target, env);
  const counters = env.counters();
  const m: TrialMetrics = { pullMs: t1 - t0, runToReadyMs: c.readyAt - c.startedAt, totalMs: c.readyAt - t0, ...counters };
  try {
    if (driver.settle) {
      const completeAt = await driver.settle(target, env);
      m.completeMs = (typeof completeAt === 'number' ? completeAt : performance.now()) - t0;
      m.bytesTotal = env.counters().bytes;
    }
  } finally {
    await c.stop();
  }
  return m;
}

/**
 * Pulls v1 and makes it "fully downloaded": a first container runs every workload (lazy modes fetch
 * everything), then the mode settles (Starlight: stream complete and image graduated).
 */
export async function prepareOverhead(driver: ModeDriver, env: TrialEnv): Promise<void> {
  if (!driver.exec) throw Object.assign(new Error(`mode ${driver.name} runs no containers`), { skip: true });
  await driver.pull('v1', env);
  await driver.settle?.('v1', env);
  // The first pass reads every file, so lazy modes fetch everything: the timed passes are "after a full download".
  await driver.exec('v1', ['sh', '-c', OVERHEAD_SCRIPT], env);
  await driver.settle?.('v1', env);
}

/** The per-container log's words for waitDeviceIdle's result. */
export function describeIdle(d: DeviceIdle | undefined): string {
  if (d === undefined) return 'no device to wait for';
  const io = `${d.writes} writes, ${d.discards} discards, ${d.reads} reads, ${d.flushes} flushes`;
  return `${d.idle ? 'device idle after' : 'device NOT idle after'} ${d.waitedMs} ms (${io})`;
}

/**
 * One timed workload in a fresh v1 container, ms (undefined when it printed nothing, e.g. no python3).
 * First, in every mode and cell alike: the mode settles (its background work done), then sync and
 * wait until the trial dir's block device is idle (waitDeviceIdle): the steady-state runtime
 * overhead, not the previous steps' disk work (the mode's deletes, the previous container's removal,
 * writeback). Then `cold` drops page, dentry and inode caches (when the spec drops caches).
 */
export async function timeWorkload(driver: ModeDriver, env: TrialEnv, key: OverheadKey, cache: 'cold' | 'warm'): Promise<number | undefined> {
  if (!driver.exec) throw Object.assign(new Error(`mode ${driver.name} runs no containers`), { skip: true });
  // The mode's own background work done (Starlight: complete, graduated, relocated; at once when so).
  await driver.settle?.('v1', env);
  const blockStat = blockStatOf(env.dir);
  const idle = await waitDeviceIdle(blockStat, env.signal);
  if (cache === 'cold' && env.spec.dropCaches) dropCaches(env.log);
  const startedAt = new Date().toISOString();
  const out = (await driver.exec('v1', ['sh', '-c', overheadScript([key], blockStat)], env)).stdout;
  const hit = new RegExp(`^${key} (\\d+)$`, 'm').exec(out);
  // Per container, to tell a slow run's cause on a shared machine: the workload's own CPU time (wall
  // time minus it is waiting: disk or other processes), what it read from disk (page cache misses)
  // and its wall-clock window (to line it up with the daemon's log).
  const cost = parseWorkloadCost(out, key);
  if (hit) {
    const read = cost.readBytes === undefined ? '?' : (cost.readBytes / 1e6).toFixed(1);
    const others = cost.machineBusyMs === undefined || cost.cpuMs === undefined ? '?' : Math.round(cost.machineBusyMs - cost.cpuMs);
    const device = cost.deviceReads === undefined ? '' : `, device ${cost.deviceReads} reads ${((cost.deviceReadBytes ?? 0) / 1e6).toFixed(1)} MB ${cost.deviceReadMs} ms`;
    process.stderr.write(
      `[bench] overhead ${env.image.name} ${driver.name} run ${env.spec.run} ${key} ${cache} ${hit[1]} ms, cpu ${cost.cpuMs ?? '?'} ms, others' cpu ${others} ms, steal ${cost.stealMs ?? '?'} ms, disk read ${read} MB${device}, before it ${describeIdle(idle)} (container ${startedAt} → ${new Date().toISOString()})\n`,
    );
  }
  return hit ? Number(hit[1]) : undefined;
}

async function overhead(driver: ModeDriver, env: TrialEnv): Promise<TrialMetrics> {
  await prepareOverhead(driver, env);
  const m: TrialMetrics = {};
  // Each workload: a fresh container after dropping caches (cold), then another fresh one (warm).
  for (const key of Object.keys(OVERHEAD_WORKLOADS) as OverheadKey[]) {
    for (const cache of ['cold', 'warm'] as const) {
      const ms = await timeWorkload(driver, env, key, cache);
      if (ms !== undefined) (m as Record<string, number>)[OVERHEAD_METRICS[key][cache]] = ms;
    }
  }
  // Disk use (issue 12): v1 as it is now, then v1 + v2 (the update pulled and complete).
  if (driver.diskBytes) {
    m.diskV1Bytes = await driver.diskBytes();
    await driver.pull('v2', env);
    await driver.settle?.('v2', env);
    m.diskV1V2Bytes = await driver.diskBytes();
  }
  return m;
}

export async function runTrial(spec: TrialSpec, signal: AbortSignal, log: Logger): Promise<TrialResult> {
  const base = { mode: spec.mode, image: spec.image, rttMs: spec.rttMs, bandwidthBps: spec.bandwidthBps, scenario: spec.scenario, workload: spec.workload, run: spec.run };
  const def = modeByName(spec.mode);
  if (!def) return { ...base, status: 'failed', reason: `unknown mode ${spec.mode}` };
  const cleanups = new Cleanups();
  const dir = mkdtempSync(TMP_PREFIX);
  cleanups.add('remove trial dir', async () => {
    const left = await unmountUnder(dir);
    if (left.length > 0) throw new Error(`still mounted: ${left.join(', ')}`);
    rmSync(dir, { recursive: true, force: true });
  });
  const env = makeEnv(spec, dir, signal, cleanups, log);
  const driver = def.create();
  let result: TrialResult;
  try {
    if (spec.dropCaches) dropCaches(log);
    await driver.setup(env);
    const metrics = spec.workload === 'startup' ? await startup(driver, env) : await overhead(driver, env);
    result = { ...base, status: 'ok', ...metrics, ...driver.extraMetrics?.() };
    const note = driver.note?.();
    if (note) result.note = note;
  } catch (err) {
    const e = err as { message?: string; skip?: boolean };
    result = { ...base, status: e.skip ? 'skipped' : 'failed', reason: signal.aborted ? 'interrupted' : (e.message ?? String(err)).split('\n')[0]!.slice(0, 500) };
  }
  const errors = await cleanups.run();
  if (errors.length > 0) log.warn('bench-trial-cleanup-failed', { errors });
  return result;
}

async function main(): Promise<number> {
  const log = createLogger({ fields: { component: 'bench-trial' } });
  const spec = JSON.parse(process.argv[2] ?? '{}') as TrialSpec;
  const ac = new AbortController();
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A trial that overruns twice its budget is aborted (each step also has its own timeout).
  const guard = setTimeout(() => ac.abort(), spec.timeoutMs * 2);
  const result = await runTrial(spec, ac.signal, log);
  clearTimeout(guard);
  process.stdout.write(JSON.stringify(result) + '\n');
  return interrupted ? EXIT_INTERRUPTED : 0;
}

if (process.argv[1]?.endsWith('trials.js')) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`bench trial: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
