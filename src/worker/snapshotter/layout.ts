/**
 * The on-disk layout under the snapshotter root, as containerd's overlay snapshotter:
 * `<root>/metadata.db`, `<root>/snapshots/<id>/fs` (upper dir, or the lazy view's mountpoint for a
 * remote snapshot), `<root>/snapshots/<id>/work` (overlay workdir, active only). New snapshots are
 * built in `snapshots/new-*` and renamed into place inside the metadata transaction; removed ones are
 * renamed to `snapshots/rm-<id>` and deleted after the transaction (overlay.go:431–534, 323–352).
 * Plus disk usage of a directory tree (containerd fs.DiskUsage).
 *
 * Not here: metadata (metastore.ts), mount options (mounts.ts).
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { lstat, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Usage } from './types.js';

/** Mode of `fs` dirs (containerd overlay prepareDirectory). */
const FS_DIR_MODE = 0o755;
/** Mode of `work` dirs (containerd overlay prepareDirectory). */
const WORK_DIR_MODE = 0o711;
/** Mode of the root and `snapshots` dirs: only root may look inside (containerd uses 0700). */
const ROOT_DIR_MODE = 0o700;

/** Prefix of directories being built (removed by cleanup when no create is in flight). */
export const NEW_DIR_PREFIX = 'new-';
/** Prefix of directories being removed. */
export const REMOVED_DIR_PREFIX = 'rm-';

export class Layout {
  readonly snapshotsDir: string;
  readonly dbPath: string;

  constructor(readonly root: string) {
    this.snapshotsDir = join(root, 'snapshots');
    this.dbPath = join(root, 'metadata.db');
  }

  dir(id: number): string {
    return join(this.snapshotsDir, String(id));
  }
  fsDir(id: number): string {
    return join(this.snapshotsDir, String(id), 'fs');
  }
  workDir(id: number): string {
    return join(this.snapshotsDir, String(id), 'work');
  }
  removedDir(id: number): string {
    return join(this.snapshotsDir, `${REMOVED_DIR_PREFIX}${id}`);
  }

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: ROOT_DIR_MODE });
    await mkdir(this.snapshotsDir, { recursive: true, mode: ROOT_DIR_MODE });
  }

  /**
   * A fresh `new-*` dir holding `fs` (and `work` when withWork). Synchronous on purpose: two or three
   * small metadata ops in our own root (never under a view) take microseconds, while each of their
   * async forms waited for a free thread-pool thread and then for an event-loop turn — during a
   * pull, behind the stream's writes and the merge's slices (issue 19: a remote Prepare in
   * containerd's chain took 17–22 ms in the daemon, ~2 ms of it work; docs/design-notes.md).
   */
  makeTemp(withWork: boolean): string {
    const td = mkdtempSync(join(this.snapshotsDir, NEW_DIR_PREFIX));
    mkdirSync(join(td, 'fs'), { mode: FS_DIR_MODE });
    if (withWork) mkdirSync(join(td, 'work'), { mode: WORK_DIR_MODE });
    return td;
  }
}

/**
 * Bytes allocated (st_blocks × 512) and inodes under `dir`, each inode counted once (hard links),
 * the root included, without crossing into other filesystems. Cost: one lstat per entry.
 */
export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<bigint>();
  let size = 0;
  const rootDev = (await lstat(dir, { bigint: true })).dev;
  const stack = [dir];
  while (stack.length > 0) {
    const path = stack.pop()!;
    const st = await lstat(path, { bigint: true });
    if (st.dev !== rootDev) continue;
    if (!seen.has(st.ino)) {
      seen.add(st.ino);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      for (const name of await readdir(path)) stack.push(join(path, name));
    }
  }
  return { size, inodes: seen.size };
}
