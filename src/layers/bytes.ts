/**
 * A pull reader over an async sequence of Buffers with exact-length reads, used by the tar parser.
 *
 * It hands out subarrays of the source chunks (no copy) except when a fixed-size read straddles two
 * chunks, tracks the absolute position, and shows every source chunk once to an optional tap (the
 * indexer hashes the uncompressed tar there, so the diffID costs no extra pass).
 *
 * Not here: tar structure (tar.ts). A source that ends too early is reported as SL_ERR_IMAGE_BAD_TAR.
 */
import { StarlightError } from '../errors.js';

const EMPTY = Buffer.alloc(0);

export class ByteReader {
  private buf: Buffer = EMPTY;
  private pos = 0;
  private done = false;
  /** Absolute offset (in the source) of the next unread byte. */
  position = 0;

  constructor(
    private readonly source: AsyncIterator<Buffer>,
    private readonly tap?: (chunk: Buffer) => void,
  ) {}

  /** Ensures unread bytes are buffered; false at the end of the source. */
  private async more(): Promise<boolean> {
    while (this.pos >= this.buf.length) {
      if (this.done) return false;
      const r = await this.source.next();
      if (r.done) {
        this.done = true;
        this.buf = EMPTY;
        this.pos = 0;
        return false;
      }
      const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
      this.tap?.(chunk);
      this.buf = chunk;
      this.pos = 0;
    }
    return true;
  }

  private truncated(what: string): StarlightError {
    return new StarlightError('SL_ERR_IMAGE_BAD_TAR', `tar archive is truncated: it ends inside ${what} at byte ${this.position}`, {
      details: { offset: this.position },
    });
  }

  /**
   * Exactly `n` bytes, or null when the source ends before the first of them. Ending in between
   * throws SL_ERR_IMAGE_BAD_TAR naming `what`. The result may alias a source chunk: copy to keep it.
   */
  async readExact(n: number, what: string): Promise<Buffer | null> {
    if (this.pos + n <= this.buf.length) {
      const out = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.position += n;
      return out;
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      if (!(await this.more())) {
        if (need === n) return null;
        throw this.truncated(what);
      }
      const take = Math.min(need, this.buf.length - this.pos);
      parts.push(this.buf.subarray(this.pos, this.pos + take));
      this.pos += take;
      this.position += take;
      need -= take;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /**
   * Hands the next `n` bytes to `fn` in source-sized pieces (subarrays, no copy), awaiting `fn` when
   * it returns a promise (backpressure). Throws SL_ERR_IMAGE_BAD_TAR naming `what` if the source ends early.
   */
  async forEach(n: number, what: string, fn?: (piece: Buffer) => void | Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.pos >= this.buf.length && !(await this.more())) throw this.truncated(what);
      const take = Math.min(left, this.buf.length - this.pos);
      const piece = this.buf.subarray(this.pos, this.pos + take);
      this.pos += take;
      this.position += take;
      left -= take;
      if (fn) {
        const r = fn(piece);
        if (r) await r;
      }
    }
  }

  /** Consumes the rest of the source (still shown to the tap); returns the number of bytes skipped. */
  async drain(): Promise<number> {
    let skipped = this.buf.length - this.pos;
    this.position += skipped;
    this.pos = this.buf.length;
    while (await this.more()) {
      const len = this.buf.length - this.pos;
      skipped += len;
      this.position += len;
      this.pos = this.buf.length;
    }
    return skipped;
  }
}
