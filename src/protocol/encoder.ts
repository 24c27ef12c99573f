/**
 * Streaming writer of a delta v1 stream onto a Writable (an HTTP response), honouring backpressure:
 * every write waits for 'drain' when the socket buffer is full, and item bytes are re-chunked into
 * CONTENT frames of at most `chunkBytes`, so memory stays bounded by one chunk whatever the item size.
 *
 * It enforces the stream grammar (preamble+HEADER, CONTENT*, END|ERROR) and that each item's bytes
 * add up to its header's encodedSize. Not here: choosing or reading items (src/proxy), parsing (decoder.ts).
 */
import type { Writable } from 'node:stream';
import { StarlightError } from '../errors.js';
import { DEFAULT_CHUNK_BYTES, MAX_CONTENT_FRAME_BYTES, CONTENT_HEAD_BYTES, FRAME_HEAD_BYTES, FrameType, PREAMBLE_BYTES } from './constants.js';
import { contentHead, endFrame, errorFrame, frameHead, headerPayload, imageFrame, itemFrame, preamble } from './frames.js';
import type { ContentItem, DeltaEnd, DeltaHeader, DeltaImage, WireError } from './types.js';

export interface EncoderOptions {
  /** Max data bytes per CONTENT frame; default DEFAULT_CHUNK_BYTES (1 MiB), at most 4 MiB. */
  chunkBytes?: number;
  /**
   * Bytes the Writable may buffer before the encoder waits for 'drain'; default DEFAULT_MAX_BUFFERED
   * (1 MiB). Waiting at every write past the socket's 16 KiB high-water mark cost a loop turn per small
   * item (bench/proxy.ts); this keeps memory bounded by maxBuffered + one chunk per stream.
   */
  maxBuffered?: number;
}

/** Default EncoderOptions.maxBuffered, bytes. */
const DEFAULT_MAX_BUFFERED = 1024 * 1024;
/** Pieces (frame heads, item data) up to this size are gathered into one write; larger ones go out as they are. */
const SMALL_WRITE_BYTES = 64 * 1024;
/**
 * Gathered small pieces are written once they reach this many bytes, or when the sender yields to the
 * event loop (setImmediate), or at the header/END/ERROR. One write per piece (~2 per small item) cost
 * more than the bytes: each response write is an HTTP chunk with its own bookkeeping and syscall
 * iovecs (bench/proxy.ts --fanout, docs/design-notes.md "Serving many pulls").
 */
const BATCH_BYTES = 256 * 1024;

/** 'image': the preamble and the IMAGE frame are out, the header is not. */
type State = 'new' | 'image' | 'open' | 'closed';

/** The first bytes of a stream with header `h`: preamble and HEADER frame. */
export function headerBytes(h: DeltaHeader): Buffer {
  // One copy of the payload (a header of 60 000 items and their TOCs is several MB: issue 14, /healthz).
  const payload = headerPayload(h);
  return Buffer.concat([preamble(), frameHead(FrameType.HEADER, payload.length), payload]);
}

export class DeltaEncoder {
  private readonly chunkBytes: number;
  private readonly maxBuffered: number;
  private state: State = 'new';
  private header: DeltaHeader | undefined;
  /** See headerWritten(). */
  private headerOut: Promise<void> | undefined;
  private headerLeft: (() => void) | undefined;
  /** Manifest digest of the IMAGE frame sent, if any (the header must name the same image). */
  private image: string | undefined;
  /** Per item of the header: 1 once sent completely (a flag array: writeFrames marks thousands per stream). */
  private sent = new Uint8Array(0);
  private sentCount = 0;
  /** Bytes written so far of items sent by writeChunk() and not complete yet. */
  private readonly partial = new Map<number, number>();
  /** Deferred items not announced yet (writeItemEncoding). */
  private unannounced = new Set<number>();
  private contentBytes = 0;
  /** Total bytes handed to the encoder (preamble and frame heads included). */
  bytesWritten = 0;
  /** Small pieces not handed to the Writable yet (see BATCH_BYTES). */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private flushScheduled = false;

  constructor(
    private readonly out: Writable,
    opts: EncoderOptions = {},
  ) {
    this.chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.maxBuffered = opts.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    if (!(this.chunkBytes > 0 && this.chunkBytes <= MAX_CONTENT_FRAME_BYTES - CONTENT_HEAD_BYTES)) {
      throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `chunkBytes ${this.chunkBytes} out of range 1..4 MiB`);
    }
  }

  /** True once writeHeader() was called: failures after it must go out as writeError(). */
  get headerSent(): boolean {
    return this.state !== 'new' && this.state !== 'image';
  }

  /** True once the preamble is out (the IMAGE frame or the header): failures must go out as writeError(). */
  get started(): boolean {
    return this.state !== 'new';
  }

  /**
   * Writes the IMAGE frame (docs/protocol.md "Image first"): the image of the header to come, first,
   * with the preamble. The header must then carry the same image.
   */
  async writeImage(im: DeltaImage): Promise<void> {
    if (this.state !== 'new') throw misuse(`IMAGE frame in a stream that is ${this.state}`);
    this.state = 'image';
    this.image = im.manifestDigest;
    await this.write(Buffer.concat([preamble(), imageFrame(im)]), true);
  }

  /**
   * Writes the preamble and the HEADER frame. Once, first. `encoded`: headerBytes(h), when the caller
   * serves the same header to many streams and encoded it once.
   */
  async writeHeader(h: DeltaHeader, encoded: Buffer = headerBytes(h)): Promise<void> {
    if (this.state !== 'new' && this.state !== 'image') throw misuse('writeHeader called twice');
    if (this.image !== undefined && h.manifestDigest !== this.image) throw misuse(`header of ${h.manifestDigest} after the IMAGE frame of ${this.image}`);
    this.header = h;
    this.sent = new Uint8Array(h.items.length);
    this.unannounced = new Set(h.deferred ?? []);
    // After the IMAGE frame the preamble is out already: only the HEADER frame follows.
    const bytes = this.state === 'image' ? encoded.subarray(PREAMBLE_BYTES) : encoded;
    this.state = 'open';
    const out = this.out;
    this.headerOut = new Promise<void>((resolve) => {
      const done = (): void => {
        out.off('close', done);
        resolve();
      };
      out.once('close', done);
      this.headerLeft = done;
    });
    await this.write(bytes, true, this.headerLeft);
  }

  /**
   * Resolves once the header's bytes were handed to the socket (the callback of their write: with
   * TCP_NOTSENT_LOWAT, the kernel took all but that much of them), or the stream closed or failed;
   * at once before writeHeader(). Never rejects.
   */
  headerWritten(): Promise<void> {
    return this.headerOut ?? Promise.resolve();
  }

  /**
   * Sends item `index` from `source` (its encoded bytes, any chunking). Throws SL_ERR_INTERNAL if the
   * source yields more or fewer bytes than the header's encodedSize (a stream that lies is worse than
   * one that fails).
   */
  async writeItem(index: number, source: AsyncIterable<Uint8Array> | Uint8Array): Promise<void> {
    const h = this.openHeader();
    const item = h.items[index];
    if (item === undefined || index < h.firstItem) throw misuse(`item ${index} is not in this stream`);
    if (this.sent[index] === 1 || this.partial.has(index)) throw misuse(`item ${index} sent twice`);
    if (this.unannounced.has(index)) throw misuse(`deferred item ${index} sent before writeItemEncoding`);
    this.markSent(index);
    if (source instanceof Uint8Array && source.length <= SMALL_WRITE_BYTES && source.length === item.encodedSize && source.length > 0) {
      await this.write(contentHead(index, 0, source.length));
      await this.write(Buffer.isBuffer(source) ? source : Buffer.from(source.buffer, source.byteOffset, source.length));
      this.contentBytes += source.length;
      return;
    }
    if (source instanceof Uint8Array) source = [source] as unknown as AsyncIterable<Uint8Array>;
    let offset = 0;
    let pending: Buffer[] = [];
    let pendingLen = 0;
    const flush = async (): Promise<void> => {
      if (pendingLen === 0) return;
      const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingLen);
      pending = [];
      pendingLen = 0;
      await this.write(contentHead(index, offset, data.length));
      await this.write(data);
      offset += data.length;
      this.contentBytes += data.length;
    };
    for await (const raw of source as AsyncIterable<Uint8Array>) {
      let buf = Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.length);
      if (offset + pendingLen + buf.length > item.encodedSize) {
        throw new StarlightError('SL_ERR_INTERNAL', `item ${index} (${item.digest}) has more bytes than its encodedSize ${item.encodedSize}`, {
          details: { digest: item.digest },
        });
      }
      while (buf.length > 0) {
        const take = Math.min(buf.length, this.chunkBytes - pendingLen);
        pending.push(buf.subarray(0, take));
        pendingLen += take;
        buf = buf.subarray(take);
        if (pendingLen === this.chunkBytes) await flush();
      }
    }
    await flush();
    if (offset !== item.encodedSize) {
      throw new StarlightError('SL_ERR_INTERNAL', `item ${index} (${item.digest}) ended at ${offset} of ${item.encodedSize} bytes`, {
        details: { digest: item.digest },
      });
    }
    if (item.encodedSize === 0) await this.write(contentHead(index, 0, 0));
  }

  /**
   * Appends `data` (≤ chunkBytes) to item `index` as one CONTENT frame at the item's next offset. Items
   * sent this way may interleave (a session preempts one item for another at a frame boundary); each
   * item's offsets stay contiguous. Returns true when the item is complete. An empty `data` is only
   * valid for an item of encodedSize 0.
   */
  async writeChunk(index: number, data: Uint8Array): Promise<boolean> {
    const h = this.openHeader();
    const item = h.items[index];
    if (item === undefined || index < h.firstItem) throw misuse(`item ${index} is not in this stream`);
    if (this.sent[index] === 1) throw misuse(`item ${index} sent twice`);
    if (data.length > this.chunkBytes) throw misuse(`chunk of ${data.length} bytes exceeds ${this.chunkBytes}`);
    if (this.unannounced.has(index)) throw misuse(`deferred item ${index} sent before writeItemEncoding`);
    const offset = this.partial.get(index) ?? 0;
    if (offset + data.length > item.encodedSize) {
      throw new StarlightError('SL_ERR_INTERNAL', `item ${index} (${item.digest}) has more bytes than its encodedSize ${item.encodedSize}`, {
        details: { digest: item.digest },
      });
    }
    if (data.length === 0 && item.encodedSize !== 0) throw misuse(`empty chunk for item ${index}`);
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
    await this.write(contentHead(index, offset, buf.length));
    if (buf.length > 0) await this.write(buf);
    this.contentBytes += buf.length;
    const now = offset + buf.length;
    if (now < item.encodedSize) {
      this.partial.set(index, now);
      return false;
    }
    this.partial.delete(index);
    this.markSent(index);
    return true;
  }

  /**
   * Sends items `first`..`end - 1` whole, in this order, from `frames`: their CONTENT frames as
   * contentFrames() built them (one frame per item at offset 0). The same bytes as writeChunk(i, data)
   * for each item; one write instead of two per item, and `frames` may be shared by many streams.
   * Each item must be unsent, announced, and fit one chunk; `frames` must have exactly their length.
   */
  async writeFrames(first: number, end: number, frames: Buffer): Promise<void> {
    const h = this.openHeader();
    if (first < h.firstItem || end > h.items.length || first >= end) throw misuse(`items ${first}..${end - 1} are not in this stream`);
    let want = 0;
    let content = 0;
    for (let i = first; i < end; i++) {
      const n = h.items[i]!.encodedSize;
      if (this.sent[i] === 1 || this.partial.has(i)) throw misuse(`item ${i} sent twice`);
      if (this.unannounced.has(i)) throw misuse(`deferred item ${i} sent before writeItemEncoding`);
      if (n > this.chunkBytes) throw misuse(`item ${i} of ${n} bytes does not fit one ${this.chunkBytes}-byte chunk`);
      content += n;
      want += FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES + n;
    }
    if (frames.length !== want) throw misuse(`frames of items ${first}..${end - 1} are ${frames.length} bytes, not ${want}`);
    for (let i = first; i < end; i++) this.markSent(i);
    this.contentBytes += content;
    await this.write(frames);
  }

  /**
   * Announces the encoding of deferred item `index` (header.deferred) chosen now: writes its ITEM frame
   * and updates the header's item, so the item's bytes are then checked against `encodedSize`. Once per
   * deferred item, before any of its bytes.
   */
  async writeItemEncoding(index: number, encoding: ContentItem['encoding'], encodedSize: number): Promise<void> {
    const h = this.openHeader();
    if (!this.unannounced.delete(index)) throw misuse(`item ${index} is not a deferred item awaiting its encoding`);
    const item = h.items[index]!;
    if (encoding === 'identity' && encodedSize !== item.size) throw misuse(`identity item ${index} with encodedSize ${encodedSize} != size ${item.size}`);
    item.encoding = encoding;
    item.encodedSize = encodedSize;
    await this.write(itemFrame(index, encoding, encodedSize));
  }

  /** Writes the END frame with the totals of what was sent. Returns them. */
  async writeEnd(): Promise<DeltaEnd> {
    this.openHeader();
    if (this.partial.size > 0) throw misuse(`END with ${this.partial.size} item(s) partly sent`);
    this.state = 'closed';
    const end = { items: this.sentCount, contentBytes: this.contentBytes };
    await this.write(endFrame(end), true);
    return end;
  }

  /** Ends a stream whose header (or IMAGE frame) was sent with an ERROR frame (best effort: the peer may be gone). */
  async writeError(e: WireError): Promise<void> {
    if (this.state !== 'image') this.openHeader();
    this.state = 'closed';
    await this.write(errorFrame(e), true);
  }

  private markSent(index: number): void {
    this.sent[index] = 1;
    this.sentCount++;
  }

  private openHeader(): DeltaHeader {
    if (this.state !== 'open' || this.header === undefined) throw misuse(`stream is ${this.state}`);
    return this.header;
  }

  /**
   * Hands `buf` on: small pieces are gathered (BATCH_BYTES) and written together; `now` writes
   * everything gathered at once (header, END, ERROR: the peer waits for those).
   */
  private async write(buf: Buffer, now = false, written?: () => void): Promise<void> {
    const out = this.out;
    if (out.destroyed || out.writableEnded) {
      written?.();
      throw new StarlightError('SL_ERR_CANCELED', 'delta stream consumer went away');
    }
    this.bytesWritten += buf.length;
    if (buf.length <= SMALL_WRITE_BYTES) {
      this.batch.push(buf);
      this.batchBytes += buf.length;
      // Gathered bytes count toward maxBuffered: a small bound (tests of preemption) gathers nothing.
      if (!now && this.batchBytes < Math.min(BATCH_BYTES, this.maxBuffered)) {
        if (!this.flushScheduled) {
          this.flushScheduled = true;
          setImmediate(() => {
            this.flushScheduled = false;
            if (!out.destroyed && !out.writableEnded) this.flushBatch();
          });
        }
        return;
      }
      return this.drained(this.flushBatch(written));
    }
    this.flushBatch();
    return this.drained(written === undefined ? out.write(buf) : out.write(buf, () => written()));
  }

  /**
   * Writes the gathered pieces as one buffer; returns out.write()'s answer (true when nothing was
   * gathered). `written`: called when they were handed on (the write's callback).
   */
  private flushBatch(written?: () => void): boolean {
    if (this.batchBytes === 0 && this.batch.length === 0) {
      written?.();
      return true;
    }
    const data = this.batch.length === 1 ? this.batch[0]! : Buffer.concat(this.batch, this.batchBytes);
    this.batch = [];
    this.batchBytes = 0;
    return written === undefined ? this.out.write(data) : this.out.write(data, () => written());
  }

  /** Waits for 'drain' when the Writable holds more than maxBuffered. */
  private async drained(accepted: boolean): Promise<void> {
    const out = this.out;
    if (accepted || out.writableLength <= this.maxBuffered) return;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        out.off('drain', onDrain);
        out.off('close', onClose);
        out.off('error', onError);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = (): void => done();
      const onClose = (): void => done(new StarlightError('SL_ERR_CANCELED', 'delta stream consumer went away'));
      const onError = (err: Error): void => done(new StarlightError('SL_ERR_CANCELED', 'delta stream write failed', { cause: err }));
      out.on('drain', onDrain);
      out.on('close', onClose);
      out.on('error', onError);
    });
  }
}

function misuse(message: string): StarlightError {
  return new StarlightError('SL_ERR_INTERNAL', `delta encoder misuse: ${message}`);
}
