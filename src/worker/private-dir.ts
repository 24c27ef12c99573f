/**
 * Worker state not readable by other local users (issue 14): the content store holds every file of
 * every image (an image's /etc/shadow too), the spool and TOCs say what runs. Their directories are
 * 0700, owner only: created so, and tightened if an earlier version left them 0755. File modes inside
 * (0444 blobs, 0600 ingests) then no longer matter to other users: they cannot reach the files.
 *
 * Not a process umask: the snapshotter creates directories containers must read (overlay upper dirs),
 * whose modes a global umask would break.
 */
import { chmod, mkdir, stat } from 'node:fs/promises';

const PRIVATE_DIR_MODE = 0o700;

/** Creates `dir` (and parents) if needed and makes it 0700. */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  const st = await stat(dir);
  if ((st.mode & 0o777) !== PRIVATE_DIR_MODE) await chmod(dir, PRIVATE_DIR_MODE);
}
