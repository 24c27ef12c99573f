/**
 * /proc/self/mountinfo parsing and stale FUSE mount cleanup for daemon starts (stargz force-unmounts
 * what it left under its root before re-mounting; design.md "containerd facts").
 *
 * Not here: mounting (fuse-views.ts). Never touches a live mount of another process: only mounts
 * that fail with ENOTCONN (daemon gone) or do not answer within the timeout are detached.
 */
import { execFile } from 'node:child_process';
import { readFile, statfs } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { StarlightError } from '../../errors.js';

const execFileP = promisify(execFile);

/** How long a stat of a suspected stale mount may take before it counts as dead (ms). */
export const STALE_STAT_TIMEOUT_MS = 2000;
/** The helper that detaches FUSE mounts (fuse3 package). */
const FUSERMOUNT = 'fusermount3';

export interface MountInfo {
  mountPoint: string;
  fsType: string;
  source: string;
  /** "major:minor" of the mounted filesystem. */
  dev: string;
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
    out.push({ dev: left[2], mountPoint: unescape(left[4]), fsType: right[0], source: unescape(right[1]) });
  }
  return out;
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
 * If `dir` holds a dead FUSE mount (ENOTCONN, or no answer within `timeoutMs`), detaches it with
 * `fusermount3 -u -z` (repeated for stacked mounts). Returns 'none' (nothing mounted), 'cleaned' or
 * 'alive' (a working FUSE mount is left alone). Rejects SL_ERR_FS_UNAVAILABLE if detaching fails.
 */
export async function cleanupStaleMount(dir: string, timeoutMs = STALE_STAT_TIMEOUT_MS): Promise<'none' | 'cleaned' | 'alive'> {
  const abs = resolve(dir);
  let cleaned = false;
  for (let i = 0; i < 16 && (await fuseMountsAt(abs)).length > 0; i++) {
    if ((await statWithTimeout(abs, timeoutMs)) === 'ok') return cleaned ? 'cleaned' : 'alive';
    try {
      await execFileP(FUSERMOUNT, ['-u', '-z', abs]);
    } catch (err) {
      throw new StarlightError('SL_ERR_FS_UNAVAILABLE', `cannot detach the stale FUSE mount at ${abs}`, { cause: err, details: { mountpoint: abs } });
    }
    cleaned = true;
  }
  return cleaned ? 'cleaned' : 'none';
}
