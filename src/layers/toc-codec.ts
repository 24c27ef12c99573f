/**
 * Binary encoding of a LayerToc (msgpack), deterministic and versioned.
 *
 * Determinism: every entry is a fixed-position array (no object keys, so no key-order or Map
 * iteration questions), absent optional fields are nil, xattrs are [name, bytes] pairs sorted by name,
 * floats are always float64 and records/structure extensions are off. The same TOC therefore always
 * gives the same bytes, which lets the proxy content-address stored TOCs.
 *
 * Layout: ['starlight.toc', TOC_VERSION, diffID, uncompressedSize, entry[]] with
 * entry = [path, type, mode, uid, gid, size, mtime, linkname, devmajor, devminor, xattrs, digest,
 *          flags (1 = opaque, 2 = implied), offset, layer, chunks (bin, version ≥ 2)].
 * Version 1 entries (15 fields, no chunks) still decode; encodeToc writes version 2.
 *
 * Not here: the delta protocol framing (src/protocol/), which embeds these bytes.
 */
import { Packr } from 'msgpackr';
import { StarlightError } from '../errors.js';
import { CHUNK_DIGEST_BYTES, TOC_VERSION, chunkCount, type EntryType, type LayerToc, type TocEntry } from './toc.js';

/** First element of every encoded TOC. */
export const TOC_MAGIC = 'starlight.toc';
const FLAG_OPAQUE = 1;
const FLAG_IMPLIED = 2;
/** Fields of an entry by TOC version. */
const ENTRY_FIELDS: Record<number, number> = { 1: 15, 2: 16 };
const TYPES: readonly EntryType[] = ['reg', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'whiteout'];

/** No records, no float32 shortcuts, no bundled strings: plain, stable msgpack. */
function packr(): Packr {
  return new Packr({ useRecords: false, useFloat32: 0, bundleStrings: false, moreTypes: false, mapsAsObjects: true });
}

type Wire = [string, number, string, number, unknown[][]];

export function encodeToc(toc: LayerToc): Buffer {
  const entries = toc.entries.map((e) => [
    e.path,
    e.type,
    e.mode,
    e.uid,
    e.gid,
    e.size,
    e.mtime,
    e.linkname ?? null,
    e.devmajor ?? null,
    e.devminor ?? null,
    e.xattrs
      ? Object.keys(e.xattrs)
          .sort()
          .map((k) => [k, e.xattrs![k]])
      : null,
    e.digest ?? null,
    (e.opaque ? FLAG_OPAQUE : 0) | (e.implied ? FLAG_IMPLIED : 0),
    e.offset ?? null,
    e.layer ?? null,
    e.chunks ?? null,
  ]);
  const wire: Wire = [TOC_MAGIC, TOC_VERSION, toc.diffID, toc.uncompressedSize, entries];
  // Copy: msgpackr may hand out a view of a buffer it reuses for the next pack().
  return Buffer.from(packr().pack(wire));
}

function bad(message: string, details: Record<string, unknown> = {}): StarlightError {
  return new StarlightError('SL_ERR_IMAGE_BAD_TOC', message, { details });
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Decodes encodeToc's bytes. Throws SL_ERR_IMAGE_BAD_TOC for foreign, corrupt or other-version data. */
export function decodeToc(buf: Uint8Array): LayerToc {
  let w: unknown;
  try {
    w = packr().unpack(buf);
  } catch (err) {
    throw bad(`TOC bytes are not valid msgpack: ${(err as Error).message}`);
  }
  if (!Array.isArray(w) || w[0] !== TOC_MAGIC) throw bad('bytes are not a Starlight TOC (magic missing)');
  const fields = typeof w[1] === 'number' ? ENTRY_FIELDS[w[1]] : undefined;
  if (fields === undefined) {
    throw bad(`TOC has version ${String(w[1])}, this Starlight reads versions 1 to ${TOC_VERSION}`, { version: w[1], expected: TOC_VERSION });
  }
  const [, , diffID, uncompressedSize, rows] = w as Wire;
  if (typeof diffID !== 'string' || !isNum(uncompressedSize) || !Array.isArray(rows)) throw bad('TOC header fields are malformed');
  const entries = rows.map((r, i) => decodeEntry(r, i, fields));
  return { version: w[1] as number, diffID, uncompressedSize, entries };
}

function decodeEntry(r: unknown, i: number, fields: number): TocEntry {
  if (!Array.isArray(r) || r.length !== fields) throw bad(`TOC entry ${i} is malformed`, { index: i });
  const [path, type, mode, uid, gid, size, mtime, linkname, devmajor, devminor, xattrs, digest, flags, offset, layer, chunks] = r;
  if (typeof path !== 'string' || !TYPES.includes(type) || ![mode, uid, gid, size, mtime, flags].every(isNum)) {
    throw bad(`TOC entry ${i} has malformed fields`, { index: i });
  }
  const e: TocEntry = { path, type: type as EntryType, mode, uid, gid, size, mtime };
  if (typeof linkname === 'string') e.linkname = linkname;
  if (isNum(devmajor)) e.devmajor = devmajor;
  if (isNum(devminor)) e.devminor = devminor;
  if (Array.isArray(xattrs)) {
    e.xattrs = {};
    for (const pair of xattrs) {
      if (!Array.isArray(pair) || typeof pair[0] !== 'string' || !(pair[1] instanceof Uint8Array)) {
        throw bad(`TOC entry ${i} has a malformed xattr`, { index: i, path });
      }
      e.xattrs[pair[0]] = new Uint8Array(pair[1]);
    }
  }
  if (typeof digest === 'string') e.digest = digest;
  if (flags & FLAG_OPAQUE) e.opaque = true;
  if (flags & FLAG_IMPLIED) e.implied = true;
  if (isNum(offset)) e.offset = offset;
  if (isNum(layer)) e.layer = layer;
  if (chunks instanceof Uint8Array) {
    if (type !== 'reg' || chunks.length !== chunkCount(size) * CHUNK_DIGEST_BYTES) throw bad(`TOC entry ${i} has chunk digests that do not match its size`, { index: i, path });
    e.chunks = new Uint8Array(chunks);
  }
  return e;
}
