/**
 * Binds a unix socket that is never reachable with wider permissions than `mode` (issue 14). A socket
 * bound at its final path and chmod-ed after listen() is connectable in between with the mode the
 * umask allowed. Instead it is bound inside a fresh 0700 directory beside the final path (no one else
 * can reach it there), chmod-ed, then renamed into place (atomic within one file system).
 *
 * Not here: what is served (api/server.ts, snapshotter/server.ts), stale-socket policy (the callers).
 */
import { chmod, mkdtemp, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Calls `bind(tmpPath)` to listen on a socket in a private directory, gives it `mode`, and moves it
 * to `socket`. The caller has removed any stale file at `socket`; the temporary directory is removed
 * whatever happens.
 */
export async function bindSocketPrivately(socket: string, mode: number, bind: (tmpPath: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(dirname(socket), `.${basename(socket)}.`));
  try {
    const tmp = join(dir, 'sock');
    await bind(tmp);
    await chmod(tmp, mode);
    await rename(tmp, socket);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
