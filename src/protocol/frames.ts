/**
 * Byte layout of delta v1 frames (docs/protocol.md): preamble, frame heads, the msgpack header with
 * its compact item table, END and ERROR payloads. Pure functions over Buffers; validation of decoded
 * payloads throws SL_ERR_PROTOCOL_* errors.
 *
 * Not here: streaming and backpressure (encoder.ts), incremental parsing (decoder.ts).
 */
import { brotliDecompressSync } from 'node:zlib';
import { Packr } from 'msgpackr';
import { StarlightError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import {
  CONTENT_HEAD_BYTES,
  ENCODINGS,
  ITEM_PAYLOAD_BYTES,
  FRAME_HEAD_BYTES,
  FrameType,
  MAGIC,
  MAX_HEADER_BYTES,
  PREAMBLE_BYTES,
  PROTOCOL_VERSION,
  encodingCode,
  type FrameTypeValue,
} from './constants.js';
import type { ContentItem, DeltaEnd, DeltaHeader, DeltaImage, HeaderLayer, WireError } from './types.js';

/** Plain msgpack (no msgpackr record extension) so other languages can read the header. */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/** Bytes of a sha256 digest in the item table. */
const DIGEST_BYTES = 32;

function malformed(message: string, details?: Record<string, unknown>): StarlightError {
  return new StarlightError('SL_ERR_PROTOCOL_MALFORMED', message, { details });
}

export function preamble(): Buffer {
  const b = Buffer.alloc(PREAMBLE_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32BE(PROTOCOL_VERSION, 4);
  return b;
}

/** Checks a preamble; throws MALFORMED for a wrong magic, VERSION for another version. */
export function checkPreamble(b: Buffer): void {
  if (!b.subarray(0, 4).equals(MAGIC)) {
    throw malformed('not a Starlight delta stream (bad magic)', { magic: b.subarray(0, 4).toString('hex') });
  }
  const v = b.readUInt32BE(4);
  if (v !== PROTOCOL_VERSION) {
    throw new StarlightError('SL_ERR_PROTOCOL_VERSION', `delta stream version ${v}, this build reads ${PROTOCOL_VERSION}`, {
      details: { version: v, supported: PROTOCOL_VERSION },
    });
  }
}

export function frameHead(type: FrameTypeValue, length: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEAD_BYTES);
  b.writeUInt8(type, 0);
  b.writeUInt32BE(length, 1);
  return b;
}

function frame(type: FrameTypeValue, payload: Buffer): Buffer {
  return Buffer.concat([frameHead(type, payload.length), payload]);
}

/** Head of a CONTENT frame carrying `dataLength` bytes of item `index` at `offset`. */
export function contentHead(index: number, offset: number, dataLength: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES);
  b.writeUInt8(FrameType.CONTENT, 0);
  b.writeUInt32BE(CONTENT_HEAD_BYTES + dataLength, 1);
  b.writeUInt32BE(index, 5);
  // u64 as two u32 (no BigInt per frame on the serving path; offsets are safe integers)
  b.writeUInt32BE(Math.floor(offset / 0x1_0000_0000), 9);
  b.writeUInt32BE(offset >>> 0, 13);
  return b;
}

/**
 * CONTENT frames of items `first`, `first + 1`, … each sent whole at offset 0 (`data[k]` is item
 * `first + k`'s encoded bytes), in one buffer: the same bytes as contentHead(i, 0, n) + data per item.
 * Streams of one image share such buffers (proxy/session/framed-runs.ts).
 */
export function contentFrames(first: number, data: readonly Uint8Array[]): Buffer {
  let total = 0;
  for (const d of data) total += FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES + d.length;
  const b = Buffer.allocUnsafe(total);
  let pos = 0;
  for (let k = 0; k < data.length; k++) {
    const d = data[k]!;
    b.writeUInt8(FrameType.CONTENT, pos);
    b.writeUInt32BE(CONTENT_HEAD_BYTES + d.length, pos + 1);
    b.writeUInt32BE(first + k, pos + 5);
    b.writeUInt32BE(0, pos + 9);
    b.writeUInt32BE(0, pos + 13);
    b.set(d, pos + FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES);
    pos += FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES + d.length;
  }
  return b;
}

interface WireItems {
  digests: Uint8Array;
  sizes: number[];
  encodedSizes: number[];
  encodings: Uint8Array;
}

function packItems(items: ContentItem[]): WireItems {
  const digests = Buffer.alloc(items.length * DIGEST_BYTES);
  const encodings = Buffer.alloc(items.length);
  items.forEach((it, i) => {
    if (!isDigest(it.digest)) throw malformed(`item ${i} digest ${it.digest} is not sha256:<64 hex>`);
    digests.write(it.digest.slice(7), i * DIGEST_BYTES, DIGEST_BYTES, 'hex');
    encodings[i] = encodingCode(it.encoding);
  });
  return { digests, sizes: items.map((i) => i.size), encodedSizes: items.map((i) => i.encodedSize), encodings };
}

export function headerFrame(h: DeltaHeader): Buffer {
  return frame(FrameType.HEADER, headerPayload(h));
}

/** The HEADER frame's payload (msgpack); headerFrame() = its frame head + this. */
export function headerPayload(h: DeltaHeader): Buffer {
  const wire = {
    ...imageOf(h),
    layers: h.layers.map((l) => (l.encoding ? { diffID: l.diffID, toc: l.toc, encoding: encodingCode(l.encoding) } : { diffID: l.diffID, toc: l.toc })),
    items: packItems(h.items),
    firstItem: h.firstItem,
    ...(h.deferred !== undefined && h.deferred.length > 0 ? { deferred: h.deferred } : {}),
  };
  return packr.pack(wire);
}

/** The image fields of a header (or of an IMAGE frame), in wire order. */
export function imageOf(h: DeltaImage): DeltaImage {
  return {
    ref: h.ref,
    platform: h.platform,
    manifestDigest: h.manifestDigest,
    manifestMediaType: h.manifestMediaType,
    manifest: h.manifest,
    config: h.config,
    diffIDs: h.diffIDs,
  };
}

/** IMAGE frame (docs/protocol.md "Image first"): the image's fields of the HEADER to come. */
export function imageFrame(im: DeltaImage): Buffer {
  return frame(FrameType.IMAGE, packr.pack(imageOf(im)));
}

/** ITEM frame: the encoding chosen at send time for deferred item `index`. */
export function itemFrame(index: number, encoding: ContentItem['encoding'], encodedSize: number): Buffer {
  const b = Buffer.allocUnsafe(ITEM_PAYLOAD_BYTES);
  b.writeUInt32BE(index, 0);
  b.writeUInt8(encodingCode(encoding), 4);
  b.writeBigUInt64BE(BigInt(encodedSize), 5);
  return frame(FrameType.ITEM, b);
}

/** Parses an ITEM payload (length checked by the caller). */
export function parseItem(payload: Buffer): { index: number; encoding: ContentItem['encoding']; encodedSize: number } {
  const index = payload.readUInt32BE(0);
  const code = payload.readUInt8(4);
  const encoding = ENCODINGS[code];
  if (encoding === undefined) throw malformed(`ITEM frame for item ${index} has unknown encoding ${code}`, { index });
  const big = payload.readBigUInt64BE(5);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed(`ITEM frame for item ${index}: encodedSize too large`, { index });
  return { index, encoding, encodedSize: Number(big) };
}

export function endFrame(e: DeltaEnd): Buffer {
  return frame(FrameType.END, packr.pack({ items: e.items, contentBytes: e.contentBytes }));
}

export function errorFrame(e: WireError): Buffer {
  return frame(FrameType.ERROR, packr.pack({ code: e.code, message: e.message, detail: e.detail ?? {} }));
}

function unpack(payload: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = packr.unpack(payload);
  } catch (err) {
    throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `${what} frame is not valid msgpack`, { cause: err });
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw malformed(`${what} frame is not a msgpack map`);
  return v as Record<string, unknown>;
}

function str(o: Record<string, unknown>, k: string, what: string): string {
  const v = o[k];
  if (typeof v !== 'string') throw malformed(`${what}.${k} must be a string`);
  return v;
}
function bytes(o: Record<string, unknown>, k: string, what: string): Uint8Array {
  const v = o[k];
  if (!(v instanceof Uint8Array)) throw malformed(`${what}.${k} must be binary`);
  return v;
}
/**
 * A header layer's TOC bytes as encodeToc() wrote them: `encoding` absent (as sent), or 3 (`br`: the
 * request said `tocs=br`) and then decompressed, at most `room` bytes.
 */
function tocBytes(toc: Uint8Array, encoding: unknown, what: string, room: number): Uint8Array {
  if (encoding === undefined) return toc;
  if (encoding !== encodingCode('br')) throw malformed(`${what}.encoding ${String(encoding)} is not a TOC encoding (3 = br)`);
  try {
    return brotliDecompressSync(toc, { maxOutputLength: Math.max(1, room) });
  } catch (err) {
    throw malformed(`${what}.toc does not decode as brotli within ${room} bytes: ${(err as Error).message}`);
  }
}

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw malformed(`${what} must be a non-negative integer`);
  return v;
}
function numArray(o: Record<string, unknown>, k: string, n: number, what: string): number[] {
  const v = o[k];
  if (!Array.isArray(v) || v.length !== n) throw malformed(`${what}.${k} must be an array of ${n} numbers`);
  return v.map((x, i) => count(x, `${what}.${k}[${i}]`));
}

function unpackItems(v: unknown): ContentItem[] {
  if (v === null || typeof v !== 'object') throw malformed('header.items must be a map');
  const o = v as Record<string, unknown>;
  const digests = bytes(o, 'digests', 'header.items');
  if (digests.length % DIGEST_BYTES !== 0) throw malformed('header.items.digests length is not a multiple of 32');
  const n = digests.length / DIGEST_BYTES;
  const encodings = bytes(o, 'encodings', 'header.items');
  if (encodings.length !== n) throw malformed('header.items.encodings length differs from the digest count');
  const sizes = numArray(o, 'sizes', n, 'header.items');
  const encodedSizes = numArray(o, 'encodedSizes', n, 'header.items');
  const d = Buffer.from(digests.buffer, digests.byteOffset, digests.length);
  const items: ContentItem[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const encoding = ENCODINGS[encodings[i]!];
    if (encoding === undefined) throw malformed(`header item ${i} has unknown encoding ${encodings[i]}`);
    if (encoding === 'identity' && encodedSizes[i] !== sizes[i]) throw malformed(`header item ${i}: identity item with encodedSize != size`);
    items[i] = {
      digest: 'sha256:' + d.toString('hex', i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES),
      size: sizes[i]!,
      encodedSize: encodedSizes[i]!,
      encoding,
    };
  }
  return items;
}

export function parseHeader(payload: Buffer): DeltaHeader {
  const o = unpack(payload, 'header');
  const image = imageFields(o, 'header');
  const diffIDs = image.diffIDs;
  const layersRaw = o.layers;
  if (!Array.isArray(layersRaw)) throw malformed('header.layers must be an array');
  // Decoded TOC bytes are bounded in all, like a header (a compressed TOC must not expand without limit).
  let tocRoom = MAX_HEADER_BYTES;
  const layers: HeaderLayer[] = layersRaw.map((l, i) => {
    if (l === null || typeof l !== 'object') throw malformed(`header.layers[${i}] must be a map`);
    const lo = l as Record<string, unknown>;
    const diffID = str(lo, 'diffID', `header.layers[${i}]`);
    if (!diffIDs.includes(diffID)) throw malformed(`header.layers[${i}] ${diffID} is not in the chain`);
    const toc = tocBytes(bytes(lo, 'toc', `header.layers[${i}]`), lo.encoding, `header.layers[${i}]`, tocRoom);
    tocRoom -= toc.length;
    return { diffID, toc };
  });
  const items = unpackItems(o.items);
  const firstItem = count(o.firstItem, 'header.firstItem');
  if (firstItem > items.length) throw malformed(`header.firstItem ${firstItem} beyond ${items.length} items`);
  let deferred: number[] | undefined;
  if (o.deferred !== undefined) {
    if (!Array.isArray(o.deferred)) throw malformed('header.deferred must be an array of item indices');
    deferred = o.deferred.map((x, i) => {
      const k = count(x, `header.deferred[${i}]`);
      if (k < firstItem || k >= items.length || items[k]!.encoding !== 'identity' || items[k]!.encodedSize !== items[k]!.size) {
        throw malformed(`header.deferred[${i}] = ${k} is not a placeholder item of this stream`);
      }
      return k;
    });
  }
  return { ...(deferred !== undefined ? { deferred } : {}), ...image, layers, items, firstItem };
}

/** The image fields of a decoded HEADER or IMAGE payload (`w` names it in errors). */
function imageFields(o: Record<string, unknown>, w: string): DeltaImage {
  const diffIDs = o.diffIDs;
  if (!Array.isArray(diffIDs) || !diffIDs.every((x) => typeof x === 'string')) throw malformed(`${w}.diffIDs must be strings`);
  return {
    ref: str(o, 'ref', w),
    platform: str(o, 'platform', w),
    manifestDigest: str(o, 'manifestDigest', w),
    manifestMediaType: str(o, 'manifestMediaType', w),
    manifest: bytes(o, 'manifest', w),
    config: bytes(o, 'config', w),
    diffIDs: diffIDs as string[],
  };
}

export function parseImage(payload: Buffer): DeltaImage {
  return imageFields(unpack(payload, 'image'), 'image');
}

export function parseEnd(payload: Buffer): DeltaEnd {
  const o = unpack(payload, 'end');
  return { items: count(o.items, 'end.items'), contentBytes: count(o.contentBytes, 'end.contentBytes') };
}

export function parseError(payload: Buffer): WireError {
  const o = unpack(payload, 'error');
  const detail = o.detail && typeof o.detail === 'object' ? (o.detail as Record<string, unknown>) : {};
  return { code: typeof o.code === 'string' ? o.code : 'SL_ERR_PROTOCOL_REMOTE', message: String(o.message ?? ''), detail };
}
