/**
 * Graduation (issue 12): once every file of an image's chain is present and verified, its merged tree
 * is materialised from the CAS as a plain directory, and NEW containers get that directory as their
 * overlay lowerdir instead of the lazy FUSE view (src/worker/snapshotter/mounts.ts). Their metadata
 * and data paths are then exactly overlayfs's; running containers stay on the view they mounted.
 *
 * Layout: `<root>/<manifest hex>-<layer index>/` is the tree of remote id `<manifest>/<index>`. It is
 * built in `<root>/new-*` and renamed into place when complete, so its existence means "complete"
 * (after a crash or restart a half-built tree is never used: `open()` deletes `new-*` leftovers).
 *
 * Files are COPIED from the CAS (copy_file_range). Hardlinks to CAS blobs are not used: a hardlink
 * shares the inode, so the blob's mode/owner/mtime/xattrs and nlink would show in the container (and
 * one blob serves every path and image with that content, whatever their metadata); this host's
 * ext4 has no reflinks. Hardlinks INSIDE the image are recreated as hardlinks (same as tar -x).
 * The cost is counted: the copy doubles the bytes of graduated images on disk (design-notes.md).
 *
 * Not here: when to graduate and freeing (ImageService), mounts (snapshotter).
 */
import { execFile } from 'node:child_process';
import { copyFile, chmod, lchown, link, lutimes, mkdir, mkdtemp, readdir, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { StarlightError } from '../../errors.js';
import type { MergedTree, TocEntry } from '../../layers/toc.js';
import { nullLogger, type Logger } from '../../log.js';

const run = promisify(execFile);

/** Prefix of trees being built. */
const NEW_PREFIX = 'new-';
/** xattrs overlayfs would interpret in a lowerdir (the view does not show them either). */
const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
/** Files copied at once. */
const COPY_PARALLEL = 8;

/** `locate(digest)`: path of a complete, verified CAS file, or null. */
export type Locate = (digest: string) => string | null;

/**
 * Writes `tree` under the EMPTY directory `dest` (which becomes the tree's root), with every
 * attribute a tar extraction as root would set: type, mode (setuid/setgid/sticky included), owner,
 * mtime, xattrs (trusted.overlay.* left out), device numbers, symlink targets, hardlinks.
 * Throws SL_ERR_SNAPSHOT_UNAVAILABLE if a regular file's content is not present.
 */
async function materialiseTree(tree: MergedTree, locate: Locate, dest: string): Promise<void> {
  const at = (e: TocEntry): string => (e.path === '' ? dest : join(dest, e.path));
  const dirs: TocEntry[] = [];
  const files: TocEntry[] = [];
  const links: TocEntry[] = [];
  // Entries are sorted by path bytes, so a directory comes before everything under it.
  for (const e of tree.entries) {
    const p = at(e);
    switch (e.type) {
      case 'dir':
        if (e.path !== '') await mkdir(p);
        dirs.push(e);
        break;
      case 'reg':
        files.push(e);
        break;
      case 'hardlink':
        links.push(e);
        break;
      case 'symlink':
        await symlink(e.linkname ?? '', p);
        await lchown(p, e.uid, e.gid);
        await setXattrs(p, e, true);
        await lutimes(p, e.mtime, e.mtime);
        break;
      case 'char':
      case 'block':
      case 'fifo': {
        const args = e.type === 'fifo' ? [p, 'p'] : [p, e.type === 'char' ? 'c' : 'b', String(e.devmajor ?? 0), String(e.devminor ?? 0)];
        await run('mknod', args);
        await attrs(p, e);
        break;
      }
      default:
        break; // whiteouts do not occur in a merged tree (merge.ts resolves them)
    }
  }
  for (let i = 0; i < files.length; i += COPY_PARALLEL) {
    await Promise.all(
      files.slice(i, i + COPY_PARALLEL).map(async (e) => {
        const p = at(e);
        if (e.size === 0) await writeFile(p, '');
        else {
          const src = e.digest ? locate(e.digest) : null;
          if (!src) {
            throw new StarlightError('SL_ERR_SNAPSHOT_UNAVAILABLE', `cannot graduate: content of /${e.path} (${e.digest ?? 'no digest'}) is not present`, { details: { path: e.path, digest: e.digest } });
          }
          await copyFile(src, p);
        }
        await attrs(p, e);
      }),
    );
  }
  // Hardlinks after every file exists (a link may sort before its target); they share its inode.
  for (const e of links) await link(at({ ...e, path: e.linkname ?? '' }), at(e));
  // Directory attributes last: creating children changes a directory's mtime. Deepest first.
  for (const e of dirs.reverse()) await attrs(at(e), e);
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

/**
 * The graduated trees under one root directory. All methods are safe to call concurrently for
 * different remote ids; `graduate` is single-flight per remote id.
 */
export class Graduations {
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(
    readonly root: string,
    private readonly log: Logger = nullLogger,
  ) {}

  /** Creates the root; removes half-built trees of an earlier run. */
  async open(): Promise<this> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.root)) {
      if (name.startsWith(NEW_PREFIX)) await rm(join(this.root, name), { recursive: true, force: true });
    }
    return this;
  }

  /** Directory of `remoteId`'s tree (whether or not it exists). */
  dirOf(remoteId: string): string {
    return join(this.root, remoteId.replace(/^sha256:/, '').replace('/', '-'));
  }

  /** The complete tree of `remoteId`, or undefined (not graduated, or still being built). */
  get(remoteId: string): string | undefined {
    const d = this.dirOf(remoteId);
    return !this.inflight.has(remoteId) && existsSync(d) ? d : undefined;
  }

  /** Materialises `tree` for `remoteId` unless done or in flight; resolves with its directory. */
  graduate(remoteId: string, tree: MergedTree, locate: Locate): Promise<string> {
    const done = this.get(remoteId);
    if (done) return Promise.resolve(done);
    let p = this.inflight.get(remoteId);
    if (!p) {
      p = this.build(remoteId, tree, locate).finally(() => this.inflight.delete(remoteId));
      this.inflight.set(remoteId, p);
    }
    return p;
  }

  private async build(remoteId: string, tree: MergedTree, locate: Locate): Promise<string> {
    const started = Date.now();
    const tmp = await mkdtemp(join(this.root, NEW_PREFIX));
    try {
      await materialiseTree(tree, locate, tmp);
      // Durable before it counts as complete (a crash must not leave a renamed tree with unwritten
      // data), and its writeback done before new containers read it. `sync -f` = syncfs(2).
      await run('sync', ['-f', tmp]);
      const dest = this.dirOf(remoteId);
      await rename(tmp, dest);
      this.log.info('image-graduated', { remoteId, dir: dest, entries: tree.entries.length, ms: Date.now() - started });
      return dest;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }

  /** Deletes every graduated tree of `manifestDigest` (waits for builds in flight first). */
  async remove(manifestDigest: string): Promise<void> {
    const prefix = manifestDigest.replace(/^sha256:/, '') + '-';
    for (const [id, p] of this.inflight) if (this.dirOf(id).startsWith(join(this.root, prefix))) await p.catch(() => undefined);
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      if (name.startsWith(prefix)) await rm(join(this.root, name), { recursive: true, force: true });
    }
  }
}
