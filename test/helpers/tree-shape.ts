/**
 * Comparable "shapes" of file trees, for the e2e oracles (stargz-style `diff -r` of the reference
 * against what Starlight shows): one Shape per path (type, mode, owner, size, mtime in seconds,
 * symlink target, device numbers, xattrs, sha256 of content, optionally nlink), built either from a
 * mounted directory (`shapeOfDir`) or from a merged TOC (`shapeOfTree`), and `diffShapes` to list the
 * differences readably.
 *
 * Also the reference side: `mountOverlayReference` extracts layer blobs with GNU tar, converts
 * whiteouts the way containerd's applier does (`.wh.X` → 0/0 char device X, `.wh..wh..opq` →
 * trusted.overlay.opaque=y) and mounts a read-only overlayfs over them.
 *
 * shapeOfDir is safe on a FUSE mount served by the calling process: async fs only (no sync I/O on the
 * mount from the thread that may serve it), a bounded number of operations in flight, xattrs read by
 * a getfattr child process. Not here: choosing what to compare (the tests), building layers.
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readlink, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parentPath } from '../../src/layers/paths.js';
import type { LayerToc, MergedTree, TocEntry } from '../../src/layers/toc.js';

const run = promisify(execFile);
/** Bound for each external command (tar, getfattr, mount), ms. */
const CMD_TIMEOUT_MS = 600_000;
/** Default operations (lstat+readdir/readlink/hash) in flight in shapeOfDir. */
const DEFAULT_CONCURRENCY = 8;
/** Read size when hashing, bytes. */
const HASH_CHUNK = 256 * 1024;
/** Longest total argument length of one getfattr call, bytes (ARG_MAX is 2 MiB here; stay far below). */
const GETFATTR_ARGS_BYTES = 64 * 1024;

const exec = (cmd: string, args: string[], cwd?: string) => run(cmd, args, { cwd, timeout: CMD_TIMEOUT_MS, maxBuffer: 256 * 1024 * 1024, encoding: 'latin1' });

/** The comparable view of one path. Absent optional fields are not compared. */
export interface Shape {
  type: 'reg' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket' | 'other';
  /** Permission and special bits, octal text. */
  mode: string;
  uid: number;
  gid: number;
  /** 'reg' only. */
  size?: number;
  /** Whole seconds. */
  mtime?: number;
  /** 'symlink' only. */
  link?: string;
  /** 'char'/'block' only: 'major,minor'. */
  rdev?: string;
  /** name → hex value; names rejected by `ignoreXattr` left out. */
  xattrs: Record<string, string>;
  /** 'reg' only: 'sha256:<hex>'. */
  sha256?: string;
  /** 'reg' only, and only when asked for (hardlink groups). */
  nlink?: number;
}

export type Shapes = Map<string, Shape>;

/** Default xattr filter: overlayfs' own attributes are an artefact of the reference, not image data. */
export const ignoreOverlayXattrs = (name: string): boolean => name.startsWith('trusted.overlay.');

export interface DirShapeOptions {
  /** Operations in flight. Default 8. */
  concurrency?: number;
  /** Xattr names to leave out. Default ignoreOverlayXattrs. */
  ignoreXattr?: (name: string) => boolean;
  /**
   * Entries readdir lists but lstat says ENOENT are skipped instead of failing. overlayfs lists a
   * whiteout in a dir that exists in one layer only (nothing below to hide), yet lookup is ENOENT.
   * Default false (a FUSE view must not do that).
   */
  skipVanished?: boolean;
  /** Record nlink of regular files. Default false. */
  nlink?: boolean;
  /**
   * Hash file contents. Default true. false: stat, readdir, readlink and getxattr only — what a lazy
   * view must answer at once while content is still streaming.
   */
  content?: boolean;
  signal?: AbortSignal;
}

function typeOf(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isFIFO(): boolean; isSocket(): boolean }): Shape['type'] {
  if (st.isFile()) return 'reg';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return st.isSocket() ? 'socket' : 'other';
}

/** Linux dev_t → 'major,minor' (glibc's gnu_dev_major/minor encoding). */
function devText(rdev: number): string {
  const major = ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | ((rdev >> 12) & ~0xff & 0xfffff);
  return `${major},${minor}`;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: HASH_CHUNK })) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** getfattr's quoting (octal `\ooo` for unprintable bytes, `\\`) undone; input is latin1 text. */
function unquote(s: string): string {
  const bytes = Buffer.from(s.replace(/\\(\\|[0-7]{3})/g, (_m, g: string) => (g === '\\' ? '\\' : String.fromCharCode(parseInt(g, 8)))), 'latin1');
  return bytes.toString('utf8');
}

/** Xattrs of `rels` (relative to root, '' = root), via getfattr in batches; only paths that have some. */
async function readXattrs(root: string, rels: string[], ignore: (name: string) => boolean): Promise<Map<string, Record<string, string>>> {
  const out = new Map<string, Record<string, string>>();
  let batch: string[] = [];
  let bytes = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    const args = ['-h', '-d', '-m', '-', '-e', 'hex', '--', ...batch];
    batch = [];
    bytes = 0;
    // Exit status 1 with output is normal when some path has no xattr support or vanished.
    const { stdout } = await exec('getfattr', args, root).catch((err: { stdout?: string; code?: unknown }) => {
      if (typeof err.code === 'string') throw err; // ENOENT: getfattr missing
      return { stdout: err.stdout ?? '' };
    });
    let cur: Record<string, string> | undefined;
    for (const line of stdout.split('\n')) {
      if (line.startsWith('# file: ')) {
        const name = unquote(line.slice(8));
        cur = {};
        out.set(name === '.' ? '' : name.replace(/^\.\//, ''), cur);
      } else if (cur && line.includes('=')) {
        const i = line.indexOf('=');
        const k = unquote(line.slice(0, i));
        if (!ignore(k)) cur[k] = line.slice(i + 1).replace(/^0x/, '');
      }
    }
  };
  for (const rel of rels) {
    const arg = rel === '' ? '.' : `./${rel}`;
    batch.push(arg);
    bytes += Buffer.byteLength(arg) + 1;
    if (bytes > GETFATTR_ARGS_BYTES) await flush();
  }
  await flush();
  return out;
}

/** Shapes of everything under `root` (root itself is ''), read with async fs and bounded concurrency. */
export async function shapeOfDir(root: string, opts: DirShapeOptions = {}): Promise<Shapes> {
  const limit = opts.concurrency ?? DEFAULT_CONCURRENCY;
  const ignore = opts.ignoreXattr ?? ignoreOverlayXattrs;
  const out: Shapes = new Map();

  const visit = async (rel: string): Promise<string[]> => {
    const abs = rel === '' ? root : join(root, rel);
    const st = await lstat(abs).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' && opts.skipVanished) return undefined;
      throw err;
    });
    if (!st) return [];
    const type = typeOf(st);
    const s: Shape = { type, mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000), xattrs: {} };
    out.set(rel, s);
    if (type === 'reg') {
      s.size = st.size;
      if (opts.content !== false) s.sha256 = await sha256File(abs);
      if (opts.nlink) s.nlink = st.nlink;
    } else if (type === 'symlink') s.link = await readlink(abs);
    else if (type === 'char' || type === 'block') s.rdev = devText(st.rdev);
    else if (type === 'dir') return (await readdir(abs)).map((name) => (rel === '' ? name : `${rel}/${name}`));
    return [];
  };

  const queue: string[] = [''];
  let active = 0;
  await new Promise<void>((resolve, reject) => {
    let failed = false;
    const pump = (): void => {
      if (failed) return;
      if (opts.signal?.aborted) {
        failed = true;
        reject(opts.signal.reason);
        return;
      }
      if (active === 0 && queue.length === 0) return resolve();
      while (active < limit && queue.length > 0) {
        const rel = queue.pop()!;
        active++;
        visit(rel).then(
          (children) => {
            active--;
            queue.push(...children);
            pump();
          },
          (err: unknown) => {
            failed = true;
            reject(err);
          },
        );
      }
    };
    pump();
  });

  const xattrs = await readXattrs(root, [...out.keys()], ignore);
  for (const [rel, x] of xattrs) {
    const s = out.get(rel);
    if (s) s.xattrs = x;
  }
  return out;
}

export interface TreeShapeOptions {
  /** Record nlink of regular files (1 + hardlinks of the same content inode in the tree). Default false. */
  nlink?: boolean;
  /** Xattr names to leave out. Default ignoreOverlayXattrs. */
  ignoreXattr?: (name: string) => boolean;
}

/**
 * Shapes of a merged tree (or its entries). Hardlinks show as the regular file they are on disk.
 * `contentOf` gives the sha256 of an entry's content; default the TOC's `digest` (a FUSE test can
 * pass the digest it wrote into its CAS instead, to check the TOC end to end).
 */
export function shapeOfTree(tree: MergedTree | readonly TocEntry[], contentOf?: (e: TocEntry) => string | undefined, opts: TreeShapeOptions = {}): Shapes {
  const entries = Array.isArray(tree) ? (tree as readonly TocEntry[]) : (tree as MergedTree).entries;
  const ignore = opts.ignoreXattr ?? ignoreOverlayXattrs;
  const links = new Map<string, number>();
  for (const e of entries) if (e.type === 'hardlink' && e.linkname !== undefined) links.set(e.linkname, (links.get(e.linkname) ?? 1) + 1);
  const out: Shapes = new Map();
  for (const e of entries) {
    if (e.type === 'whiteout') continue;
    const type = e.type === 'hardlink' ? 'reg' : e.type;
    const s: Shape = { type, mode: e.mode.toString(8), uid: e.uid, gid: e.gid, mtime: Math.floor(e.mtime), xattrs: {} };
    for (const [k, v] of Object.entries(e.xattrs ?? {})) if (!ignore(k)) s.xattrs[k] = Buffer.from(v).toString('hex');
    if (type === 'reg') {
      s.size = e.size;
      const d = contentOf ? contentOf(e) : e.digest;
      if (d !== undefined) s.sha256 = d;
      if (opts.nlink) s.nlink = links.get(e.type === 'hardlink' ? e.linkname! : e.path) ?? 1;
    }
    if (type === 'symlink') s.link = e.linkname!;
    if (type === 'char' || type === 'block') s.rdev = `${e.devmajor ?? 0},${e.devminor ?? 0}`;
    out.set(e.path, s);
  }
  return out;
}

/** An entry of `starlight image toc --json` (xattr values base64) back to a TocEntry. */
export function tocEntryFromJson(j: Record<string, unknown>): TocEntry {
  const e = { ...j } as unknown as TocEntry;
  const x = j.xattrs as Record<string, string> | undefined;
  if (x) e.xattrs = Object.fromEntries(Object.entries(x).map(([k, v]) => [k, new Uint8Array(Buffer.from(v, 'base64'))]));
  return e;
}

export interface DiffOptions {
  /** Names of the two sides in the output. Default ['a', 'b']. */
  names?: [string, string];
  /** Paths whose mtime is not compared (e.g. dirs tar -x created "now": tarCreatedDirs). */
  ignoreMtime?: ReadonlySet<string> | ((path: string) => boolean);
  /** Fields never compared. Default none. */
  ignoreFields?: (keyof Shape)[];
  /** Most differences listed; the rest summarised in one line. Default 200. */
  limit?: number;
}

/** Readable differences between two shape maps, sorted by path ('.' is the root); [] when equal. */
export function diffShapes(a: Shapes, b: Shapes, opts: DiffOptions = {}): string[] {
  const [na, nb] = opts.names ?? ['a', 'b'];
  const limit = opts.limit ?? 200;
  const skipM = opts.ignoreMtime;
  const mtimeIgnored = (p: string) => (typeof skipM === 'function' ? skipM(p) : (skipM?.has(p) ?? false));
  const ignored = new Set<string>(opts.ignoreFields ?? []);
  const diffs: string[] = [];
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const p of paths) {
    const show = p === '' ? '.' : p;
    const x = a.get(p);
    const y = b.get(p);
    if (!x || !y) {
      diffs.push(`${show}: only in ${x ? na : nb} (${(x ?? y)!.type})`);
      continue;
    }
    const keys = new Set([...Object.keys(x), ...Object.keys(y)] as (keyof Shape)[]);
    for (const k of keys) {
      if (ignored.has(k) || (k === 'mtime' && mtimeIgnored(p))) continue;
      if (k === 'nlink' && (x.nlink === undefined || y.nlink === undefined)) continue;
      const vx = JSON.stringify(x[k]);
      const vy = JSON.stringify(y[k]);
      if (vx !== vy) diffs.push(`${show}: ${k} ${na}=${vx} ${nb}=${vy}`);
    }
  }
  return diffs.length > limit ? [...diffs.slice(0, limit), `… and ${diffs.length - limit} more`] : diffs;
}

/**
 * Dirs whose topmost layer only implies them (no entry of their own there): `tar -x` creates those
 * with the current time, so an extracted reference cannot match their mtime. Paths are of the merged
 * tree; tocs lowest first.
 */
export function tarCreatedDirs(tocs: readonly LayerToc[]): Set<string> {
  const layers = tocs.map((toc) => {
    const explicit = new Set(toc.entries.filter((e) => e.type !== 'whiteout' && !e.implied).map((e) => e.path));
    const present = new Set<string>(['']);
    for (const e of toc.entries) for (let p = e.path; p !== ''; p = parentPath(p)) present.add(p);
    return { explicit, present };
  });
  const out = new Set<string>();
  const all = new Set<string>();
  for (const l of layers) for (const p of l.present) all.add(p);
  for (const p of all) {
    const top = [...layers].reverse().find((l) => l.present.has(p));
    if (top && !top.explicit.has(p)) out.add(p);
  }
  return out;
}

/** containerd-style conversion of extracted `.wh.*` markers to overlay whiteouts, keeping dir times. */
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

/**
 * The reference tree: each blob (path of a gzip/zstd/plain layer, lowest first) extracted by GNU tar
 * under `dir`, whiteouts converted, overlayfs mounted read-only at `dir`/mnt; unmounted at teardown.
 * Needs root, overlayfs, tar, zstd, setfattr. Returns the mountpoint.
 */
export async function mountOverlayReference(t: ExecutionContext, dir: string, blobs: readonly string[]): Promise<string> {
  const lowers: string[] = [];
  for (const [i, blob] of blobs.entries()) {
    const layer = join(dir, `layer${i}`);
    await mkdir(layer);
    await chmod(layer, 0o755);
    // --delay-directory-restore: tars sorted by name put `etc/python3.11/` between `etc/python3/` and
    // `etc/python3/x`; without it GNU tar restores etc/python3's mtime too early (seen on the Debian image).
    await exec('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-p', '--delay-directory-restore', '-x', '-f', blob, '-C', layer]);
    await convertWhiteouts(layer);
    lowers.unshift(layer);
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
  return mnt;
}
