/**
 * Incremental parser of a delta v1 stream: bytes in, events out (header, content chunks, end).
 * Never holds more than one frame (a CONTENT frame is ≤ 4 MiB; the HEADER ≤ maxHeaderBytes), checks
 * every length, index and offset against the header, and reports garbage as SL_ERR_PROTOCOL_MALFORMED,
 * a stream that stops before END as SL_ERR_PROTOCOL_TRUNCATED, and an ERROR frame as the error it
 * carries (its own code when known here, else SL_ERR_PROTOCOL_REMOTE).
 *
 * Not here: decoding item encodings or verifying digests (the worker's receiver does that).
 */
import { StarlightError, isCode, type Code } from '../errors.js';
import {
  CONTENT_HEAD_BYTES,
  FRAME_HEAD_BYTES,
  FrameType,
  ITEM_PAYLOAD_BYTES,
  MAX_CONTENT_FRAME_BYTES,
  MAX_HEADER_BYTES,
  MAX_TRAILER_BYTES,
  PREAMBLE_BYTES,
} from './constants.js';
import { checkPreamble, parseEnd, parseError, parseHeader, parseImage, parseItem } from './frames.js';
import type { ContentItem, DeltaEvent, DeltaHeader } from './types.js';

export interface DecoderOptions {
  /** Largest accepted HEADER payload in bytes; default MAX_HEADER_BYTES (256 MiB). */
  maxHeaderBytes?: number;
  /**
   * Emit a CONTENT frame's data as it arrives, one 'chunk' event per piece of input that holds some
   * of it (same checks; `last` on the item's final piece), instead of one event per frame. Nothing
   * is copied or held back: the pieces are views of the input. Default false (one event per frame).
   */
  splitFrames?: boolean;
}

/** A CONTENT frame whose head was read and whose data is still arriving (splitFrames). */
interface OpenFrame {
  index: number;
  slot: number;
  encodedSize: number;
  /** Data bytes of this frame not yet emitted. */
  left: number;
}

type Phase = 'preamble' | 'header' | 'content' | 'done';

/** The frame types this decoder reads; any other (the reserved 6, formerly EARLY, included) is malformed. */
const KNOWN_TYPES: ReadonlySet<number> = new Set(Object.values(FrameType));

function malformed(message: string, details?: Record<string, unknown>): StarlightError {
  return new StarlightError('SL_ERR_PROTOCOL_MALFORMED', message, { details });
}

/** Push-style parser; use decodeDelta() for an async iterable source. */
export class DeltaDecoder {
  private readonly maxHeaderBytes: number;
  private readonly splitFrames: boolean;
  private frame: OpenFrame | undefined;
  private phase: Phase = 'preamble';
  private queue: Buffer[] = [];
  private queued = 0;
  private header: DeltaHeader | undefined;
  /** Encoded bytes received per item (index - firstItem). */
  private received: Float64Array = new Float64Array(0);
  private completed = 0;
  /** Deferred items whose ITEM frame has not come yet. */
  private unannounced: Set<number> | undefined;
  private contentBytes = 0;
  /** Stream bytes consumed so far (for error details). */
  position = 0;
  /**
   * The failure an ERROR frame carried, when events came before it in the same push(): those are
   * returned first (an IMAGE or content event must not be lost because the proxy's error
   * arrived in the same chunk), and the next push() or finish() throws this.
   */
  private remoteFailure: StarlightError | undefined;

  constructor(opts: DecoderOptions = {}) {
    this.maxHeaderBytes = opts.maxHeaderBytes ?? MAX_HEADER_BYTES;
    this.splitFrames = opts.splitFrames ?? false;
  }

  /** Feeds bytes; returns the events they complete. Throws on invalid input (the decoder is then unusable). */
  push(chunk: Uint8Array): DeltaEvent[] {
    if (this.remoteFailure !== undefined) throw this.remoteFailure;
    if (chunk.length === 0) return [];
    if (this.phase === 'done') throw malformed('bytes after the END frame', { position: this.position });
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    this.queue.push(b);
    this.queued += b.length;
    const events: DeltaEvent[] = [];
    for (;;) {
      let ev: DeltaEvent | undefined | null;
      try {
        ev = this.step();
      } catch (err) {
        if (events.length === 0 || !(err instanceof StarlightError) || err.details?.remoteCode === undefined) throw err;
        this.remoteFailure = err;
        break;
      }
      if (ev === null) break;
      if (ev !== undefined) events.push(ev);
      if (this.isDone()) {
        if (this.queued > 0) throw malformed('bytes after the END frame', { position: this.position });
        break;
      }
    }
    return events;
  }

  /** True once the END frame was parsed. */
  isDone(): boolean {
    return this.phase === 'done';
  }

  /** Call at end of input: throws an ERROR frame's failure not thrown yet, else SL_ERR_PROTOCOL_TRUNCATED unless an END frame was read. */
  finish(): void {
    if (this.remoteFailure !== undefined) throw this.remoteFailure;
    if (this.phase !== 'done') {
      const h = this.header;
      throw new StarlightError('SL_ERR_PROTOCOL_TRUNCATED', `delta stream ended before its END frame (at byte ${this.position + this.queued})`, {
        details: { phase: this.phase, position: this.position + this.queued, nextItem: h ? this.nextIncomplete(h) : 0 },
      });
    }
  }

  /** First item not yet complete (where a resume should start), or items.length. */
  private nextIncomplete(h: DeltaHeader): number {
    for (let i = 0; i < this.received.length; i++) if (this.received[i]! < h.items[h.firstItem + i]!.encodedSize) return h.firstItem + i;
    return h.items.length;
  }

  /** One parse step: an event, undefined (progress without event) or null (need more bytes). */
  private step(): DeltaEvent | undefined | null {
    if (this.phase === 'preamble') {
      if (this.queued < PREAMBLE_BYTES) return null;
      checkPreamble(this.take(PREAMBLE_BYTES));
      this.phase = 'header';
      return undefined;
    }
    if (this.frame !== undefined) return this.contentPiece(this.frame);
    if (this.queued < FRAME_HEAD_BYTES) return null;
    const head = this.peek(FRAME_HEAD_BYTES);
    const type = head.readUInt8(0);
    const len = head.readUInt32BE(1);
    this.checkFrame(type, len);
    if (this.splitFrames && type === FrameType.CONTENT) {
      if (this.queued < FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES) return null;
      this.take(FRAME_HEAD_BYTES);
      return this.contentHead(this.take(CONTENT_HEAD_BYTES), len - CONTENT_HEAD_BYTES);
    }
    if (this.queued < FRAME_HEAD_BYTES + len) return null;
    this.take(FRAME_HEAD_BYTES);
    const payload = this.take(len);
    switch (type) {
      case FrameType.HEADER: {
        const h = parseHeader(payload);
        this.header = h;
        this.received = new Float64Array(h.items.length - h.firstItem);
        if (h.deferred !== undefined) this.unannounced = new Set(h.deferred);
        this.phase = 'content';
        return { type: 'header', header: h };
      }
      case FrameType.CONTENT:
        return this.content(payload);
      case FrameType.ITEM:
        this.announce(payload);
        return undefined;
      case FrameType.IMAGE:
        return { type: 'image', image: parseImage(payload) };
      case FrameType.END: {
        const h = this.header!;
        const end = parseEnd(payload);
        const expected = h.items.length - h.firstItem;
        if (this.completed !== expected || end.items !== expected || end.contentBytes !== this.contentBytes) {
          throw malformed(`END frame totals (${end.items} items, ${end.contentBytes} bytes) differ from the stream (${this.completed}/${expected} items, ${this.contentBytes} bytes)`, {
            nextItem: this.nextIncomplete(h),
          });
        }
        this.phase = 'done';
        return { type: 'end', end };
      }
      case FrameType.ERROR: {
        const e = parseError(payload);
        const code: Code = isCode(e.code) ? e.code : 'SL_ERR_PROTOCOL_REMOTE';
        throw new StarlightError(code, `proxy failed mid-stream: ${e.message}`, {
          // Before the header (after the IMAGE frame, the proxy failed to index or plan): resume at 0.
          details: { ...e.detail, remoteCode: e.code, nextItem: this.header === undefined ? 0 : this.nextIncomplete(this.header) },
        });
      }
      default:
        throw malformed(`unknown frame type ${type}`, { position: this.position });
    }
  }

  private checkFrame(type: number, len: number): void {
    const at = { position: this.position, type, length: len };
    // At its head, before its payload is waited for.
    if (!KNOWN_TYPES.has(type)) throw malformed(`unknown frame type ${type}`, at);
    // Before the HEADER only an IMAGE frame (first: docs/protocol.md "Image first") or an ERROR may come.
    if (this.phase === 'header' && type !== FrameType.HEADER && type !== FrameType.IMAGE && type !== FrameType.ERROR) {
      throw malformed(`expected a HEADER frame, got type ${type}`, at);
    }
    // The first frame starts right after the preamble.
    if (this.phase === 'header' && type === FrameType.IMAGE && this.position > PREAMBLE_BYTES) throw malformed('an IMAGE frame that is not the first frame', at);
    if (this.phase === 'content' && type === FrameType.HEADER) throw malformed('a second HEADER frame', at);
    if (this.phase === 'content' && type === FrameType.IMAGE) throw malformed('an IMAGE frame after the HEADER', at);
    const max =
      type === FrameType.HEADER || type === FrameType.IMAGE
        ? this.maxHeaderBytes
        : type === FrameType.CONTENT
          ? MAX_CONTENT_FRAME_BYTES
          : MAX_TRAILER_BYTES;
    if (len > max) throw malformed(`frame of type ${type} is ${len} bytes, limit ${max}`, at);
    if (type === FrameType.ITEM && len !== ITEM_PAYLOAD_BYTES) throw malformed(`ITEM frame of ${len} bytes, expected ${ITEM_PAYLOAD_BYTES}`, at);
    if (type === FrameType.CONTENT && len < CONTENT_HEAD_BYTES) throw malformed(`CONTENT frame of ${len} bytes is shorter than its head`, at);
  }

  /** ITEM frame: applies the encoding of a deferred item to the header's item (before its first chunk). */
  private announce(payload: Buffer): void {
    const { index, encoding, encodedSize } = parseItem(payload);
    if (this.unannounced?.delete(index) !== true) throw malformed(`ITEM frame for item ${index}, which is not a deferred item awaiting it`, { index });
    const item = this.header!.items[index]!;
    if (encoding === 'identity' && encodedSize !== item.size) throw malformed(`ITEM frame for item ${index}: identity with encodedSize != size`, { index });
    item.encoding = encoding;
    item.encodedSize = encodedSize;
  }

  private content(payload: Buffer): DeltaEvent {
    const { index, have, item } = this.checkContent(payload, payload.length - CONTENT_HEAD_BYTES);
    const data = payload.subarray(CONTENT_HEAD_BYTES);
    const slot = index - this.header!.firstItem;
    const now = have + data.length;
    this.received[slot] = now;
    this.contentBytes += data.length;
    const last = now === item.encodedSize;
    if (last) this.completed++;
    return { type: 'chunk', index, offset: have, data, last };
  }

  /** splitFrames: a CONTENT frame's head; its data follows as pieces (contentPiece). */
  private contentHead(head: Buffer, dataLength: number): DeltaEvent | undefined {
    const { index, have, item } = this.checkContent(head, dataLength);
    const slot = index - this.header!.firstItem;
    if (dataLength === 0) {
      // Only an empty item has an empty frame (checkContent): it is complete now.
      this.completed++;
      return { type: 'chunk', index, offset: have, data: Buffer.alloc(0), last: true };
    }
    this.frame = { index, slot, encodedSize: item.encodedSize, left: dataLength };
    return undefined;
  }

  /** splitFrames: as much of the open frame's data as the first queued buffer holds (no copy). */
  private contentPiece(f: OpenFrame): DeltaEvent | null {
    if (this.queued === 0) return null;
    const n = Math.min(this.queue[0]!.length, f.left);
    const data = this.take(n);
    const offset = this.received[f.slot]!;
    const now = offset + n;
    this.received[f.slot] = now;
    this.contentBytes += n;
    f.left -= n;
    if (f.left === 0) this.frame = undefined;
    const last = now === f.encodedSize;
    if (last) this.completed++;
    return { type: 'chunk', index: f.index, offset, data, last };
  }

  /** Checks a CONTENT head (index, offset, length) against the header and what was received. */
  private checkContent(head: Buffer, dataLength: number): { index: number; have: number; item: ContentItem } {
    const h = this.header!;
    const index = head.readUInt32BE(0);
    const off = head.readBigUInt64BE(4);
    const item = h.items[index];
    if (item === undefined || index < h.firstItem) throw malformed(`CONTENT frame for item ${index} not in this stream`, { index });
    if (this.unannounced?.has(index) === true) throw malformed(`CONTENT frame for deferred item ${index} before its ITEM frame`, { index });
    const slot = index - h.firstItem;
    const have = this.received[slot]!;
    if (off !== BigInt(have)) throw malformed(`CONTENT frame for item ${index} at offset ${off}, expected ${have}`, { index });
    if (have + dataLength > item.encodedSize) {
      throw malformed(`CONTENT frames of item ${index} exceed its encodedSize ${item.encodedSize}`, { index, digest: item.digest });
    }
    if (dataLength === 0 && item.encodedSize !== 0) throw malformed(`empty CONTENT frame for item ${index}`, { index });
    if (have === item.encodedSize && item.encodedSize !== 0) throw malformed(`item ${index} sent again`, { index });
    return { index, have, item };
  }

  /** The first `n` queued bytes without consuming them (copies only those n bytes when they span buffers). */
  private peek(n: number): Buffer {
    if (this.queue[0]!.length >= n) return this.queue[0]!.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    for (let k = 0; got < n; k++) got += this.queue[k]!.copy(out, got, 0, Math.min(this.queue[k]!.length, n - got));
    return out;
  }

  private take(n: number): Buffer {
    this.position += n;
    this.queued -= n;
    const first = this.queue[0];
    if (n === 0) return Buffer.alloc(0);
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.queue.shift();
      else this.queue[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const b = this.queue[0]!;
      const k = Math.min(b.length, n - got);
      b.copy(out, got, 0, k);
      got += k;
      if (k === b.length) this.queue.shift();
      else this.queue[0] = b.subarray(k);
    }
    return out;
  }
}

/**
 * Decodes a whole delta stream from an async iterable of bytes (an HTTP response body), yielding
 * events as frames complete. Throws SL_ERR_PROTOCOL_TRUNCATED if the source ends before END.
 */
export async function* decodeDelta(source: AsyncIterable<Uint8Array>, opts: DecoderOptions = {}): AsyncGenerator<DeltaEvent> {
  const dec = new DeltaDecoder(opts);
  for await (const chunk of source) {
    for (const ev of dec.push(chunk)) yield ev;
  }
  dec.finish();
}
