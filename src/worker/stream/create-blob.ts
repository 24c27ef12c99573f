/**
 * Creates one small content's file at its blob path, for the item-pool threads (item-thread.ts): created
 * exclusively and read-only (0444 applies to later opens; this fd may write), all bytes written,
 * stat'ed, closed; its stamp (inode, ctime ns: the durable log's record, cas/store.ts) goes into
 * `stamps[2i]`, `stamps[2i + 1]`. A leftover at the path is replaced (not committed: the tracker writes
 * only absent digests). On failure nothing stays at the path and the error carries the errno name in
 * `code` (ENOSPC…).
 *
 * Why native (build/Release/starlight_blob.node, native/blob.cc): python-web's stream creates ~6400
 * files; through node:fs that was four calls, their argument checks and a BigIntStats object per file
 * in each thread, plus the JIT of all that in every thread's isolate (docs/design-notes.md "Ingest",
 * session 9). Without the addon (not built), the same steps go through node:fs.
 *
 * Not here: decoding and verifying (item-thread.ts); what a blob path is (cas/store.ts).
 */
import { closeSync, constants as fsc, fstatSync, openSync, rmSync, writeSync } from 'node:fs';
import { errnoError } from '../../errors.js';
import { blobAddon as addon } from '../cas/blob-addon.js';

/** Whether the native addon is in use (tests). */
export const nativeBlobs = addon !== null;

/** See the file comment. */
export function createBlob(blobPath: string, bytes: Uint8Array, stamps: BigUint64Array, i: number): void {
  if (addon === null) return createBlobFs(blobPath, bytes, stamps, i);
  const errno = addon.createBlob(blobPath, bytes, stamps, i);
  if (errno === 0) return;
  throw errnoError(errno, `creating ${blobPath}`, blobPath);
}

/** createBlob through node:fs. */
function createBlobFs(blobPath: string, bytes: Uint8Array, stamps: BigUint64Array, i: number): void {
  let fd: number;
  try {
    fd = openSync(blobPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o444);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    rmSync(blobPath, { force: true });
    fd = openSync(blobPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o444);
  }
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    const st = fstatSync(fd, { bigint: true });
    closeSync(fd);
    stamps[2 * i] = st.ino;
    stamps[2 * i + 1] = st.ctimeNs;
  } catch (err) {
    closeSync(fd);
    rmSync(blobPath, { force: true });
    throw err;
  }
}
