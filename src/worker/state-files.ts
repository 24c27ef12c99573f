/**
 * Replacing one of the worker's state files whole (TOCs, markers, headers, image records, the content
 * store's logs): the new bytes go to a temp file beside it, renamed over it, so a reader sees the old
 * file or the new one, never a part. Temp names are unique per write (`<name>.tmp-<pid>-<random>`):
 * two writes of one file at once each rename a whole file of their own, the last one wins. A crash
 * between write and rename leaves a temp file behind: the store's open() removes those
 * (removeLeftoverTemps).
 *
 * Not here: what must be flushed before what (cas/syncfs.ts, the stores' "Durability" comments).
 */
import { constants as fsc, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open, readdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** A temp file of this module, current (`.tmp-<pid>-<random>`) or of an older version (`.tmp-<pid>`). */
const TEMP_RE = /\.tmp-\d+(?:-[0-9a-z]+)?$/;

function tempBeside(path: string): string {
  return `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
}

/**
 * Replaces `path` by `data` atomically; not durable by itself (the page cache holds it until a flush:
 * the caller's syncfs, layer-store.ts "the rule"). Synchronous inside (settled when it returns): a
 * write into the page cache and a rename in the daemon's own root (never under a view) take
 * microseconds, while each of the four async steps waited for a thread-pool thread and then for an
 * event-loop turn — during a pull, behind the merge's and the inode table's slices, ~8 such hops
 * before the pull could answer (issue 19 session 14: its `records` phase, 11–46 ms).
 */
export async function replaceFile(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempBeside(path);
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Replaces `path` by `text` atomically and durably: the temp file is written and fdatasync'ed, renamed
 * over `path`, then its directory fsync'ed. After a crash `path` holds the old or the new text, never
 * a part of it (nor an empty file: the data is on disk before the rename).
 */
export async function replaceFileDurably(path: string, text: string): Promise<void> {
  const tmp = tempBeside(path);
  try {
    const fh = await open(tmp, fsc.O_CREAT | fsc.O_TRUNC | fsc.O_WRONLY, 0o600);
    try {
      await fh.writeFile(text);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** fsync of a directory (its entries: a rename into it). */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Removes the temp files replaceFile/replaceFileDurably left in `dir` (a crash before their rename).
 * Call only when no write into `dir` is under way (a store's open()). Resolves with how many.
 */
export async function removeLeftoverTemps(dir: string): Promise<number> {
  let n = 0;
  for (const name of await readdir(dir)) {
    if (!TEMP_RE.test(name)) continue;
    await rm(join(dir, name), { force: true });
    n++;
  }
  return n;
}
