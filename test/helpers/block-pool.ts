/**
 * Blocks every thread of libuv's pool (each in an open() of a FIFO nobody writes yet), for tests of
 * code that must not wait for the pool: during a pull it is busy, and each async fs call also waits for
 * an event-loop turn behind the merge's and the table's slices (issue 19). Returns the release, which
 * opens the FIFOs for writing so every blocked open() returns, then closes them.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** libuv's default pool size, unless the environment changed it. */
const POOL_THREADS = Number(process.env.UV_THREADPOOL_SIZE ?? 4);

export async function blockPool(dir: string): Promise<() => Promise<void>> {
  const fifos = Array.from({ length: POOL_THREADS }, (_, i) => join(dir, `fifo-${i}`));
  for (const f of fifos) execFileSync('mkfifo', [f]);
  const readers = fifos.map((f) => open(f, 'r'));
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    for (const f of fifos) {
      // A reader is pending in open(): a non-blocking open for writing meets it (ENXIO until the
      // pool thread has reached open()).
      for (;;) {
        try {
          closeSync(openSync(f, constants.O_WRONLY | constants.O_NONBLOCK));
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
          await sleep(5);
        }
      }
    }
    for (const h of await Promise.all(readers)) await (h as FileHandle).close();
  };
}
