/**
 * Flattens a layer chain's TOCs into one tree with the semantics of Linux overlayfs over the layers
 * extracted into directories (whiteouts as 0/0 char devices, opaque dirs as trusted.overlay.opaque=y,
 * which is what containerd's overlay snapshotter produces), so a view of the result shows what
 * `ctr run` with the overlayfs snapshotter would show.
 *
 * Per layer, lowest first:
 * 1. deletions: a whiteout removes the lower entry at its path and the subtree under it; an opaque dir
 *    removes every lower entry under it (deletions never touch the layer's own entries);
 * 2. entries in path order (parents first): a dir over a dir keeps the lower children and takes the
 *    upper attributes; anything else replaces the lower entry and its subtree;
 * 3. hardlinks in tar order (targets may be anywhere in the layer, or below).
 *
 * Implied parents (a layer lists `a/b/c` but not `a/b`; also the parents of whiteouts, which the
 * extracted layer dir has too) become dirs 0755 root:root mtime 0 with `implied: true`, and an implied
 * dir never overrides an existing lower dir's attributes. This is containerd's behaviour (it applies a
 * layer onto the mounted parents, so a missing parent already exists there). Plain overlayfs over
 * separately extracted dirs would show the upper implied dir with the extracting process's umask and
 * current time instead: not reproducible, so mtime 0 is chosen (the oracle test skips mtime there).
 *
 * Hardlinks: a merged 'hardlink' points (`linkname`) at a 'reg' entry of the tree (chains are
 * collapsed to that file) and carries its digest and size. If the file it was linked to is deleted or
 * replaced by a later layer, the hardlink keeps its own content (overlayfs shows the lower inode), and
 * becomes a plain 'reg' entry with that digest, because nothing in the tree shares its inode any more.
 * A hardlink to a symlink/device/fifo becomes a copy of that entry at the hardlink's path. The
 * hardlink's own header attributes (mode, owner, mtime) are kept; tar writers repeat the target's.
 *
 * Output order: comparePaths (byte order of the UTF-8 path; '' first; 'a-b' < 'a/b' < 'a0').
 *
 * Not here: reading layers (indexer.ts); symlink resolution (a TOC is lexical).
 */
import { StarlightError } from '../errors.js';
import { runAtOnce, runSliced } from '../event-loop.js';
import { baseName, comparePaths, parentPath } from './paths.js';
import { impliedDir, type LayerToc, type MergedTree, type TocEntry } from './toc.js';

interface Node {
  entry: TocEntry;
  /** Present exactly for directories. */
  children?: Map<string, Node>;
}

class Tree {
  readonly root: Node = { entry: impliedDir(''), children: new Map() };

  lookup(path: string): Node | undefined {
    if (path === '') return this.root;
    let n: Node | undefined = this.root;
    for (const part of path.split('/')) {
      n = n.children?.get(part);
      if (!n) return undefined;
    }
    return n;
  }

  /**
   * Dir nodes by path, as ensureDir found or made them: entries come sorted, so most share a parent
   * already resolved (issue 19: splitting every path from the root was a third of the merge).
   * Cleared whenever a dir node may leave the tree (remove, opaque clear, a non-dir over a dir).
   */
  private readonly dirs = new Map<string, Node>();

  /** The dir node at `path`, creating implied dirs (and replacing non-dirs) along the way. */
  ensureDir(path: string, layer: number): Node {
    if (path === '') return this.root;
    const hit = this.dirs.get(path);
    if (hit) return hit;
    const slash = path.lastIndexOf('/');
    const parent = this.ensureDir(slash < 0 ? '' : path.slice(0, slash), layer);
    const name = path.slice(slash + 1);
    let c = parent.children!.get(name);
    if (!c || !c.children) {
      c = { entry: { ...impliedDir(path), layer }, children: new Map() };
      parent.children!.set(name, c);
    }
    this.dirs.set(path, c);
    return c;
  }

  remove(path: string): void {
    if (path === '') return;
    this.dirs.clear();
    this.lookup(parentPath(path))?.children?.delete(baseName(path));
  }

  /** Drops every child of the dir at `path` (an opaque dir of an upper layer). */
  clearDir(path: string): void {
    const n = this.lookup(path);
    if (!n?.children) return;
    this.dirs.clear();
    n.children.clear();
  }

  /** Puts a layer entry at its path: dir over dir keeps children (and, for implied entries, attributes). */
  put(entry: TocEntry, layer: number): void {
    this.place(mergedEntry(entry, layer));
  }

  /** Like put, for an entry already in merged form (inserted as is: callers may keep its identity). */
  place(m: TocEntry): void {
    const entry = m;
    if (entry.path === '') {
      if (!entry.implied) this.root.entry = m;
      return;
    }
    const parent = this.ensureDir(parentPath(entry.path), m.layer ?? 0);
    const name = baseName(entry.path);
    const cur = parent.children!.get(name);
    if (entry.type === 'dir' && cur?.children) {
      if (!entry.implied) cur.entry = m;
      return;
    }
    if (cur?.children) this.dirs.clear(); // a non-dir over a dir: its subtree leaves the tree
    parent.children!.set(name, entry.type === 'dir' ? { entry: m, children: new Map() } : { entry: m });
  }

  flatten(): TocEntry[] {
    const out: TocEntry[] = [];
    const walk = (n: Node) => {
      out.push(n.entry);
      if (n.children) for (const c of n.children.values()) walk(c);
    };
    walk(this.root);
    return out.sort((a, b) => comparePaths(a.path, b.path));
  }
}

function mergedEntry(e: TocEntry, layer: number): TocEntry {
  const m: TocEntry = { ...e, layer };
  delete m.opaque;
  if (!m.implied) delete m.implied;
  return m;
}

function danglingLink(e: TocEntry, layer: number, why: string): StarlightError {
  return new StarlightError('SL_ERR_IMAGE_BAD_TAR', `hardlink ${e.path} in layer ${layer} points at ${e.linkname}, which ${why}`, {
    details: { path: e.path, linkname: e.linkname, layer },
  });
}

/**
 * Merges `tocs` (lowest layer first) into one tree; see the file header for the rules. Pure; throws
 * SL_ERR_IMAGE_BAD_TAR for a hardlink to nothing or to a directory.
 */
export function mergeLayers(tocs: readonly LayerToc[]): MergedTree {
  return runAtOnce(mergeSteps(tocs));
}

/**
 * mergeLayers(base's chain's TOCs + `tocs`), from `base` = an earlier merge of that chain's lower
 * part (an update: v1's tree + v2's new layers, issue 19). The same result as merging from scratch,
 * without re-reading the lower TOCs; `base` is not modified (the result shares its unchanged entries).
 * Undefined when `tocs` hold a hardlink to a lower layer (no digest of its own): the base no longer
 * tells which of its files were hardlinks whose target was replaced, which such a link depends on;
 * merge from scratch then.
 */
export function mergeOnto(base: MergedTree, tocs: readonly LayerToc[]): MergedTree | undefined {
  return linksBelow(tocs) ? undefined : runAtOnce(mergeSteps(tocs, base));
}

/** True when `tocs` hold a hardlink to a lower layer (no digest of its own): mergeOnto cannot apply them. */
function linksBelow(tocs: readonly LayerToc[]): boolean {
  for (const toc of tocs) for (const e of toc.entries) if (e.type === 'hardlink' && e.digest === undefined) return true;
  return false;
}

/**
 * mergeLayers() cut into slices with the event loop running between them (src/event-loop.ts): the
 * proxy merges chains of 60 000 entries while it serves other requests. Same result. `sliceMs`: the
 * longest slice (default: the event loop module's).
 */
export function mergeLayersSliced(tocs: readonly LayerToc[], sliceMs?: number): Promise<MergedTree> {
  return runSliced(mergeSteps(tocs), sliceMs);
}

/**
 * mergeOnto() in slices (as mergeLayersSliced): the worker merges the lower parts of pulled chains in
 * the background while containers start (issue 19). Same result; undefined in the same case.
 */
export function mergeOntoSliced(base: MergedTree, tocs: readonly LayerToc[], sliceMs?: number): Promise<MergedTree | undefined> {
  return linksBelow(tocs) ? Promise.resolve(undefined) : runSliced(mergeSteps(tocs, base), sliceMs);
}

/** Entries handled between two pause points of mergeSteps. */
const STEP_ENTRIES = 512;

function* mergeSteps(tocs: readonly LayerToc[], base?: MergedTree): Generator<void, MergedTree, undefined> {
  const tree = new Tree();
  /** merged hardlink entry → the merged 'reg' entry it shares an inode with. */
  const linkedTo = new Map<TocEntry, TocEntry>();
  let n = 0;
  const first = base?.diffIDs.length ?? 0;
  if (base) {
    // A merged tree's entries as they are (sorted, parents first); every hardlink left in it shares
    // the inode of the 'reg' entry at its linkname (the last pass below turned the others into files).
    const [root, ...rest] = base.entries;
    if (root) tree.root.entry = root;
    for (const e of rest) {
      tree.place(e);
      if (++n % STEP_ENTRIES === 0) yield;
    }
    for (const e of rest) {
      if (e.type !== 'hardlink') continue;
      const leader = tree.lookup(e.linkname ?? '')?.entry;
      if (leader?.type === 'reg') linkedTo.set(e, leader);
    }
    yield;
  }

  for (let i = 0; i < tocs.length; i++) {
    const layer = first + i;
    const toc = tocs[i]!;
    for (const e of toc.entries) {
      if (e.type === 'whiteout') tree.remove(e.path);
      else if (e.type === 'dir' && e.opaque) tree.clearDir(e.path);
    }
    yield;
    const ordered = toc.entries.filter((e) => e.type !== 'hardlink').sort((a, b) => comparePaths(a.path, b.path));
    yield;
    for (const e of ordered) {
      if (e.type === 'whiteout') tree.ensureDir(parentPath(e.path), layer);
      else tree.put(e, layer);
      if (++n % STEP_ENTRIES === 0) yield;
    }
    for (const e of toc.entries) {
      if (e.type === 'hardlink') putHardlink(tree, linkedTo, e, layer);
    }
    yield;
  }

  const entries = tree.flatten();
  yield;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.type !== 'hardlink') continue;
    const leader = linkedTo.get(e);
    if (!leader || tree.lookup(e.linkname ?? '')?.entry !== leader) {
      // The linked file was deleted or replaced above: this is now the only name of its content. A
      // copy: the entry may be a base tree's (mergeOnto).
      const file: TocEntry = { ...e, type: 'reg' };
      delete file.linkname;
      entries[i] = file;
    }
  }
  return { diffIDs: [...(base?.diffIDs ?? []), ...tocs.map((t) => t.diffID)], entries };
}

function putHardlink(tree: Tree, linkedTo: Map<TocEntry, TocEntry>, e: TocEntry, layer: number): void {
  const target = tree.lookup(e.linkname ?? '');
  let leader: TocEntry | undefined = target?.entry;
  if (leader?.type === 'hardlink') leader = linkedTo.get(leader);

  if (e.digest !== undefined) {
    // Resolved inside its own layer when read: keep that content whatever the target became since.
    const m = mergedEntry(e, layer);
    if (leader && leader.type === 'reg' && leader.layer === layer && leader.digest === e.digest) {
      m.linkname = leader.path;
      linkedTo.set(m, leader);
    }
    tree.place(m);
    return;
  }
  if (!target) throw danglingLink(e, layer, 'exists neither in its layer nor below');
  if (target.children) throw danglingLink(e, layer, 'is a directory');
  if (leader?.type === 'reg') {
    const m: TocEntry = { ...mergedEntry(e, layer), linkname: leader.path, size: leader.size };
    if (leader.digest !== undefined) m.digest = leader.digest;
    tree.place(m);
    linkedTo.set(m, leader);
    return;
  }
  // Symlink, device or fifo (or a hardlink whose file is gone): a copy at this path.
  const src = target.entry;
  const copy: TocEntry = { ...src, path: e.path, layer };
  if (src.type === 'hardlink') {
    copy.type = 'reg';
    delete copy.linkname;
  }
  tree.place(copy);
}
