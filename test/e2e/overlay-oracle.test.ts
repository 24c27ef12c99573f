/**
 * Oracle: mergeLayers() over the TOCs of each fixture image must equal what a real overlayfs mount
 * shows for the same layers extracted by GNU tar, converted to overlay form the way containerd's
 * applier does (`.wh.X` → 0/0 char device X, `.wh..wh..opq` → trusted.overlay.opaque=y), mounted
 * read-only with lowerdir=top:...:bottom. Compared per path: type, mode, uid, gid, size, mtime
 * (seconds), link target, rdev, xattrs (trusted.overlay.* ignored) and sha256 of contents.
 * mtime is skipped only for dirs that the topmost layer holding them merely implies (tar -x creates
 * those with the current time; see merge.ts). Needs root, overlayfs, GNU tar, zstd, getfattr/setfattr.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readlink, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { buildLayerToc } from '../../src/image/indexer.js';
import { mergeLayers } from '../../src/image/merge.js';
import { parentPath } from '../../src/image/paths.js';
import type { LayerToc, TocEntry } from '../../src/image/toc.js';
import { ociImage } from '../../src/image/writer.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tmp.js';

const run = promisify(execFile);
/** Bound for each external command, ms. */
const CMD_TIMEOUT = 120_000;
const exec = (cmd: string, args: string[]) => run(cmd, args, { timeout: CMD_TIMEOUT, maxBuffer: 64 * 1024 * 1024 });

const supported =
  process.getuid?.() === 0 &&
  readFileSync('/proc/filesystems', 'utf8').includes('overlay') &&
  ['/usr/bin/tar', '/usr/bin/getfattr', '/usr/bin/setfattr', '/usr/bin/zstd'].every((p) => existsSync(p));

/** The comparable view of one path. */
interface Shape {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  mtime?: number;
  link?: string;
  rdev?: string;
  xattrs: Record<string, string>;
  sha256?: string;
}

async function extractLayer(blob: string, dir: string): Promise<void> {
  await mkdir(dir);
  await chmod(dir, 0o755);
  await exec('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-p', '-x', '-f', blob, '-C', dir]);
  await convertWhiteouts(dir);
}

/** containerd-style conversion to overlay whiteouts, keeping the parent dirs' times. */
async function convertWhiteouts(dir: string): Promise<void> {
  for (const d of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, d.name);
    if (d.isDirectory()) await convertWhiteouts(p);
    if (!d.name.startsWith('.wh.')) continue;
    const st = await stat(dir);
    await unlink(p);
    if (d.name === '.wh..wh..opq') await exec('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', dir]);
    else await exec('mknod', [join(dir, d.name.slice(4)), 'c', '0', '0']);
    await utimes(dir, st.atime, st.mtime);
  }
}

function parseGetfattr(out: string, root: string): Map<string, Record<string, string>> {
  const map = new Map<string, Record<string, string>>();
  let cur: Record<string, string> | undefined;
  for (const line of out.split('\n')) {
    if (line.startsWith('# file: ')) {
      const abs = line.slice(8);
      cur = {};
      map.set(abs === root ? '' : abs.slice(root.length + 1), cur);
    } else if (cur && line.includes('=')) {
      const i = line.indexOf('=');
      const k = line.slice(0, i);
      if (!k.startsWith('trusted.overlay.')) cur[k] = line.slice(i + 1).replace(/^0x/, '');
    }
  }
  return map;
}

const sha256File = (p: string) =>
  new Promise<string>((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(p).on('data', (c) => h.update(c)).on('end', () => resolve(`sha256:${h.digest('hex')}`)).on('error', reject);
  });

async function walkMount(root: string): Promise<Map<string, Shape>> {
  // Exit status 1 with output is expected: see the whiteout note in `visit`.
  const { stdout } = await exec('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root]).catch(
    (err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }),
  );
  const xattrs = parseGetfattr(stdout, root);
  const out = new Map<string, Shape>();
  const visit = async (rel: string) => {
    const abs = rel === '' ? root : join(root, rel);
    // overlayfs passes readdir of a dir that exists in one layer only straight through, so a whiteout
    // there (e.g. `ghost/.wh.nothing` with nothing below) is listed, yet lookup says ENOENT: not an entry.
    const st = await lstat(abs).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!st) return;
    const type = st.isFile() ? 'reg' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'other';
    const s: Shape = { type, mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000), xattrs: xattrs.get(rel) ?? {} };
    if (type === 'reg') {
      s.size = st.size;
      s.sha256 = await sha256File(abs);
    }
    if (type === 'symlink') s.link = await readlink(abs);
    if (type === 'char' || type === 'block') s.rdev = `${(st.rdev >> 8) & 0xfff},${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
    out.set(rel, s);
    if (type === 'dir') for (const name of await readdir(abs)) await visit(rel === '' ? name : `${rel}/${name}`);
  };
  await visit('');
  return out;
}

/** Dirs whose topmost holder layer only implies them (tar -x created them: mtime is "now"). */
function topImpliedDirs(tocs: LayerToc[], paths: Iterable<string>): Set<string> {
  const layers = tocs.map((toc) => {
    const explicit = new Set(toc.entries.filter((e) => e.type !== 'whiteout' && !e.implied).map((e) => e.path));
    const present = new Set<string>(['']);
    for (const e of toc.entries) for (let p = e.path; p !== ''; p = parentPath(p)) present.add(p);
    return { explicit, present };
  });
  const out = new Set<string>();
  for (const p of paths) {
    const top = [...layers].reverse().find((l) => l.present.has(p));
    if (top && !top.explicit.has(p)) out.add(p);
  }
  return out;
}

function expectedShape(e: TocEntry, skipMtime: boolean): Shape {
  const type = e.type === 'hardlink' ? 'reg' : e.type;
  const s: Shape = { type, mode: e.mode.toString(8), uid: e.uid, gid: e.gid, xattrs: {} };
  if (!skipMtime) s.mtime = Math.floor(e.mtime);
  for (const [k, v] of Object.entries(e.xattrs ?? {})) s.xattrs[k] = Buffer.from(v).toString('hex');
  if (type === 'reg') {
    s.size = e.size;
    s.sha256 = e.digest!;
  }
  if (type === 'symlink') s.link = e.linkname!;
  if (type === 'char' || type === 'block') s.rdev = `${e.devmajor},${e.devminor}`;
  return s;
}

for (const fx of FIXTURES) {
  (supported ? test.serial : test.skip)(`overlay oracle: ${fx.name}`, async (t) => {
    t.timeout(300_000);
    const dir = tempDir(t, 'starlight-oracle-');
    const image = await ociImage(fx.layers);
    const tocs: LayerToc[] = [];
    const lowers: string[] = [];
    for (const [i, l] of image.layers.entries()) {
      tocs.push(await buildLayerToc(Readable.from([l.data]), { mediaType: l.mediaType, expectedDiffID: l.diffID }));
      const blob = join(dir, `layer${i}.blob`);
      await writeFile(blob, l.data);
      await extractLayer(blob, join(dir, `layer${i}`));
      lowers.unshift(join(dir, `layer${i}`));
    }
    if (lowers.length === 1) {
      // overlayfs wants two lowerdirs when there is no upperdir
      await mkdir(join(dir, 'empty'));
      lowers.push(join(dir, 'empty'));
    }
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    await exec('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${lowers.join(':')}`, mnt]);
    t.teardown(async () => {
      await exec('umount', [mnt]).catch(() => exec('umount', ['-l', mnt]));
    });

    const merged = mergeLayers(tocs);
    const actual = await walkMount(mnt);
    const implied = topImpliedDirs(tocs, merged.entries.map((e) => e.path));
    const diffs: string[] = [];
    const seen = new Set<string>();
    for (const e of merged.entries) {
      seen.add(e.path);
      const want = expectedShape(e, implied.has(e.path));
      const got = actual.get(e.path);
      if (!got) {
        diffs.push(`${e.path || '.'}: in merge (${e.type}) but not in overlay`);
        continue;
      }
      if (want.mtime === undefined) delete got.mtime;
      for (const k of new Set([...Object.keys(want), ...Object.keys(got)]) as Set<keyof Shape>) {
        const a = JSON.stringify(want[k]);
        const b = JSON.stringify(got[k]);
        if (a !== b) diffs.push(`${e.path || '.'}: ${k} merge=${a} overlay=${b}`);
      }
    }
    for (const p of actual.keys()) if (!seen.has(p)) diffs.push(`${p}: in overlay (${actual.get(p)!.type}) but not in merge`);
    t.deepEqual(diffs, [], `merge vs overlayfs for ${fx.name}:\n${diffs.join('\n')}`);
    t.true(merged.entries.length > 3);
  });
}
