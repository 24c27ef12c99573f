/**
 * One regular file's bytes read back out of its layer blob: decompress from the blob's start, skip to
 * the file's offset in the uncompressed tar (TocEntry.offset), yield its `size` bytes, then stop the
 * blob transfer. Each 1 MiB chunk is checked against the entry's chunk digests (TocEntry.chunks)
 * before it is handed on, so a blob that no longer holds what the index pass saw yields an error,
 * never a wrong byte; a file without chunk digests (≤ 1 MiB, or a TOC from before version 2) is
 * hashed whole and its last piece handed on only once that matched. Memory: the decompressor's
 * window and one chunk. A byte range reads the layer up to the chunk holding its start (no restart
 * points: docs/design-notes.md).
 *
 * The proxy serves files too large for its content cache this way (issue 14: model weights of many
 * GiB, docs/design-notes.md "Files larger than the cache"). Not here: fetching the blob
 * (the caller's Fetcher), choosing which files are served so (content-cache.ts).
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { StarlightError } from '../errors.js';
import { ChunkHasher } from './chunks.js';
import { createDecompressor } from './decompress.js';
import { CHUNK_BYTES, CHUNK_DIGEST_BYTES, type TocEntry } from './toc.js';

export interface ExtractOptions {
  /** Layer media type (decides the compression); absent: sniffed. */
  mediaType?: string;
  maxZstdWindowBytes?: number;
  /** Names the layer in errors. */
  layerName: string;
  /**
   * Only file bytes [start, end) (end exclusive, ≤ size). The 1 MiB chunks around them are read and
   * checked (the whole file when it has no chunk digests), only the range is handed on.
   */
  range?: { start: number; end: number };
}

/** The fields of a TOC entry extraction needs: where the file is and what it must hash to. */
export type ExtractableEntry = Pick<TocEntry, 'path' | 'size' | 'offset' | 'digest' | 'chunks'>;

/**
 * A stream of `entry`'s content taken from `blob` (the whole compressed layer from its first byte),
 * in verified pieces of at most CHUNK_BYTES. Errors: SL_ERR_OCI_DIGEST_MISMATCH when a chunk (or, for
 * a file without chunk digests, the whole) hashes otherwise than the entry says, SL_ERR_IMAGE_BAD_TAR
 * when the layer ends before the file does, decompression errors as createDecompressor's. Destroying
 * the returned stream destroys `blob`.
 */
export function extractLayerFile(blob: Readable, entry: ExtractableEntry, opts: ExtractOptions): Readable {
  if (entry.offset === undefined || entry.digest === undefined) {
    blob.destroy();
    throw new StarlightError('SL_ERR_INTERNAL', `TOC entry ${entry.path} of layer ${opts.layerName} has no content offset or digest`, { details: { path: entry.path, layer: opts.layerName } });
  }
  const decompressor = createDecompressor({ mediaType: opts.mediaType, maxZstdWindowBytes: opts.maxZstdWindowBytes });
  blob.on('error', (err) => decompressor.destroy(err));
  blob.pipe(decompressor);
  const out = Readable.from(verifiedPieces(decompressor[Symbol.asyncIterator]() as AsyncIterator<Buffer>, entry as Required<Pick<TocEntry, 'offset' | 'digest'>> & ExtractableEntry, opts.layerName, opts.range), {
    objectMode: false,
    highWaterMark: CHUNK_BYTES,
  });
  out.once('close', () => {
    blob.unpipe(decompressor);
    decompressor.destroy();
    blob.destroy();
  });
  return out;
}

async function* verifiedPieces(
  src: AsyncIterator<Buffer>,
  entry: ExtractableEntry & { offset: number; digest: string },
  layer: string,
  range: { start: number; end: number } = { start: 0, end: entry.size },
): AsyncGenerator<Buffer> {
  const mismatch = (what: string): StarlightError =>
    new StarlightError('SL_ERR_OCI_DIGEST_MISMATCH', `${what} of ${entry.path} (${entry.digest}) read back from layer ${layer} does not match the layer's index; the blob changed or is corrupt`, {
      details: { path: entry.path, digest: entry.digest, layer },
    });
  const chunks = entry.chunks !== undefined && entry.chunks.length > 0 ? Buffer.from(entry.chunks.buffer, entry.chunks.byteOffset, entry.chunks.byteLength) : undefined;
  // The checked window: whole chunks around the range, or the whole file without chunk digests.
  const wStart = chunks === undefined ? 0 : Math.floor(range.start / CHUNK_BYTES) * CHUNK_BYTES;
  const wEnd = chunks === undefined ? entry.size : Math.min(entry.size, Math.ceil(range.end / CHUNK_BYTES) * CHUNK_BYTES);
  const firstChunk = wStart / CHUNK_BYTES;
  const checker = new ChunkHasher((i, d) => {
    const k = firstChunk + i;
    if (chunks !== undefined && !d.equals(chunks.subarray(k * CHUNK_DIGEST_BYTES, (k + 1) * CHUNK_DIGEST_BYTES))) throw mismatch(`chunk ${k}`);
  });
  const whole = chunks === undefined ? createHash('sha256') : undefined;
  const from = entry.offset + wStart;
  const end = entry.offset + wEnd;
  let pos = 0; // uncompressed bytes consumed so far
  let done = wStart; // file bytes checked so far
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  while (done + pendingBytes < wEnd) {
    const r = await src.next();
    if (r.done) {
      throw new StarlightError('SL_ERR_IMAGE_BAD_TAR', `layer ${layer} ends before ${entry.path} (${entry.size} bytes at offset ${entry.offset})`, { details: { path: entry.path, layer } });
    }
    const chunk = r.value;
    const at = pos;
    pos += chunk.length;
    const lo = Math.max(from, at);
    const hi = Math.min(end, pos);
    if (hi <= lo) continue;
    let piece = chunk.subarray(lo - at, hi - at);
    // Cut at CHUNK_BYTES boundaries of the file: a chunk is handed on only once it is checked.
    while (piece.length > 0) {
      const part = piece.subarray(0, CHUNK_BYTES - pendingBytes);
      piece = piece.subarray(part.length);
      pending.push(part);
      pendingBytes += part.length;
      if (pendingBytes === CHUNK_BYTES || done + pendingBytes === wEnd) {
        const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        checker.update(data);
        whole?.update(data);
        if (done + data.length === wEnd) {
          checker.finish();
          if (whole !== undefined && `sha256:${whole.digest('hex')}` !== entry.digest) throw mismatch('the content');
        }
        pending = [];
        pendingBytes = 0;
        const out = data.subarray(Math.max(0, range.start - done), Math.max(0, Math.min(data.length, range.end - done)));
        done += data.length;
        if (out.length > 0) yield out;
      }
    }
  }
  if (wEnd === 0 && whole !== undefined && `sha256:${whole.digest('hex')}` !== entry.digest) throw mismatch('the content');
}
