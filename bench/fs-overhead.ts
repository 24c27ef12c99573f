/**
 * FUSE view overhead on a fully present tree: sequential read MB/s, 4 KiB random read IOPS and
 * `find` entries/s through a Starlight view, vs the same tree on ext4 and through overlayfs (lower =
 * that ext4 dir). Prints one table of absolute numbers and ratios to ext4. Root only.
 *
 *   npm run build && node dist/bench/fs-overhead.js [--files 20000] [--big-mib 128]
 *
 * Each target is mounted fresh before its trials, so the FUSE page cache starts empty (reads go
 * through the daemon once; keep_cache serves repeats) while the backing ext4 files are warm: this
 * measures daemon overhead, not disk speed. Not here: lazy (absent) content, WAN emulation.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync, writeFileSync, readdirSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import type { MergedTree, TocEntry } from '../src/image/toc.js';
import { FuseViewManager } from '../src/worker/fs/fuse-views.js';

/** Buffer size of sequential reads (bytes). */
const SEQ_CHUNK = 1 << 20;
/** Size of one random read (bytes) and how many of them per trial. */
const RAND_SIZE = 4096;
const RAND_READS = 20_000;

function makeTree(dir: string, files: number, bigMiB: number): void {
  const perDir = 100;
  for (let i = 0; i < files; i++) {
    const d = join(dir, 'small', `d${Math.floor(i / perDir)}`);
    if (i % perDir === 0) mkdirSync(d, { recursive: true });
    writeFileSync(join(d, `f${i}`), Buffer.alloc(1024 + (i % 7) * 512, i % 251));
  }
  mkdirSync(join(dir, 'big'));
  for (let i = 0; i < 8; i++) writeFileSync(join(dir, 'big', `m${i}`), Buffer.alloc(4 << 20, i + 1));
  const big = Buffer.alloc(1 << 20, 7);
  const fd = openSync(join(dir, 'big', 'huge'), 'w');
  for (let i = 0; i < bigMiB; i++) writeFileSync(fd, big);
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

function seqRead(root: string): number {
  const buf = Buffer.alloc(SEQ_CHUNK);
  let bytes = 0;
  const start = process.hrtime.bigint();
  for (const name of ['huge', ...Array.from({ length: 8 }, (_, i) => `m${i}`)]) {
    const fd = openSync(join(root, 'big', name), 'r');
    for (let n; (n = readSync(fd, buf, 0, SEQ_CHUNK, null)) > 0; ) bytes += n;
    closeSync(fd);
  }
  return bytes / (1 << 20) / (Number(process.hrtime.bigint() - start) / 1e9);
}

function randRead(root: string, sizeMiB: number): number {
  const buf = Buffer.alloc(RAND_SIZE);
  const blocks = (sizeMiB << 20) / RAND_SIZE;
  const fd = openSync(join(root, 'big', 'huge'), 'r');
  let seed = 12345;
  const start = process.hrtime.bigint();
  for (let i = 0; i < RAND_READS; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    readSync(fd, buf, 0, RAND_SIZE, (seed % blocks) * RAND_SIZE);
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

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { files: { type: 'string', default: '20000' }, 'big-mib': { type: 'string', default: '128' } } });
  const files = Number(values.files);
  const bigMiB = Number(values['big-mib']);
  const work = mkdtempSync(join(tmpdir(), 'starlight-bench-fs-'));
  const src = join(work, 'src');
  const mnt = join(work, 'view');
  const ovl = join(work, 'ovl');
  for (const d of [src, mnt, ovl, join(work, 'upper'), join(work, 'work')]) mkdirSync(d);
  const views = new FuseViewManager();
  try {
    makeTree(src, files, bigMiB);
    const tree = treeOf(src);
    const content = { locate: (d: string) => d, waitFor: async (d: string) => d };
    const targets: [string, string, () => Promise<void>, () => Promise<void>][] = [
      ['ext4', src, async () => {}, async () => {}],
      ['overlayfs', ovl,
        async () => void execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${src},upperdir=${join(work, 'upper')},workdir=${join(work, 'work')}`, ovl]),
        async () => void execFileSync('umount', [ovl])],
      ['starlight', mnt, () => views.mount(mnt, { tree, content }), () => views.unmount(mnt)],
    ];
    const rows: { target: string; seq: number; iops: number; find: number }[] = [];
    for (const [target, root, up, down] of targets) {
      await up();
      try {
        const find = findRate(root);
        const seq = seqRead(root);
        const iops = randRead(root, bigMiB);
        rows.push({ target, seq, iops, find });
      } finally {
        await down();
      }
    }
    const base = rows[0];
    console.log(`tree: ${tree.entries.length} entries, ${bigMiB + 32} MiB in big files`);
    console.log('target      seq MB/s  (ratio)   4K rand IOPS (ratio)   find entries/s (ratio)');
    for (const r of rows) {
      const f = (v: number, b: number, w: number): string => `${v.toFixed(0).padStart(w)} (${(v / b).toFixed(2)})`;
      console.log(`${r.target.padEnd(10)} ${f(r.seq, base.seq, 9)}  ${f(r.iops, base.iops, 13)}   ${f(r.find, base.find, 13)}`);
    }
  } finally {
    await views.close();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
