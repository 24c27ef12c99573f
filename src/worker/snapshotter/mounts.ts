/**
 * Pure: the mounts of a snapshot, exactly as containerd's overlay snapshotter builds them
 * (snapshots/overlay/overlay.go `mounts()`), plus one rule for lazily provided layers.
 *
 * containerd's rules, with P = parents nearest first:
 * - no parent: bind mount of the snapshot's own `fs` dir, `rw` (active) or `ro` (view);
 * - view with exactly one parent: read-only bind of the parent's `fs` (overlay needs two layers);
 * - active: overlay with `workdir`, `upperdir` = own dirs, `lowerdir` = P joined by ':';
 * - view with several parents: overlay with `lowerdir` only (read-only by construction);
 * - `index=off` first when the kernel has the overlay index feature, `userxattr` when needed.
 *
 * Remote rule (Starlight): a remote snapshot's `fs` dir holds the lazy view of its WHOLE chain
 * (remote.ts), so P is cut after the first remote parent: its ancestors are already inside its view.
 * This keeps mixed chains (a committed container layer over a lazy image) a valid overlay.
 * A graduated remote parent (issue 12, MountParent.dirs) is used through its plain layer dirs instead.
 *
 * Not here: performing mounts, checking views (snapshotter.ts), the on-disk layout (layout.ts).
 */
import type { Mount, SnapshotKind } from './types.js';

/** A parent as mounts() needs it. */
export interface MountParent {
  id: number;
  /** True if this parent's `fs` dir is (or will be) a lazy view of its whole chain. */
  remote: boolean;
  /**
   * A remote parent's graduated layer dirs, top first (their overlay shows its view's tree), used
   * instead of its `fs` dir.
   */
  dirs?: readonly string[];
}

export interface MountSnapshot {
  id: number;
  kind: SnapshotKind;
  /** Nearest parent first, down to the base layer. */
  parents: MountParent[];
}

export interface MountLayout {
  fsDir(id: number): string;
  workDir(id: number): string;
}

export interface OverlayOptions {
  /** Add `index=off` (containerd does when /sys/module/overlay/parameters/index exists). */
  indexOff: boolean;
  /** Add `userxattr` (rootless overlay; false when running as root). */
  userxattr: boolean;
}

/**
 * The lower layers that actually go into lowerdir, nearest first: the parents up to and including
 * the first remote one.
 */
function effectiveLowers(parents: MountParent[]): MountParent[] {
  const i = parents.findIndex((p) => p.remote);
  return i < 0 ? parents : parents.slice(0, i + 1);
}

/** The lowerdir entries of the effective lowers, nearest first (a graduated parent gives several). */
function lowerDirs(parents: MountParent[], layout: MountLayout): string[] {
  return effectiveLowers(parents).flatMap((p) => p.dirs ?? [layout.fsDir(p.id)]);
}

export function snapshotMounts(s: MountSnapshot, layout: MountLayout, opts: OverlayOptions): Mount[] {
  const lowers = lowerDirs(s.parents, layout);
  if (lowers.length === 0) {
    return [{ type: 'bind', source: layout.fsDir(s.id), options: [s.kind === 'view' ? 'ro' : 'rw', 'rbind'] }];
  }
  const options: string[] = [];
  if (opts.indexOff) options.push('index=off');
  if (opts.userxattr) options.push('userxattr');
  if (s.kind === 'active') {
    options.push(`workdir=${layout.workDir(s.id)}`, `upperdir=${layout.fsDir(s.id)}`);
  } else if (lowers.length === 1) {
    return [{ type: 'bind', source: lowers[0]!, options: ['ro', 'rbind'] }];
  }
  options.push(`lowerdir=${lowers.join(':')}`);
  return [{ type: 'overlay', source: 'overlay', options }];
}
