/**
 * Finds and force-unmounts what is mounted under a directory (from /proc/self/mountinfo), deepest
 * first. Used at snapshotter start (stale lazy views of a previous daemon answer ENOTCONN; stargz
 * snapshot.go:747–808 does the same), before removing directories, and by test teardown.
 *
 * Not here: mounting (the ViewManager mounts views; containerd mounts overlays), parsing
 * (src/worker/fs/mountinfo.ts), telling stale from live FUSE mounts (everything under our root is
 * ours, and a previous daemon's views died with it).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { parseMountInfo } from '../fs/mountinfo.js';

const execFileAsync = promisify(execFile);

/** How long one `umount` may take before we give up on it, ms. */
const UMOUNT_TIMEOUT_MS = 10_000;

/** Mount points at or below `dir` (an absolute path) in mountinfo `text`, deepest first. Pure. */
export function mountPointsUnder(dir: string, text: string): string[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const out = parseMountInfo(text)
    .map((m) => m.mountPoint)
    .filter((mp) => mp === dir || mp.startsWith(prefix));
  // Deeper paths first; the same path mounted twice appears twice and is unmounted twice.
  return out.sort((a, b) => b.length - a.length);
}

/** Mount points at or below `dir` in this process's mount namespace, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  return mountPointsUnder(dir, await readFile('/proc/self/mountinfo', 'utf8'));
}

/**
 * Lazily unmounts (MNT_DETACH) everything at or below `dir` except the mount points in `keep` (views
 * the fd holder kept alive for this daemon to adopt). Returns the paths it unmounted;
 * failures are collected, not thrown, so teardown goes on.
 */
export async function unmountAllUnder(dir: string, keep: ReadonlySet<string> = new Set()): Promise<{ unmounted: string[]; failed: { path: string; error: string }[] }> {
  const unmounted: string[] = [];
  const failed: { path: string; error: string }[] = [];
  for (const mp of await mountsUnder(dir)) {
    if (keep.has(mp)) continue;
    try {
      await execFileAsync('umount', ['-l', mp], { timeout: UMOUNT_TIMEOUT_MS });
      unmounted.push(mp);
    } catch (err) {
      failed.push({ path: mp, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return { unmounted, failed };
}
