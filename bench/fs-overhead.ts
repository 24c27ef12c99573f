/**
 * FUSE view overhead on a fully present tree: sequential read MB/s, 4 KiB random read IOPS and
 * `find` entries/s through a Starlight view (kernel passthrough on, and the daemon read path with
 * passthrough off) vs the same tree on ext4 and through overlayfs (lower = that ext4 dir). Prints
 * every measurement with the machine's load average, then a table of medians and ratios to ext4
 * and to overlayfs. Root only (mounts, drop_caches).
 *
 *   npm run build && node dist/bench/fs-overhead.js [--files 20000] [--big-mib 256] [--runs 3]
 *       [--cache cold,warm] [--targets ext4,overlayfs,starlight,starlight-daemon] [--threads 4]
 *
 * One child process per measurement (target × metric × cache × run); each child mounts its target
 * fresh, so the FUSE page cache starts empty. `cold`: `sync; echo 3 > /proc/sys/vm/drop_caches`
 * before the child (the backing ext4 files come from disk); `warm`: the driver reads the big files
 * and walks the tree through ext4 first, so it measures the view's overhead, not the disk.
 * Not here: lazy (absent) content, WAN emulation.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { MergedTree, TocEntry } from '../src/layers/toc.js';
import { FuseViewManager } from '../src/worker/fs/fuse-views.js';

/** Buffer size of sequential reads (bytes). */
const SEQ_CHUNK = 1 << 20;
/** Size of one random read (bytes) and how many of them per measurement. */
const RAND_SIZE = 4096;
const RAND_READS = 20_000;
/** Files per directory of the small-file tree. */
const PER_DIR = 100;
/** Upper bound of one child measurement (ms). */
const CHILD_TIMEOUT_MS = 300_000;

const TARGETS = ['ext4', 'overlayfs', 'starlight', 'starlight-daemon'] as const;
type Target = (typeof TARGETS)[number];
const METRICS = ['seq', 'rand', 'find'] as const;
type Metric = (typeof METRICS)[number];

function makeTree(dir: string, files: number, bigMiB: number): void {
  for (let i = 0; i < files; i++) {
    const d = join(dir, 'small', `d${Math.floor(i / PER_DIR)}`);
    if (i % PER_DIR === 0) mkdirSync(d, { recursive: true });
    writeFileSync(join(d, `f${i}`), Buffer.alloc(1024 + (i % 7) * 512, i % 251));
  }
  mkdirSync(join(dir, 'big'));
  for (let i = 0; i < 8; i++) writeFileSync(join(dir, 'big', `m${i}`), Buffer.alloc(4 << 20, i + 1));
  const chunk = Buffer.alloc(1 << 20);
  const fd = openSync(join(dir, 'big', 'huge'), 'w');
  for (let i = 0; i < bigMiB; i++) {
    chunk.fill(i % 251);
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

/** The tree as a MergedTree whose "digests" are the real paths (content is all present). */
function treeOf(dir: string): MergedTree {
  const entries: TocEntry[] = [];
  const walk = (p: string): void => {
    const st = lstatSync(p);
    const path = relative(dir, p);
    const base = { path, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtimeMs / 1000 };
    if (st.isDirectory()) {
      entries.push({ ...base, type: 'dir', size: 0 });
      for (const n of readdirSync(p)) walk(join(p, n));
    } else entries.push({ ...base, type: 'reg', size: st.size, digest: p });
  };
  walk(dir);
  entries.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  return { diffIDs: [], entries };
}

const BIG_FILES = ['huge', ...Array.from({ length: 8 }, (_, i) => `m${i}`)];

function seqRead(root: string): number {
  const buf = Buffer.alloc(SEQ_CHUNK);
  let bytes = 0;
  const start = process.hrtime.bigint();
  for (const name of BIG_FILES) {
    const fd = openSync(join(root, 'big', name), 'r');
    for (let n; (n = readSync(fd, buf, 0, SEQ_CHUNK, null)) > 0; ) bytes += n;
    closeSync(fd);
  }
  return bytes / 1e6 / (Number(process.hrtime.bigint() - start) / 1e9);
}

function randRead(root: string, sizeMiB: number): number {
  const buf = Buffer.alloc(RAND_SIZE);
  const blocks = (sizeMiB << 20) / RAND_SIZE;
  const fd = openSync(join(root, 'big', 'huge'), 'r');
  // 32-bit LCG in integer arithmetic (a float product loses its low bits and repeats few blocks).
  let seed = 12345;
  const start = process.hrtime.bigint();
  for (let i = 0; i < RAND_READS; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    readSync(fd, buf, 0, RAND_SIZE, ((seed >>> 8) % blocks) * RAND_SIZE);
  }
  closeSync(fd);
  return RAND_READS / (Number(process.hrtime.bigint() - start) / 1e9);
}

function findRate(root: string): number {
  const start = process.hrtime.bigint();
  const out = execFileSync('find', [root], { maxBuffer: 1 << 28 });
  let n = 0;
  for (const b of out) if (b === 10) n++;
  return n / (Number(process.hrtime.bigint() - start) / 1e9);
}

function measure(metric: Metric, root: string, bigMiB: number): number {
  if (metric === 'seq') return seqRead(root);
  if (metric === 'rand') return randRead(root, bigMiB);
  return findRate(root);
}

/** Child: mount `target` fresh over work/src, run one metric, print {value, stats} as JSON. */
async function child(work: string, target: Target, metric: Metric, bigMiB: number, threads: number): Promise<void> {
  const src = join(work, 'src');
  if (target === 'ext4') {
    console.log(JSON.stringify({ value: measure(metric, src, bigMiB) }));
    return;
  }
  if (target === 'overlayfs') {
    const ovl = join(work, 'ovl');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${src},upperdir=${join(work, 'upper')},workdir=${join(work, 'work')}`, ovl]);
    try {
      console.log(JSON.stringify({ value: measure(metric, ovl, bigMiB) }));
    } finally {
      execFileSync('umount', [ovl]);
    }
    return;
  }
  const mnt = join(work, 'view');
  const views = new FuseViewManager({ threads, passthrough: target === 'starlight' });
  try {
    const tree = treeOf(src);
    await views.mount(mnt, { tree, content: { locate: (d: string) => d, waitFor: async (d: string) => d } });
    const value = measure(metric, mnt, bigMiB);
    const st = views.stats(mnt);
    console.log(JSON.stringify({ value, stats: { reads: st?.reads, readBytes: st?.readBytes, passthroughOpens: st?.passthroughOpens, passthrough: st?.passthrough } }));
  } finally {
    await views.close();
  }
}

function prepareCache(work: string, cache: string): void {
  if (cache === 'cold') {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return;
  }
  for (const name of BIG_FILES) readFileSync(join(work, 'src', 'big', name));
  execFileSync('find', [join(work, 'src')], { maxBuffer: 1 << 28 });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      files: { type: 'string', default: '20000' },
      'big-mib': { type: 'string', default: '256' },
      runs: { type: 'string', default: '3' },
      cache: { type: 'string', default: 'cold,warm' },
      targets: { type: 'string', default: TARGETS.join(',') },
      threads: { type: 'string', default: '4' },
      child: { type: 'boolean', default: false },
      work: { type: 'string' },
      target: { type: 'string' },
      metric: { type: 'string' },
    },
  });
  const bigMiB = Number(values['big-mib']);
  const threads = Number(values.threads);
  if (values.child) return child(values.work!, values.target as Target, values.metric as Metric, bigMiB, threads);

  const targets = values.targets.split(',') as Target[];
  for (const t of targets) if (!TARGETS.includes(t)) throw new Error(`unknown target ${t} (one of ${TARGETS.join(', ')})`);
  const work = mkdtempSync(join(tmpdir(), 'starlight-bench-fs-'));
  for (const d of ['src', 'view', 'ovl', 'upper', 'work']) mkdirSync(join(work, d));
  const self = fileURLToPath(import.meta.url);
  const results = new Map<string, number[]>();
  try {
    makeTree(join(work, 'src'), Number(values.files), bigMiB);
    console.log(`tree: ${values.files} small files, ${bigMiB + 32} MiB in 9 big files; node ${process.version}; ${threads} FUSE threads`);
    for (const cache of values.cache.split(',')) {
      for (let run = 0; run < Number(values.runs); run++) {
        for (const metric of METRICS) {
          for (const target of targets) {
            prepareCache(work, cache);
            const load = loadavg()[0].toFixed(1);
            const r = spawnSync(process.execPath, [self, '--child', '--work', work, '--target', target, '--metric', metric, '--big-mib', String(bigMiB), '--threads', String(threads)], { encoding: 'utf8', timeout: CHILD_TIMEOUT_MS });
            const line = r.stdout.trim().split('\n').pop() ?? '';
            if (r.status !== 0 || !line.startsWith('{')) throw new Error(`child ${target}/${metric} failed: ${r.stderr || r.error}`);
            const out = JSON.parse(line) as { value: number; stats?: Record<string, number> };
            const key = `${cache}/${target}/${metric}`;
            results.set(key, [...(results.get(key) ?? []), out.value]);
            console.log(`${key.padEnd(30)} ${out.value.toFixed(0).padStart(9)}  load ${load}${out.stats ? '  ' + JSON.stringify(out.stats) : ''}`);
          }
        }
      }
    }
    const units: Record<Metric, string> = { seq: 'seq MB/s', rand: '4K rand IOPS', find: 'find entries/s' };
    for (const cache of values.cache.split(',')) {
      console.log(`\n${cache} page cache: median of ${values.runs}; (×ext4, ×overlayfs)`);
      console.log(`${'target'.padEnd(17)}${METRICS.map((m) => units[m].padStart(27)).join('')}`);
      for (const target of targets) {
        const cells = METRICS.map((m) => {
          const v = median(results.get(`${cache}/${target}/${m}`) ?? []);
          const e = median(results.get(`${cache}/ext4/${m}`) ?? []);
          const o = median(results.get(`${cache}/overlayfs/${m}`) ?? []);
          return `${v.toFixed(0)} (${(v / e).toFixed(2)}, ${(v / o).toFixed(2)})`.padStart(27);
        });
        console.log(`${target.padEnd(17)}${cells.join('')}`);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
