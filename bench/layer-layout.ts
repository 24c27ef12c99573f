/**
 * Does the on-disk layout of a graduated image cost more cold reads than containerd's unpacked
 * layers? (issue 12, session 10). Builds one image's layers twice, each on its own fresh ext4 (a
 * sparse file on a loop device with direct I/O, no journal, mounted `discard`, like this machine's
 * root file system):
 *
 * - `unpacked`: what containerd's overlayfs snapshotter leaves: the compressed blobs in a content
 *   dir, then each layer untarred into its own snapshot dir, in layer order (tar keeps the archive's
 *   order, as containerd's applier does; whiteouts stay `.wh.` files, which no workload reads);
 * - `graduated`: what the daemon leaves: every file of the stream in the CAS (LocalContentStore,
 *   tar order), the layers graduated from it (Graduations, layer-dir.ts), and the CAS copies dropped
 *   (relocation).
 *
 * Then prints each tree's layout (inode groups and inode-table blocks, dir blocks, data extents) and
 * times the overhead workloads cold in a fresh overlay over each (the two alternate, ABBA). Cold =
 * that file system unmounted and mounted again: its page, dentry and inode caches are dropped without
 * touching the rest of the machine (no drop_caches). Per run: wall ms, the workload's user + sys CPU,
 * and the loop device's read requests, KiB and ms (what the layout decides).
 *
 *   npm run build && node dist/bench/layer-layout.js [--image python-web] [--version v1]
 *       [--runs 4] [--workloads PYIMPORT,FINDSTAT,SMALLFILES] [--registry-dir DIR]
 *
 * Root only (losetup, mount, chroot). Reads the layers from the bench registry's storage dir.
 * Not here: the bench's own containers and modes (run.ts, overhead-ab.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildLayerToc } from '../src/layers/indexer.js';
import type { LayerToc } from '../src/layers/toc.js';
import { LocalContentStore } from '../src/worker/cas/store.js';
import { chainIds } from '../src/worker/images/chain.js';
import { Graduations } from '../src/worker/images/graduation.js';
import { median } from './report/aggregate.js';
import { DEFAULTS } from './run.js';
import { OVERHEAD_WORKLOADS, type OverheadKey } from './trials.js';

/** Size of each sparse file system image. */
const FS_BYTES = 4 * 2 ** 30;
/** This machine's root disk reads ahead 8 MiB; a loop device 128 KiB by default. */
const READ_AHEAD_KB = 8192;
/** ext4 defaults for a file system of FS_BYTES: inodes per group, inodes per inode-table block. */
const INODES_PER_GROUP = 8192;
const INODES_PER_BLOCK = 16;
/** Relocation batch, as the daemon's (images/service.ts). */
const RELOCATE_BATCH = 512;

type Layout = 'unpacked' | 'graduated';

interface Fs {
  layout: Layout;
  img: string;
  dev: string;
  mnt: string;
  /** Lowerdir list, top first. */
  lowers: string[];
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 28 });
}

/** The layer blobs (bottom first) of `repo:tag` in a docker-registry storage dir. */
function layerBlobs(registryDir: string, repo: string, tag: string): string[] {
  const v2 = join(registryDir, 'storage/docker/registry/v2');
  const blob = (digest: string): string => {
    const hex = digest.replace(/^sha256:/, '');
    return join(v2, 'blobs/sha256', hex.slice(0, 2), hex, 'data');
  };
  const manifest = readFileSync(join(v2, 'repositories', repo, '_manifests/tags', tag, 'current/link'), 'utf8').trim();
  const m = JSON.parse(readFileSync(blob(manifest), 'utf8')) as { layers: { digest: string }[] };
  return m.layers.map((l) => blob(l.digest));
}

function makeFs(work: string, layout: Layout): Fs {
  const img = join(work, `${layout}.img`);
  const mnt = join(work, layout);
  writeFileSync(img, '');
  sh('truncate', ['-s', String(FS_BYTES), img]);
  sh('mkfs.ext4', ['-q', '-O', '^has_journal', img]);
  const dev = sh('losetup', ['-f', '--show', '--direct-io=on', img]).trim();
  writeFileSync(`/sys/block/${dev.replace('/dev/', '')}/queue/read_ahead_kb`, String(READ_AHEAD_KB));
  mkdirSync(mnt);
  sh('mount', ['-o', 'discard', dev, mnt]);
  return { layout, img, dev, mnt, lowers: [] };
}

async function unpack(fs: Fs, blobs: string[]): Promise<void> {
  const content = join(fs.mnt, 'content');
  mkdirSync(content);
  blobs.forEach((b, i) => sh('cp', [b, join(content, `layer-${i}`)]));
  blobs.forEach((b, i) => {
    const dir = join(fs.mnt, 'snapshots', String(i + 1), 'fs');
    mkdirSync(dir, { recursive: true });
    sh('tar', ['--xattrs', '--xattrs-include=*', '--same-owner', '--numeric-owner', '-xzpf', b, '-C', dir]);
    fs.lowers.unshift(dir);
  });
}

async function graduate(fs: Fs, blobs: string[]): Promise<void> {
  const store = await new LocalContentStore(join(fs.mnt, 'content')).open();
  const tocs: LayerToc[] = [];
  let n = 0;
  for (const b of blobs) {
    tocs.push(
      await buildLayerToc(createReadStream(b), {
        onFile: async (_entry, content) => {
          const w = await store.writer(`f${n++}`);
          const h = createHash('sha256');
          let size = 0;
          for await (const c of content as AsyncIterable<Buffer>) {
            await w.write(c);
            h.update(c);
            size += c.length;
          }
          if (size === 0) await w.abort();
          else await w.commit(size, `sha256:${h.digest('hex')}`);
        },
      }),
    );
  }
  await store.sync();
  const g = await new Graduations(join(fs.mnt, 'graduated')).open();
  fs.lowers = await g.graduate(chainIds(tocs.map((t) => t.diffID)), tocs, (d) => store.path(d));
  // Relocation: the CAS drops the blob of every content a layer dir holds (as the daemon does).
  const bottomFirst = [...fs.lowers].reverse();
  const seen = new Set<string>();
  const moves: { digest: string; file: string }[] = [];
  tocs.forEach((toc, i) => {
    const omitted = new Set(g.omitted(bottomFirst[i]!));
    for (const e of toc.entries) {
      if (e.type !== 'reg' || e.digest === undefined || e.size === 0 || omitted.has(e.path) || seen.has(e.digest) || !store.has(e.digest)) continue;
      seen.add(e.digest);
      moves.push({ digest: e.digest, file: join(bottomFirst[i]!, e.path) });
    }
  });
  for (let i = 0; i < moves.length; i += RELOCATE_BATCH) await store.relocate(moves.slice(i, i + RELOCATE_BATCH));
  sh('sync', ['-f', fs.mnt]);
}

/** Inode groups, inode-table blocks, dir blocks and data extents of the tree under `fs.lowers`. */
function layoutOf(fs: Fs): Record<string, number> {
  const paths: string[] = [];
  const inos: number[] = [];
  let dirBlocks = 0;
  const walk = (p: string): void => {
    const st = lstatSync(p);
    inos.push(st.ino);
    if (st.isDirectory()) {
      dirBlocks += st.blocks / 8;
      for (const n of readdirSync(p)) walk(join(p, n));
    } else if (st.isFile() && st.size > 0) paths.push(p);
  };
  for (const l of fs.lowers) walk(l);
  const group = (i: number): number => Math.floor((i - 1) / INODES_PER_GROUP);
  const itable = new Set(inos.map((i) => `${group(i)}:${Math.floor(((i - 1) % INODES_PER_GROUP) / INODES_PER_BLOCK)}`));
  let extents = 0;
  for (let i = 0; i < paths.length; i += 500) {
    const out = sh('filefrag', paths.slice(i, i + 500));
    for (const m of out.matchAll(/: (\d+) extents? found/g)) extents += Number(m[1]);
  }
  return { entries: inos.length, inodeGroups: new Set(inos.map(group)).size, inodeTableBlocks: itable.size, dirBlocks, files: paths.length, extents };
}

interface Sample {
  ms: number;
  cpuMs: number;
  reads: number;
  readKiB: number;
  readMs: number;
}

/** One cold run of `key` in a fresh overlay over `fs` (its file system remounted first). */
function coldRun(fs: Fs, key: OverheadKey, work: string): Sample {
  const merged = join(work, `merged-${fs.layout}`);
  const upper = join(work, `upper-${fs.layout}`);
  rmSync(upper, { recursive: true, force: true });
  mkdirSync(join(upper, 'u'), { recursive: true });
  mkdirSync(join(upper, 'w'));
  mkdirSync(merged, { recursive: true });
  sh('umount', [fs.mnt]);
  sh('mount', ['-o', 'discard', fs.dev, fs.mnt]);
  sh('mount', ['-t', 'overlay', 'overlay', '-o', `index=off,lowerdir=${fs.lowers.join(':')},upperdir=${upper}/u,workdir=${upper}/w`, merged]);
  try {
    // A container's /dev: the workloads write to /dev/null (the image's own /dev is empty).
    sh('mount', ['-t', 'tmpfs', 'tmpfs', join(merged, 'dev')]);
    writeFileSync(join(merged, 'dev/null'), '');
    sh('mount', ['--bind', '/dev/null', join(merged, 'dev/null')]);
    const stat = (): number[] => readFileSync(`/sys/block/${fs.dev.replace('/dev/', '')}/stat`, 'utf8').trim().split(/\s+/).map(Number);
    const s0 = stat();
    const t0 = process.hrtime.bigint();
    // `times` in the chrooted shell: its children's user and sys CPU (the workload's).
    const r = spawnSync('chroot', [merged, '/bin/sh', '-c', `${OVERHEAD_WORKLOADS[key]} 2>/dev/null; times`], { encoding: 'utf8' });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const s1 = stat();
    const t = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(r.stdout);
    const cpuMs = t ? Math.round((Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4])) * 1000) : NaN;
    return { ms, cpuMs, reads: s1[0]! - s0[0]!, readKiB: (s1[2]! - s0[2]!) / 2, readMs: s1[3]! - s0[3]! };
  } finally {
    sh('umount', ['-R', merged]);
  }
}

async function main(): Promise<number> {
  const { values: v } = parseArgs({
    options: {
      image: { type: 'string', default: 'python-web' },
      version: { type: 'string', default: 'v1' },
      runs: { type: 'string', default: '4' },
      workloads: { type: 'string', default: 'PYIMPORT,FINDSTAT,SMALLFILES' },
      'registry-dir': { type: 'string', default: DEFAULTS.registryDir },
    },
  });
  const keys = v.workloads.split(',').filter(Boolean) as OverheadKey[];
  for (const k of keys) if (!(k in OVERHEAD_WORKLOADS)) throw new Error(`unknown workload ${k}`);
  const blobs = layerBlobs(v['registry-dir'], `bench/${v.image}`, v.version);
  const work = mkdtempSync(join(tmpdir(), 'sl-layer-layout-'));
  const made: Fs[] = [];
  try {
    const fss = (['unpacked', 'graduated'] as const).map((l) => {
      const fs = makeFs(work, l);
      made.push(fs);
      return fs;
    });
    await unpack(fss[0]!, blobs);
    await graduate(fss[1]!, blobs);
    for (const fs of fss) console.log(`${fs.layout}: ${JSON.stringify(layoutOf(fs))}`);
    const samples = new Map<string, Sample[]>();
    for (let run = 1; run <= Number(v.runs); run++) {
      const order = run % 2 === 1 ? fss : [...fss].reverse();
      for (const key of keys) {
        for (const fs of order) {
          const s = coldRun(fs, key, work);
          console.log(`run ${run} ${key} ${fs.layout}: ${s.ms.toFixed(0)} ms, cpu ${s.cpuMs} ms, ${s.reads} reads, ${s.readKiB} KiB, ${s.readMs} ms in the device`);
          const id = `${key} ${fs.layout}`;
          samples.set(id, [...(samples.get(id) ?? []), s]);
        }
      }
    }
    console.log('\n| workload (cold) | layout | wall ms | cpu ms | read requests | read KiB | device ms |\n| --- | --- | --- | --- | --- | --- | --- |');
    for (const [id, ss] of samples) {
      const med = (f: (s: Sample) => number): string => median(ss.map(f)).toFixed(0);
      const [key, layout] = id.split(' ');
      console.log(`| ${key} | ${layout} | ${med((s) => s.ms)} | ${med((s) => s.cpuMs)} | ${med((s) => s.reads)} | ${med((s) => s.readKiB)} | ${med((s) => s.readMs)} |`);
    }
    return 0;
  } finally {
    for (const fs of made) {
      spawnSync('umount', ['-R', fs.mnt]);
      spawnSync('losetup', ['-d', fs.dev]);
    }
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('layer-layout.js')) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`bench layer-layout: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
