/**
 * Send-time encoding of a staged content too large to encode in memory (over SEND_TIME_MAX_BYTES, a
 * first contact's big binaries and data files): brotli streamed from the stage into a temp file of the
 * staging area, then read back. The ITEM frame announces the encoded size before the item's first
 * CONTENT frame (docs/protocol.md "Deferred items"), so the file is complete before the item is sent;
 * a session opens items ahead of the one it writes (session.ts prefetch), so the encoding overlaps the
 * sending of the items before it.
 *
 * Bounds: memory is zlib's window and one read chunk, not the item; disk is the item's raw size, taken
 * from the staging budget (--staging-size) until the reader closes; the file is unlinked as soon as it
 * is opened for reading, so it goes with its last reader (and a crash leaves it to the staging dir's
 * wipe at start). A failure removes the file and gives the bytes back.
 *
 * Not here: which items are deferred (delta-plan.ts), the in-memory encoding of smaller ones (item-source.ts).
 */
import { createWriteStream } from 'node:fs';
import { type FileHandle, open, rm } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zc, createBrotliCompress } from 'node:zlib';
import { MAX_USEFUL_RATIO, SAMPLE_BYTES, sampleWorthCompressing } from '../content-cache.js';
import type { StagedContent, StagingArea } from '../staging.js';

/** Read size from the stage and of the encoded file's stream (bytes): one CONTENT frame's worth. */
const READ_BYTES = 1024 * 1024;

/** A content's encoded bytes, ready to send. */
export interface EncodedBody {
  body: Readable;
  encodedSize: number;
}

/** Thrown inside the pipeline when the encoded form grows past what is worth sending. */
class NotWorthIt extends Error {}

/**
 * `s`'s raw bytes brotli-encoded at `quality` into a temp file, as a stream of that file; undefined
 * when encoding does not pay (a sample or the whole does not shrink below MAX_USEFUL_RATIO), when the
 * staging budget has no room for the file, or when the stage is gone (discarded meanwhile): the caller
 * then sends it another way.
 */
export async function encodeStagedToFile(staging: StagingArea, s: StagedContent, quality: number): Promise<EncodedBody | undefined> {
  let src: FileHandle;
  try {
    src = await open(s.path, 'r'); // the open fd survives a concurrent discard of the stage
  } catch {
    return undefined;
  }
  try {
    const sample = Buffer.allocUnsafe(Math.min(SAMPLE_BYTES, s.size));
    const { bytesRead } = await src.read(sample, 0, sample.length, s.offset);
    if (!sampleWorthCompressing(sample.subarray(0, bytesRead))) return undefined;
    const tmp = staging.temp(s.size);
    if (tmp === undefined) return undefined;
    try {
      let n = 0;
      const limit = s.size * MAX_USEFUL_RATIO;
      await pipeline(
        src.createReadStream({ start: s.offset, end: s.offset + s.size - 1, highWaterMark: READ_BYTES, autoClose: false }),
        createBrotliCompress({ params: { [zc.BROTLI_PARAM_QUALITY]: quality, [zc.BROTLI_PARAM_SIZE_HINT]: s.size } }),
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            n += chunk.length;
            cb(n > limit ? new NotWorthIt() : null, chunk);
          },
        }),
        createWriteStream(tmp.path),
      );
      const out = await open(tmp.path, 'r');
      await rm(tmp.path, { force: true });
      const body = out.createReadStream({ highWaterMark: READ_BYTES });
      body.once('close', tmp.release);
      return { body, encodedSize: n };
    } catch (err) {
      await rm(tmp.path, { force: true });
      tmp.release();
      if (err instanceof NotWorthIt) return undefined;
      throw err;
    }
  } finally {
    await src.close();
  }
}
