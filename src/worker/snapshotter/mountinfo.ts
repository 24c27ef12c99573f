/**
 * Finds and force-unmounts what is mounted under a directory (from /proc/self/mountinfo), deepest
 * first. Used at snapshotter start (stale lazy views of a previous daemon answer ENOTCONN; stargz
 * snapshot.go:747–808 does the same), before removing directories, and by test teardown.
 *
 * Not here: mounting (the ViewManager mounts views; containerd mounts overlays).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** How long one `umount` may take before we give up on it, ms. */
const UMOUNT_TIMEOUT_MS = 10_000;

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points at or below `dir` (an absolute path without trailing slash), deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mp = unescapeMountPath(fields[4]!);
    if (mp === dir || mp.startsWith(prefix)) out.push(mp);
  }
  // Deeper paths first; the same path mounted twice appears twice and is unmounted twice.
  return out.sort((a, b) => b.length - a.length);
}

/**
 * Lazily unmounts (MNT_DETACH) everything at or below `dir`. Returns the paths it unmounted;
 * failures are collected, not thrown, so teardown goes on.
 */
export async function unmountAllUnder(dir: string): Promise<{ unmounted: string[]; failed: { path: string; error: string }[] }> {
  const unmounted: string[] = [];
  const failed: { path: string; error: string }[] = [];
  for (const mp of await mountsUnder(dir)) {
    try {
      await execFileAsync('umount', ['-l', mp], { timeout: UMOUNT_TIMEOUT_MS });
      unmounted.push(mp);
    } catch (err) {
      failed.push({ path: mp, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return { unmounted, failed };
}
