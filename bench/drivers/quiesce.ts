/**
 * Quiet before a timed step: what an untimed step of a trial (the training worker of starlight+prior
 * and starlight+traces) left behind must be gone before the timed pull starts, or the timed trial
 * shares the 2 cores and the disk with it (session 5: containerd-snapshots 450–690 ms instead of
 * 230–290, cli.request +0.15–0.6 s). Every wait polls with a deadline; nothing sleeps a fixed time.
 *
 * - `waitGone(dir)`: no process names a path under `dir` (daemon, containerd, shims), nothing is
 *   mounted under it;
 * - `waitProxyIdle(proxy)`: the proxy's /metrics gauges say no trace upload, no indexing and no
 *   background encoding is in progress (the training pulls of other images index them cold);
 * - `dropCaches()`: sync (the training wrote hundreds of MB: its writeback must not land in the timed
 *   pull) and drop page, dentry and inode caches, as every trial does before its setup;
 * - `waitDeviceIdle(stat)`: sync, then the block device holding the trial dir does no I/O for a
 *   window (no request in flight, no read, write, discard or flush completed): before every timed
 *   overhead container, in every mode alike (issue 12: what a mode's background work or the previous
 *   container's removal left on the disk is not timed as the next container's runtime overhead).
 *
 * Not here: stopping anything (worker.ts, containerd.ts stop their own), what is timed (trials.ts).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { HarnessError } from '../../fixtures/harness-error.js';
import type { Logger } from '../../src/log.js';
import { mountsUnder } from '../../src/worker/fs/mount-table.js';
import { pidsWhere } from './containerd.js';

/** Between probes, ms. */
const POLL_MS = 50;
/** How long a stopped worker may take to be gone, and the proxy to become idle, ms. */
export const QUIESCE_TIMEOUT_MS = 120_000;
/** How long the block device must stay idle before a timed container, ms (see waitDeviceIdle). */
export const DEVICE_IDLE_WINDOW_MS = 500;
/** Longest wait for that, ms: then the container runs anyway and the line says so. */
export const DEVICE_IDLE_TIMEOUT_MS = 5_000;
/** Between probes of the device's counters, ms (finer than POLL_MS: the window is short). */
const DEVICE_POLL_MS = 20;

/** The /metrics gauges that must all read 0 for the proxy to be idle. */
export const PROXY_BUSY_GAUGES = [
  'starlight_proxy_trace_uploads_running',
  'starlight_proxy_trace_uploads_waiting',
  'starlight_proxy_indexing',
  'starlight_proxy_background_encodes_pending',
] as const;

/** Polls `probe` until it returns undefined (= quiet); throws SL_ERR_BENCH_STEP naming what is left at the deadline. */
async function pollQuiet(what: string, probe: () => Promise<string | undefined>, signal: AbortSignal, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const left = await probe();
    if (left === undefined) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs || signal.aborted) {
      throw new HarnessError('SL_ERR_BENCH_STEP', `${what} still busy after ${timeoutMs} ms: ${left}`, { details: { what } });
    }
    await sleep(POLL_MS);
  }
}

/** Waits until no process names a path under `dir` and nothing is mounted under it; resolves with the ms waited. */
export function waitGone(dir: string, signal: AbortSignal, timeoutMs = QUIESCE_TIMEOUT_MS): Promise<number> {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  return pollQuiet(
    `stopped worker ${dir}`,
    async () => {
      const pids = pidsWhere((argv) => argv.some((a) => a === dir || a.includes(prefix)));
      const mounts = await mountsUnder(dir);
      return pids.length + mounts.length === 0 ? undefined : `processes ${pids.join(',') || 'none'}, mounts ${mounts.join(', ') || 'none'}`;
    },
    signal,
    timeoutMs,
  );
}

/** Parses Prometheus text: metric name (no labels) → value. */
export function parseGauges(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** Waits until every PROXY_BUSY_GAUGES of `proxy` ("host:port") reads 0; resolves with the ms waited. */
export function waitProxyIdle(proxy: string, signal: AbortSignal, timeoutMs = QUIESCE_TIMEOUT_MS): Promise<number> {
  return pollQuiet(
    `proxy ${proxy}`,
    async () => {
      const g = parseGauges(await (await fetch(`http://${proxy}/metrics`, { signal })).text());
      const busy = PROXY_BUSY_GAUGES.filter((k) => g.get(k) !== 0).map((k) => `${k}=${g.get(k) ?? 'absent'}`);
      return busy.length === 0 ? undefined : busy.join(' ');
    },
    signal,
    timeoutMs,
  );
}

/** Writes dirty pages back, then drops page, dentry and inode caches (root only; a failure is logged, not thrown). */
export function dropCaches(log: Logger): void {
  try {
    // Dirty pages are not dropped: write them back first, so no mode's cold run pays for another
    // step's writeback (e.g. overlayfs's unpack, Starlight's stream or graduation, a training run).
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch (err) {
    log.warn('bench-drop-caches-failed', { error: err });
  }
}

/** What a block device's sysfs `stat` file (Documentation/block/stat.rst) counts, as far as idleness goes. */
export interface DeviceCounters {
  reads: number;
  writes: number;
  inFlight: number;
  /** ms the device had any request in flight (moves with every kind of request). */
  ioTicks: number;
  /** 0 on kernels older than 4.18 (no discard fields). */
  discards: number;
  /** 0 on kernels older than 5.5 (no flush fields). */
  flushes: number;
}

/** Parses a sysfs block `stat` line; throws HarnessError when it has fewer than the 11 classic fields. */
export function parseBlockStat(text: string): DeviceCounters {
  const f = text.trim().split(/\s+/).map(Number);
  if (f.length < 11 || f.some((n) => !Number.isFinite(n))) throw new HarnessError('SL_ERR_BENCH_STEP', `not a block device stat line: ${JSON.stringify(text.slice(0, 200))}`);
  return { reads: f[0]!, writes: f[4]!, inFlight: f[8]!, ioTicks: f[9]!, discards: f[11] ?? 0, flushes: f[15] ?? 0 };
}

/** What waitDeviceIdle saw. */
export interface DeviceIdle {
  /** The device was idle for the whole window before the deadline. */
  idle: boolean;
  /** From the sync's start to the end of the quiet window (or the deadline), ms. */
  waitedMs: number;
  /** Requests completed from the sync's start on (the sync's own writeback included). */
  reads: number;
  writes: number;
  discards: number;
  flushes: number;
}

/**
 * `sync`, then polls the block device's stat file `statPath` until it shows no request in flight and
 * no counter moving for `windowMs`; gives up at `timeoutMs` (resolves with `idle: false`, so a busy
 * shared machine slows the bench instead of failing it). Why: on this VM's disk (ext4, no journal,
 * mounted `discard`) every freed extent is a synchronous discard, and dirty pages are written back
 * late; a timed cold container must not share the disk with what the mode or the bench did before it.
 * Resolves undefined without waiting when there is no stat file (tmpfs, an unlisted device).
 */
export async function waitDeviceIdle(
  statPath: string | undefined,
  signal: AbortSignal,
  opts: { windowMs?: number; timeoutMs?: number; read?: (path: string) => string; sync?: () => void } = {},
): Promise<DeviceIdle | undefined> {
  if (statPath === undefined) return undefined;
  const { windowMs = DEVICE_IDLE_WINDOW_MS, timeoutMs = DEVICE_IDLE_TIMEOUT_MS, read = (p: string) => readFileSync(p, 'utf8'), sync = () => execFileSync('sync') } = opts;
  const t0 = Date.now();
  const first = parseBlockStat(read(statPath));
  sync();
  let last = parseBlockStat(read(statPath));
  let quietSince = Date.now();
  const result = (idle: boolean): DeviceIdle => ({
    idle,
    waitedMs: Date.now() - t0,
    reads: last.reads - first.reads,
    writes: last.writes - first.writes,
    discards: last.discards - first.discards,
    flushes: last.flushes - first.flushes,
  });
  for (;;) {
    const now = Date.now();
    if (last.inFlight === 0 && now - quietSince >= windowMs) return result(true);
    if (now - t0 >= timeoutMs || signal.aborted) return result(false);
    await sleep(DEVICE_POLL_MS);
    const c = parseBlockStat(read(statPath));
    const moved = c.inFlight > 0 || c.ioTicks !== last.ioTicks || c.reads !== last.reads || c.writes !== last.writes || c.discards !== last.discards || c.flushes !== last.flushes;
    if (moved) quietSince = Date.now();
    last = c;
  }
}
