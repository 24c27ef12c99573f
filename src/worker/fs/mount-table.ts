/**
 * The worker's one view of the mount table: /proc/self/mountinfo parsing and queries, the one way to
 * detach a mount, stale FUSE mount cleanup for daemon starts (stargz force-unmounts what it left under
 * its root before re-mounting; design.md "containerd facts"), and unmounting everything under a
 * directory (snapshotter start, before removing directories, test teardown; stargz snapshot.go does
 * the same).
 *
 * Not here: mounting (fuse-views.ts for views; containerd mounts overlays). cleanupStaleMount never
 * touches a live mount of another process: only mounts that fail with ENOTCONN (daemon gone) or do not
 * answer within the timeout are detached.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, readlink, statfs } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { StarlightError } from '../../errors.js';

const execFileP = promisify(execFile);

/** How long a stat of a suspected stale mount may take before it counts as dead (ms). */
const STALE_STAT_TIMEOUT_MS = 2000;
/** How long one detach may take before we give up on it, ms. */
const DETACH_TIMEOUT_MS = 10_000;

export interface MountInfo {
  mountPoint: string;
  fsType: string;
  source: string;
  /** "major:minor" of the mounted filesystem. */
  dev: string;
  /** Per-superblock options (overlay's `lowerdir=…` is here), unescaped; '' when absent. */
  superOptions: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses mountinfo text (proc(5)): fields 3 (dev) and 5 (mount point), then fs type and source after " - ". */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (left.length < 5 || right.length < 2) continue;
    out.push({ dev: left[2], mountPoint: unescape(left[4]), fsType: right[0], source: unescape(right[1]), superOptions: unescape(right[2] ?? '') });
  }
  return out;
}

/**
 * The lower layers of an overlay from its super options: every `lowerdir=` / `lowerdir+=` /
 * `datadir+=` path (overlayfs escapes `,` `:` and `\` in them with a backslash). Pure.
 */
export function overlayLowers(superOptions: string): string[] {
  const out: string[] = [];
  for (const opt of superOptions.split(/(?<!\\),/)) {
    const m = /^(lowerdir|lowerdir\+|datadir\+)=(.*)$/.exec(opt);
    if (m === null) continue;
    for (const p of m[2]!.split(/(?<!\\):/)) if (p !== '') out.push(p.replace(/\\(.)/g, '$1'));
  }
  return out;
}

/**
 * Mounts in mountinfo `text` that use the filesystem mounted at `dir` (its `dev`, "major:minor"; ''
 * when unknown), other than its own mount there or a namespace's copy of it at the same path: a bind
 * of it elsewhere (same dev), or an overlay with `dir` or a path below it among its lower layers.
 * Pure.
 */
export function mountsUsing(dir: string, dev: string, text: string): MountInfo[] {
  const below = dir.endsWith('/') ? dir : dir + '/';
  return parseMountInfo(text).filter((m) => {
    if (dev !== '' && m.dev === dev) return m.mountPoint !== dir;
    return m.fsType === 'overlay' && overlayLowers(m.superOptions).some((l) => l === dir || l.startsWith(below));
  });
}

/**
 * The mountinfo text of every mount namespace this process may inspect (one process read per
 * namespace, this process's first, with the pid it was read from), and the pids it may not (EACCES:
 * another user's processes when not root; as root, only processes outside this user namespace's
 * reach, e.g. a sandbox's own init, whose namespaces predate anything this process mounts).
 */
export async function mountInfoOfEveryNamespace(): Promise<{ namespaces: { pid: string; text: string }[]; denied: string[] }> {
  const seen = new Set<string>();
  const namespaces: { pid: string; text: string }[] = [];
  const denied: string[] = [];
  const pids = ['self', ...(await readdir('/proc')).filter((d) => /^[0-9]+$/.test(d))];
  for (const pid of pids) {
    try {
      const ns = await readlink(`/proc/${pid}/ns/mnt`);
      if (seen.has(ns)) continue;
      namespaces.push({ pid, text: await readFile(`/proc/${pid}/mountinfo`, 'utf8') });
      seen.add(ns);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') continue; // the process exited meanwhile
      if (code === 'EACCES' || code === 'EPERM') denied.push(pid);
      else throw err;
    }
  }
  return { namespaces, denied };
}

/** FUSE mounts at exactly `dir` (innermost last). */
export async function fuseMountsAt(dir: string): Promise<MountInfo[]> {
  const abs = resolve(dir);
  const all = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  return all.filter((m) => m.mountPoint === abs && (m.fsType === 'fuse' || m.fsType.startsWith('fuse.')));
}

async function statWithTimeout(dir: string, ms: number): Promise<'ok' | 'dead'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'dead'>((res) => {
    timer = setTimeout(() => res('dead'), ms);
  });
  try {
    return await Promise.race([
      // statfs, not stat: stat is answered from the attribute cache (1 h) even when the daemon is gone.
      statfs(dir).then(
        () => 'ok' as const,
        (err: NodeJS.ErrnoException) => (err.code === 'ENOTCONN' || err.code === 'ECONNABORTED' ? 'dead' : 'ok'),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Lazily detaches (MNT_DETACH) the innermost mount at `mountpoint`: `umount -l` (root), else
 * `fusermount3 -u -z` (an unprivileged FUSE mount). Rejects SL_ERR_FS_UNAVAILABLE naming `what`.
 */
export async function detachMount(mountpoint: string, what = 'the mount'): Promise<void> {
  try {
    await execFileP('umount', ['-l', mountpoint], { timeout: DETACH_TIMEOUT_MS });
  } catch (first) {
    try {
      await execFileP('fusermount3', ['-u', '-z', mountpoint], { timeout: DETACH_TIMEOUT_MS });
    } catch {
      throw new StarlightError('SL_ERR_FS_UNAVAILABLE', `cannot detach ${what} at ${mountpoint}`, { cause: first, details: { mountpoint } });
    }
  }
}

/**
 * If `dir` holds a dead FUSE mount (ENOTCONN, or no answer within `timeoutMs`), detaches it with
 * detachMount (repeated for stacked mounts). Returns 'none' (nothing mounted), 'cleaned' or
 * 'alive' (a working FUSE mount is left alone). Rejects SL_ERR_FS_UNAVAILABLE if detaching fails.
 */
export async function cleanupStaleMount(dir: string, timeoutMs = STALE_STAT_TIMEOUT_MS): Promise<'none' | 'cleaned' | 'alive'> {
  const abs = resolve(dir);
  let cleaned = false;
  for (let i = 0; i < 16 && (await fuseMountsAt(abs)).length > 0; i++) {
    if ((await statWithTimeout(abs, timeoutMs)) === 'ok') return cleaned ? 'cleaned' : 'alive';
    await detachMount(abs, 'the stale FUSE mount');
    cleaned = true;
  }
  return cleaned ? 'cleaned' : 'none';
}

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
      await detachMount(mp);
      unmounted.push(mp);
    } catch (err) {
      failed.push({ path: mp, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return { unmounted, failed };
}
