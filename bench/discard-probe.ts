/**
 * When do deletes on this machine's disk issue their discards, and for how long (issue 12: does
 * Starlight's relocation, which unlinks thousands of CAS blobs, leave discards behind that land on
 * the next container)? Creates `--files` files of 2–40 KiB in 64 dirs under a `chattr +T` dir (like
 * the CAS's shards), in a temp dir on the file system of `--dir`, writes them back, then:
 * - A: unlinks them and samples the block device's sysfs stat every 10 ms for `--watch-ms`;
 * - B: the same files again, unlinked and `sync` at once, then sampled the same way.
 * Prints, per phase, the discards completed during the unlinks and after them (count, MB, device
 * ms, the last one's time). Small (the files are MBs, ≤ 20 s), no drop_caches; the device counters
 * include every other process's requests (a baseline second is printed first).
 *
 *   npm run build && node dist/bench/discard-probe.js [--files 1500] [--dir /tmp] [--watch-ms 6000]
 *
 * Not here: timing containers (trials.ts), the idle wait before them (drivers/quiesce.ts).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { parseBlockStat, type DeviceCounters } from './drivers/quiesce.js';
import { blockStatOf } from './trials.js';

/** Shard dirs the files are spread over. */
const DIRS = 64;
/** Between samples of the device's counters, ms. */
const SAMPLE_MS = 10;

/** Discard sectors and ms are not in DeviceCounters: the raw fields 13 and 14 of the stat line. */
function sample(stat: string): DeviceCounters & { discardSectors: number; discardMs: number } {
  const text = readFileSync(stat, 'utf8');
  const f = text.trim().split(/\s+/).map(Number);
  return { ...parseBlockStat(text), discardSectors: f[13] ?? 0, discardMs: f[14] ?? 0 };
}

function makeFiles(root: string, n: number): string[] {
  const paths: string[] = [];
  for (let i = 0; i < n; i++) {
    const d = join(root, (i % DIRS).toString(16).padStart(2, '0'));
    if (i < DIRS) mkdirSync(d, { recursive: true });
    const p = join(d, `f${i}`);
    writeFileSync(p, Buffer.alloc(2048 + ((i * 7919) % 38_000), i % 251));
    paths.push(p);
  }
  execFileSync('sync', ['-f', root]);
  return paths;
}

async function phase(name: string, stat: string, root: string, n: number, syncAfter: boolean, watchMs: number): Promise<void> {
  const paths = makeFiles(root, n);
  await sleep(500);
  const s0 = sample(stat);
  const t0 = performance.now();
  for (const p of paths) unlinkSync(p);
  const unlinkMs = performance.now() - t0;
  const sU = sample(stat);
  let syncMs: number | undefined;
  if (syncAfter) {
    const ts = performance.now();
    execFileSync('sync');
    syncMs = performance.now() - ts;
  }
  let last = sample(stat);
  let lastDiscardAt = unlinkMs;
  const end = performance.now() + watchMs;
  while (performance.now() < end) {
    await sleep(SAMPLE_MS);
    const s = sample(stat);
    if (s.discards !== last.discards) lastDiscardAt = performance.now() - t0;
    last = s;
  }
  const mb = (sectors: number): string => ((sectors * 512) / 1e6).toFixed(1);
  console.log(
    `${name}: unlinked ${n} files in ${unlinkMs.toFixed(0)} ms${syncMs === undefined ? '' : `, then sync ${syncMs.toFixed(0)} ms`}; ` +
      `during the unlinks ${sU.discards - s0.discards} discards (${mb(sU.discardSectors - s0.discardSectors)} MB, ${sU.discardMs - s0.discardMs} device ms); ` +
      `in the ${watchMs} ms after ${last.discards - sU.discards} discards (${mb(last.discardSectors - sU.discardSectors)} MB, ${last.discardMs - sU.discardMs} ms), last at ${lastDiscardAt.toFixed(0)} ms; ` +
      `writes ${last.writes - s0.writes}, flushes ${last.flushes - s0.flushes}`,
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { files: { type: 'string', default: '1500' }, dir: { type: 'string', default: '/tmp' }, 'watch-ms': { type: 'string', default: '6000' } } });
  const n = Number(values.files);
  const watchMs = Number(values['watch-ms']);
  const stat = blockStatOf(values.dir);
  if (stat === undefined) throw new Error(`${values.dir} is on no block device sysfs lists`);
  const root = mkdtempSync(join(values.dir, 'sl-discard-'));
  try {
    execFileSync('chattr', ['+T', root]);
    const b0 = sample(stat);
    await sleep(1000);
    const b1 = sample(stat);
    console.log(`device ${stat}; baseline 1 s: ${b1.discards - b0.discards} discards, ${b1.writes - b0.writes} writes, ${b1.reads - b0.reads} reads`);
    await phase('A (no sync)', stat, root, n, false, watchMs);
    await phase('B (sync at once)', stat, root, n, true, Math.min(watchMs, 2500));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
