/**
 * One layer of an image written as a plain directory in overlayfs' layer format (issue 12), the
 * way containerd's overlay snapshotter unpacks it (archive.Apply onto the layer's upper dir with
 * OverlayConvertWhiteout and the parent layers for missing parents): the layer's own entries with
 * every attribute a tar extraction as root sets, whiteouts as 0/0 char devices, opaque dirs with
 * `trusted.overlay.opaque=y`. Overlayfs over the chain's layer dirs (top first) then shows the
 * chain's merged tree (layers/merge.ts), with per-layer overlayfs' own hardlink counts.
 *
 * Dirs the layer only implies (a parent it does not list, or a dir created for an opaque marker)
 * get the attributes the chain below gives that path (containerd's mkparent copies the parent
 * layer's dir), i.e. the merged tree of the chain up to this layer; 0755 root:root where nothing
 * lists it. A whiteout of a path the layers below do not have, or under a dir this layer makes
 * opaque, hides nothing and is left out (overlayfs would list such a char device in readdir and
 * answer ENOENT to its lookup).
 *
 * A file whose content is not present is left out when the chain being graduated hides it (an upper
 * layer replaced or deleted it): a lazy pull streams only the files its merged tree shows, so a lower
 * layer's replaced files never arrive. The omitted paths are returned; such a dir shows the right tree
 * only under upper layers that hide them too (graduation.ts checks that before sharing it).
 *
 * Not here: where the dir lives, when it is built (graduation.ts), merging (layers/merge.ts).
 */
import { execFile } from 'node:child_process';
import { chmod, copyFile, lchown, link, lutimes, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { StarlightError } from '../../errors.js';
import { comparePaths, parentPath } from '../../layers/paths.js';
import { impliedDir, type LayerToc, type MergedTree, type TocEntry } from '../../layers/toc.js';

const run = promisify(execFile);

/** xattrs overlayfs interprets in a layer dir: never taken from image data (only set for opaque dirs). */
const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
/** What containerd's OverlayConvertWhiteout sets on an opaque dir (root's trusted.* form, no userxattr). */
const OPAQUE_XATTR = 'trusted.overlay.opaque';
/** Files copied at once. */
const COPY_PARALLEL = 8;
/** Longest hardlink chain followed inside one layer (a loop is a broken TOC). */
const MAX_LINK_HOPS = 64;

/** `locate(digest)`: path of a complete, verified CAS file, or null. */
export type Locate = (digest: string) => string | null;

/** What a layer dir is built from. */
export interface LayerSource {
  /** The layer's own TOC. */
  toc: LayerToc;
  /** Merged tree of the chain below this layer; undefined for the bottom layer. */
  below: MergedTree | undefined;
  /** Merged tree of the chain up to and including this layer. */
  upTo: MergedTree;
  /** Is this layer's entry at `path` hidden by an upper layer of the chain being graduated? */
  hidden: (path: string) => boolean;
}

function unavailable(toc: LayerToc, e: TocEntry, why: string): StarlightError {
  return new StarlightError('SL_ERR_SNAPSHOT_UNAVAILABLE', `cannot graduate layer ${toc.diffID}: /${e.path} ${why}`, { details: { diffID: toc.diffID, path: e.path } });
}

/**
 * Writes layer `src.toc` under the EMPTY directory `dest` (the layer's root); resolves with the
 * paths of the files left out (content not present, hidden: see the file comment). Throws
 * SL_ERR_SNAPSHOT_UNAVAILABLE if a file the chain shows has no content present or a hardlink points
 * outside its layer (containerd cannot unpack that either); the caller deletes `dest` then.
 */
export async function materialiseLayer(src: LayerSource, locate: Locate, dest: string): Promise<string[]> {
  const { toc } = src;
  const at = (path: string): string => (path === '' ? dest : join(dest, path));
  const own = new Map<string, TocEntry>();
  for (const e of toc.entries) if (e.type !== 'whiteout') own.set(e.path, e);
  const whiteouts = toc.entries.filter((e) => e.type === 'whiteout' && !own.has(e.path));
  const opaque = new Set(toc.entries.filter((e) => e.type === 'dir' && e.opaque).map((e) => e.path));
  const belowPaths = new Set(src.below?.entries.map((e) => e.path) ?? []);
  const upTo = new Map(src.upTo.entries.map((e) => [e.path, e]));

  // Dirs: the layer's own and every parent of its entries (whiteouts included), parents first.
  const dirs = new Map<string, TocEntry>();
  const addDir = (path: string): void => {
    if (dirs.has(path)) return;
    if (path !== '') addDir(parentPath(path));
    const listed = own.get(path);
    const merged = upTo.get(path);
    dirs.set(path, listed?.type === 'dir' && !listed.implied ? listed : merged?.type === 'dir' ? merged : impliedDir(path));
  };
  for (const e of toc.entries) {
    if (e.type === 'dir') addDir(e.path);
    else addDir(parentPath(e.path));
  }
  addDir('');
  for (const path of [...dirs.keys()].sort(comparePaths)) if (path !== '') await mkdir(at(path));

  const files: TocEntry[] = [];
  const links: { e: TocEntry; target: string }[] = [];
  for (const e of [...own.values()].sort((a, b) => comparePaths(a.path, b.path))) {
    const p = at(e.path);
    switch (e.type) {
      case 'dir':
        break;
      case 'reg':
        files.push(e);
        break;
      case 'hardlink': {
        const target = linkTarget(own, e);
        if (target !== undefined) links.push({ e, target });
        else if (e.digest !== undefined) files.push({ ...e, type: 'reg' }); // its target was replaced in this layer
        else throw unavailable(toc, e, `is a hardlink to ${e.linkname ?? '?'}, which is not in its layer`);
        break;
      }
      case 'symlink':
        await symlink(e.linkname ?? '', p);
        await lchown(p, e.uid, e.gid);
        await setXattrs(p, e, true);
        await lutimes(p, e.mtime, e.mtime);
        break;
      case 'char':
      case 'block':
      case 'fifo':
        await mknod(p, e.type, e.devmajor ?? 0, e.devminor ?? 0);
        await attrs(p, e);
        break;
      default:
        break;
    }
  }
  for (const w of whiteouts) {
    if (!belowPaths.has(w.path) || underOpaque(opaque, w.path)) continue;
    // Owner as containerd sets it; overlayfs never shows a whiteout.
    await mknod(at(w.path), 'char', 0, 0);
    await lchown(at(w.path), w.uid, w.gid);
  }
  const omitted = new Set<string>();
  const source = (e: TocEntry): string | null => {
    const from = e.digest ? locate(e.digest) : null;
    if (from || src.hidden(e.path)) return from;
    throw unavailable(toc, e, `has content ${e.digest ?? '(no digest)'}, which is not present`);
  };
  for (let i = 0; i < files.length; i += COPY_PARALLEL) {
    await Promise.all(
      files.slice(i, i + COPY_PARALLEL).map(async (e) => {
        const p = at(e.path);
        if (e.size === 0) await writeFile(p, '');
        else {
          const from = source(e);
          if (from === null) {
            omitted.add(e.path);
            return;
          }
          await copyFile(from, p);
        }
        await attrs(p, e);
      }),
    );
  }
  // Hardlinks once their targets exist (a link may sort before its target); they share its inode.
  for (const { e, target } of links) {
    if (!omitted.has(target)) await link(at(target), at(e.path));
    else if (source(e) === null) omitted.add(e.path); // same content: throws unless hidden too
  }
  // Directory attributes last (creating children changes a directory's mtime), deepest first.
  for (const [path, e] of [...dirs].sort((a, b) => comparePaths(b[0], a[0]))) {
    const p = at(path);
    await attrs(p, e);
    if (opaque.has(path)) await run('setfattr', ['-n', OPAQUE_XATTR, '-v', 'y', p]);
  }
  return [...omitted].sort(comparePaths);
}

/**
 * The path in its own layer that hardlink `e` shares an inode with, or undefined when it has its
 * own content (its target was replaced later in the layer: the TOC gives the link that content's
 * digest) or its target is not in the layer.
 */
function linkTarget(own: ReadonlyMap<string, TocEntry>, e: TocEntry): string | undefined {
  let name = e.linkname ?? '';
  for (let hops = 0; hops < MAX_LINK_HOPS; hops++) {
    const t = own.get(name);
    if (t === undefined || t.type === 'dir') return undefined;
    if (t.type !== 'hardlink') return t.type !== 'reg' || e.digest === undefined || t.digest === e.digest ? name : undefined;
    name = t.linkname ?? '';
  }
  return undefined;
}

/** Is `path` strictly under a dir of `opaque`? */
function underOpaque(opaque: ReadonlySet<string>, path: string): boolean {
  for (let p = parentPath(path); ; p = parentPath(p)) {
    if (opaque.has(p)) return true;
    if (p === '') return false;
  }
}

async function mknod(p: string, type: 'char' | 'block' | 'fifo', major: number, minor: number): Promise<void> {
  await run('mknod', type === 'fifo' ? [p, 'p'] : [p, type === 'char' ? 'c' : 'b', String(major), String(minor)]);
}

/** Owner, then mode (chown clears setuid/setgid), xattrs, then mtime. */
async function attrs(p: string, e: TocEntry): Promise<void> {
  await lchown(p, e.uid, e.gid);
  await chmod(p, e.mode & 0o7777);
  await setXattrs(p, e, false);
  await utimes(p, e.mtime, e.mtime);
}

async function setXattrs(p: string, e: TocEntry, noFollow: boolean): Promise<void> {
  for (const [name, value] of Object.entries(e.xattrs ?? {})) {
    if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
    const args = [...(noFollow ? ['-h'] : []), '-n', name, '-v', `0s${Buffer.from(value).toString('base64')}`, p];
    await run('setfattr', args);
  }
}
