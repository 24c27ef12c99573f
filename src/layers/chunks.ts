/**
 * Per-chunk sha256 of a file's content (TocEntry.chunks): the indexer computes them while it hashes
 * the file, the worker checks each chunk as it arrives so a range is served only once verified.
 *
 * Not here: the TOC encoding (toc-codec.ts), what the worker does with a bad chunk (content-tracker).
 */
import { createHash, type Hash } from 'node:crypto';
import { CHUNK_BYTES, CHUNK_DIGEST_BYTES } from './toc.js';

/** Hashes consecutive CHUNK_BYTES pieces of a byte stream fed in arbitrary pieces. */
export class ChunkHasher {
  private hash: Hash = createHash('sha256');
  private inChunk = 0;
  /** Bytes of the chunks completed so far (a multiple of CHUNK_BYTES until finish()). */
  completedBytes = 0;

  /** `onChunk(index, digest)` is called as each chunk completes; it may throw to refuse it. */
  constructor(private readonly onChunk: (index: number, digest: Buffer) => void) {}

  update(piece: Uint8Array): void {
    let off = 0;
    while (off < piece.length) {
      const n = Math.min(CHUNK_BYTES - this.inChunk, piece.length - off);
      this.hash.update(piece.subarray(off, off + n));
      this.inChunk += n;
      off += n;
      if (this.inChunk === CHUNK_BYTES) this.cut();
    }
  }

  /** Completes the last, shorter chunk (if any). */
  finish(): void {
    if (this.inChunk > 0) this.cut();
  }

  private cut(): void {
    const index = Math.floor(this.completedBytes / CHUNK_BYTES);
    const digest = this.hash.digest();
    this.completedBytes += this.inChunk;
    this.hash = createHash('sha256');
    this.inChunk = 0;
    this.onChunk(index, digest);
  }
}

/** Collects the chunk digests of a content (the indexer's side). */
export class ChunkDigests {
  private readonly parts: Buffer[] = [];
  private readonly hasher = new ChunkHasher((_i, d) => void this.parts.push(d));

  update(piece: Uint8Array): void {
    this.hasher.update(piece);
  }

  /** The concatenated digests (CHUNK_DIGEST_BYTES each). */
  finish(): Uint8Array {
    this.hasher.finish();
    return new Uint8Array(Buffer.concat(this.parts, this.parts.length * CHUNK_DIGEST_BYTES));
  }
}
