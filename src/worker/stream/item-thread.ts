/**
 * Body of one item-pool thread (item-pool.ts): for each whole item of a batch, decode its encoded
 * bytes, check size and sha256, and only then write it into the CAS (its digest path, created
 * read-only). Synchronous on purpose: one thread per core, no event-loop round trip
 * per syscall (what made the old per-item path latency-bound, docs/design-notes.md "Ingest").
 *
 * Not here: batching, which thread gets what, waking readers (item-pool.ts, content-tracker.ts).
 */
import { createHash } from 'node:crypto';
import { closeSync, constants as fsc, fstatSync, openSync, rmSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import zlib from 'node:zlib';
import type { BatchRequest, ItemOutcome } from './item-pool.js';

/** zlib refuses output chunks below 64 bytes. */
const MIN_ZLIB_CHUNK = 64;

function decode(encoding: string, data: Uint8Array, size: number): Buffer {
  // One output chunk of the announced size (+1 so that a larger output is seen as such): no concat.
  const opts = { chunkSize: Math.max(MIN_ZLIB_CHUNK, size + 1), maxOutputLength: size + 1 };
  switch (encoding) {
    case 'identity':
      return Buffer.from(data.buffer, data.byteOffset, data.length);
    case 'br':
      return zlib.brotliDecompressSync(data, opts);
    case 'gzip':
      return zlib.gunzipSync(data, opts);
    case 'deflate-raw':
      return zlib.inflateRawSync(data, opts);
    default:
      throw Object.assign(new Error(`encoding '${encoding}' is not decoded by this worker`), { code: 'SL_ERR_PROTOCOL_MALFORMED' });
  }
}

/**
 * Writes the blob straight to its digest path (no temporary, no rename: one syscall and a directory
 * lock less per file, docs/design-notes.md "Durable content"). Safe because nothing reads a blob
 * path before the pool answered (the store's map decides what is readable), and a blob cut short by
 * a crash is not in the durable log, so the next open() re-verifies and drops it. Created read-only
 * (0444 applies to later opens; this fd may write). Returns its stamp (inode, ctime: its durable-log
 * record, cas/store.ts).
 */
function store(blobPath: string, bytes: Buffer): { ino: bigint; ctimeNs: bigint } {
  let fd: number;
  try {
    fd = openSync(blobPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o444);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Not committed (the tracker writes only absent digests): a leftover, replaced.
    rmSync(blobPath, { force: true });
    fd = openSync(blobPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o444);
  }
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    const st = fstatSync(fd, { bigint: true });
    closeSync(fd);
    return { ino: st.ino, ctimeNs: st.ctimeNs };
  } catch (err) {
    closeSync(fd);
    rmSync(blobPath, { force: true });
    throw err;
  }
}

function one(req: BatchRequest, i: number): ItemOutcome {
  const it = req.items[i]!;
  const data = new Uint8Array(req.data, it.offset, it.length);
  let raw: Buffer;
  try {
    raw = decode(it.encoding, data, it.size);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE' || e instanceof RangeError) return { error: 'size', actual: it.size + 1 };
    return { error: 'decode', message: e.message };
  }
  if (raw.length !== it.size) return { error: 'size', actual: raw.length };
  const hex = createHash('sha256').update(raw).digest('hex');
  if (hex !== it.hex) return { error: 'digest', actual: 'sha256:' + hex };
  try {
    return { ok: true, stamp: store(it.blobPath, raw) };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { error: 'io', message: e.message, errno: e.code };
  }
}

parentPort!.on('message', (req: BatchRequest) => {
  const out: ItemOutcome[] = new Array(req.items.length);
  for (let i = 0; i < req.items.length; i++) out[i] = one(req, i);
  // The batch buffer goes back for reuse (no fresh, page-faulting allocation per batch).
  parentPort!.postMessage({ id: req.id, out, data: req.data }, [req.data]);
});
