/**
 * Streaming tar parser: ustar, GNU (long names 'L', long links 'K', base-256 numbers) and PAX
 * ('x' per-entry and 'g' global extended headers: path, linkpath, size, uid, gid, mtime with
 * fractions, SCHILY.xattr.*). Content is never buffered: each entry's body is offered as a sequence of
 * pieces to the caller, who awaits what it needs (backpressure) or lets the parser skip it.
 *
 * Rules taken from Go's archive/tar (what containerd and Docker read layers with):
 * - header-only types (links, devices, dirs, fifos) have no data blocks, whatever their size field says;
 * - a '\0' typeflag with a name ending in '/' is a directory (pre-POSIX tars);
 * - the end is two zero blocks; a clean end of input on a header boundary is also accepted (some
 *   layer writers omit the marker); one zero block followed by a non-zero block is an error.
 * Divergence: 'g' global headers are applied to the entries that follow (POSIX and GNU tar), whereas Go
 * returns them as entries and containerd ignores them.
 *
 * The header rules live in TarHeaders (no I/O), which parseTar drives over a byte stream and the
 * native index pass (native-index.ts) over the header blocks the addon's tar walk finds.
 *
 * Not here: path normalization (paths.ts), whiteouts and TOC building (indexer.ts), decompression.
 */
import { StarlightError } from '../errors.js';
import type { ByteReader } from './bytes.js';
import { type LayerLimits, DEFAULT_LAYER_LIMITS, limitError } from './limits.js';

/** The limits parseTar enforces itself (the others are the indexer's). */
export type TarLimits = Pick<LayerLimits, 'maxPathBytes' | 'maxXattrBytes' | 'maxExtendedHeaderBytes'>;

export const BLOCK = 512;
/** Largest PAX or GNU long-name payload accepted, bytes (Go's archive/tar limit too). */
const MAX_META_SIZE = 1 << 20;

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarHeader {
  /** The raw name (long name / PAX path applied), not normalized. */
  name: string;
  type: TarEntryType;
  /** mode & 0o7777. */
  mode: number;
  uid: number;
  gid: number;
  /** Data size in bytes (0 for header-only types). */
  size: number;
  /** Seconds since the epoch; fractional from a PAX mtime. */
  mtime: number;
  /** Hardlink or symlink target, raw. '' otherwise. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** From SCHILY.xattr.* records (copied, safe to keep; values from 'g' headers are shared between entries: do not mutate). */
  xattrs?: Record<string, Uint8Array>;
  /** Byte offset of this entry's data in the tar stream. */
  offset: number;
  /** Byte offset of the entry's first header block (extended headers included). */
  headerOffset: number;
}

export interface TarBody {
  readonly size: number;
  /**
   * Streams the data to `fn` in pieces (subarrays valid only if copied or kept referenced; they are
   * never overwritten). Awaits `fn`'s promises. Call at most once; if never called, the parser skips.
   */
  read(fn: (piece: Buffer) => void | Promise<void>): Promise<void>;
}

export type EntryHandler = (header: TarHeader, body: TarBody) => void | Promise<void>;

const ZERO_BLOCK = Buffer.alloc(BLOCK);

function badTar(message: string, details: Record<string, unknown> = {}): StarlightError {
  return new StarlightError('SL_ERR_IMAGE_BAD_TAR', message, { details });
}

function cstring(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

/** Octal (space/NUL terminated) or GNU base-256 (high bit set, big-endian two's complement). */
function parseNumeric(b: Buffer, off: number, len: number, field: string, at: number): number {
  const first = b[off]!;
  if (first & 0x80) {
    const negative = (first & 0x40) !== 0;
    let v = 0;
    for (let i = 0; i < len; i++) {
      let byte = i === 0 ? first & 0x7f : b[off + i]!;
      if (negative) byte = (i === 0 ? ~first & 0x7f : ~byte) & 0xff;
      v = v * 256 + byte;
    }
    if (!Number.isSafeInteger(v)) throw badTar(`tar header at byte ${at}: ${field} does not fit in 53 bits`, { offset: at });
    return negative ? -(v + 1) : v;
  }
  let i = off;
  const end = off + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  for (; i < end; i++) {
    const c = b[i]!;
    if (c === 0x20 || c === 0) break;
    if (c < 0x30 || c > 0x37) throw badTar(`tar header at byte ${at}: ${field} is not an octal number`, { offset: at, field });
    v = v * 8 + (c - 0x30);
  }
  return v;
}

function verifyChecksum(b: Buffer, at: number): void {
  const stored = parseNumeric(b, 148, 8, 'checksum', at);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  // Some historic writers summed signed chars; both are accepted (as Go and GNU tar do).
  if (stored !== unsigned && stored !== signed) {
    throw badTar(`tar header at byte ${at} has a bad checksum (stored ${stored}, computed ${unsigned}): not a tar or corrupt`, {
      offset: at,
    });
  }
}

/** PAX keys that change an entry; a 'g' header keeps only these (the rest would be carried for nothing). */
function paxKeyMatters(key: string): boolean {
  return key === 'path' || key === 'linkpath' || key === 'size' || key === 'uid' || key === 'gid' || key === 'mtime' || key.startsWith('SCHILY.xattr.') || key.startsWith('GNU.sparse.');
}

/** Key + value bytes of a PAX map (what a 'g' header keeps in force). */
function paxBytes(m: Map<string, Buffer>): number {
  let n = 0;
  for (const [k, v] of m) n += k.length + v.length;
  return n;
}

/** PAX records "<len> <key>=<value>\n"; values kept as bytes (xattr values are binary). */
function parsePax(data: Buffer, into: Map<string, Buffer>, at: number): void {
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad with NULs
    const sp = data.indexOf(0x20, pos);
    const len = sp < 0 ? NaN : Number(data.toString('latin1', pos, sp));
    if (!Number.isInteger(len) || len <= 0 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw badTar(`PAX header at byte ${at} has a malformed record`, { offset: at });
    }
    const eq = data.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= pos + len) throw badTar(`PAX header at byte ${at} has a record without '='`, { offset: at });
    const key = data.toString('utf8', sp + 1, eq);
    into.set(key, Buffer.from(data.subarray(eq + 1, pos + len - 1)));
    pos += len;
  }
}

function paxNumber(v: Buffer, key: string, at: number, fractional = false): number {
  const s = v.toString('latin1');
  const n = fractional ? Number(s) : /^-?\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isFinite(n)) throw badTar(`PAX ${key}=${JSON.stringify(s)} at byte ${at} is not a number`, { offset: at, key });
  return n;
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

/** What follows a header block (TarHeaders.block). */
export type HeaderStep =
  /** An extended header ('x', 'g', 'L', 'K'): `size` payload bytes follow (then padding); hand them to meta(). */
  | { kind: 'meta'; size: number }
  /** A volume label: `size` bytes (then padding) to skip. */
  | { kind: 'skip'; size: number }
  /** A real entry, extended headers folded in; `dataSize` bytes follow (then padding), also for 'D' (skipped). */
  | { kind: 'entry'; header: TarHeader; dataSize: number };

/** True for the all-zero block of the end-of-archive marker. */
function isZeroBlock(blk: Buffer): boolean {
  return blk[148] === 0 && blk.equals(ZERO_BLOCK);
}

/**
 * The header side of a tar reader, without I/O: fed each non-zero header block and each extended
 * header's payload in archive order, it says what follows and yields the entries. parseTar drives it
 * over a byte stream; the native index pass (native-index.ts) over the header blocks and payloads the
 * addon's tar walk hands back, so both read headers by the same rules. Throws SL_ERR_IMAGE_BAD_TAR,
 * SL_ERR_IMAGE_UNSUPPORTED and SL_ERR_IMAGE_LIMIT as parseTar documents.
 */
export class TarHeaders {
  private readonly global = new Map<string, Buffer>();
  private local = new Map<string, Buffer>();
  private longName: string | undefined;
  private longLink: string | undefined;
  private headerOffset = -1;
  /** Bytes of 'x'/'L'/'K' headers read since the last entry (many small ones must not pile up). */
  private pendingMeta = 0;
  /** Shared by every entry while the 'g' headers in force say so (copying per entry multiplied them). */
  private globalXattrs: [string, Uint8Array][] = [];
  /** The extended header whose payload meta() takes next. */
  private metaFlag = '';

  constructor(private readonly limits: TarLimits = DEFAULT_LAYER_LIMITS) {}

  /** A non-zero header block at tar offset `at` (check isZeroBlock first). */
  block(blk: Buffer, at: number): HeaderStep {
    if (this.headerOffset < 0) this.headerOffset = at;
    verifyChecksum(blk, at);
    const flag = String.fromCharCode(blk[156]!);
    const size = parseNumeric(blk, 124, 12, 'size', at);
    if (size < 0) throw badTar(`tar header at byte ${at} has a negative size`, { offset: at });

    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > MAX_META_SIZE) throw badTar(`extended header at byte ${at} is ${size} bytes (max ${MAX_META_SIZE})`, { offset: at });
      if (flag !== 'g') {
        this.pendingMeta += size;
        if (this.pendingMeta > this.limits.maxExtendedHeaderBytes) {
          throw limitError('maxExtendedHeaderBytes', this.limits.maxExtendedHeaderBytes, `tar has ${this.pendingMeta} bytes of extended headers before one entry (at byte ${at})`, { offset: at });
        }
      }
      this.metaFlag = flag;
      return { kind: 'meta', size };
    }

    const magic = blk.toString('latin1', 257, 263);
    let name = cstring(blk, 0, 100);
    if (magic === 'ustar\0') {
      const prefix = cstring(blk, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    let type = TYPES[flag];
    if (flag === 'D') type = 'dir'; // GNU dumpdir: a directory whose data lists names; skipped
    if (!type) {
      if (flag === 'V') {
        this.headerOffset = -1;
        return { kind: 'skip', size };
      }
      throw new StarlightError(
        'SL_ERR_IMAGE_UNSUPPORTED',
        `tar entry ${JSON.stringify(name)} at byte ${at} has unsupported type ${JSON.stringify(flag)} (sparse/multi-volume/vendor)`,
        { details: { offset: at, typeflag: flag, path: name } },
      );
    }
    if (flag === '\0' && name.endsWith('/')) type = 'dir';

    const local = this.local;
    const pax = this.global.size ? new Map([...this.global, ...local]) : local;
    const h: TarHeader = {
      name: this.longName ?? name,
      type,
      mode: parseNumeric(blk, 100, 8, 'mode', at) & 0o7777,
      uid: parseNumeric(blk, 108, 8, 'uid', at),
      gid: parseNumeric(blk, 116, 8, 'gid', at),
      size: 0,
      mtime: parseNumeric(blk, 136, 12, 'mtime', at),
      linkname: this.longLink ?? cstring(blk, 157, 100),
      devmajor: type === 'char' || type === 'block' ? parseNumeric(blk, 329, 8, 'devmajor', at) : 0,
      devminor: type === 'char' || type === 'block' ? parseNumeric(blk, 337, 8, 'devminor', at) : 0,
      offset: at + BLOCK,
      headerOffset: this.headerOffset,
    };
    let dataSize = size;
    for (const [key, v] of pax) {
      if (v.length === 0) continue; // an empty value removes a (global) record
      if (key === 'path') h.name = v.toString('utf8');
      else if (key === 'linkpath') h.linkname = v.toString('utf8');
      else if (key === 'size') dataSize = paxNumber(v, key, at);
      else if (key === 'uid') h.uid = paxNumber(v, key, at);
      else if (key === 'gid') h.gid = paxNumber(v, key, at);
      else if (key === 'mtime') h.mtime = paxNumber(v, key, at, true);
      else if (key.startsWith('SCHILY.xattr.')) {
        // Global values are shared, not copied per entry.
        if (!local.has(key)) continue;
        (h.xattrs ??= {})[key.slice(13)] = new Uint8Array(v);
      }
      else if (key.startsWith('GNU.sparse.')) {
        throw new StarlightError('SL_ERR_IMAGE_UNSUPPORTED', `tar entry ${JSON.stringify(h.name)} is a GNU sparse file`, {
          details: { offset: at, path: h.name },
        });
      }
    }
    for (const [k, v] of this.globalXattrs) if (!local.has(`SCHILY.xattr.${k}`)) (h.xattrs ??= {})[k] = v;
    checkEntryLimits(h, this.limits, at);
    if (dataSize < 0) throw badTar(`tar entry ${JSON.stringify(h.name.slice(0, 200))} at byte ${at} has a negative PAX size`, { offset: at });
    this.local = new Map();
    this.longName = undefined;
    this.longLink = undefined;
    this.headerOffset = -1;
    this.pendingMeta = 0;

    // Header-only types carry no data blocks whatever the size field says (Go archive/tar rule).
    if (type !== 'file' && flag !== 'D') dataSize = 0;
    h.size = flag === 'D' ? 0 : dataSize;
    return { kind: 'entry', header: h, dataSize };
  }

  /** The payload of the extended header block() just announced ('meta'), read whole; `at` is that header's offset. */
  meta(data: Buffer, at: number): void {
    const flag = this.metaFlag;
    this.metaFlag = '';
    if (flag === 'x') parsePax(data, this.local, at);
    else if (flag === 'g') {
      const g = new Map<string, Buffer>();
      parsePax(data, g, at);
      for (const [k, v] of g) if (paxKeyMatters(k)) this.global.set(k, v);
      const inForce = paxBytes(this.global);
      if (inForce > this.limits.maxExtendedHeaderBytes) {
        throw limitError('maxExtendedHeaderBytes', this.limits.maxExtendedHeaderBytes, `tar global ('g') headers keep ${inForce} bytes of records in force (at byte ${at})`, { offset: at });
      }
      this.globalXattrs = [];
      for (const [k, v] of this.global) if (k.startsWith('SCHILY.xattr.') && v.length > 0) this.globalXattrs.push([k.slice(13), new Uint8Array(v)]);
    } else if (flag === 'L') this.longName = cstring(data, 0, data.length);
    else if (flag === 'K') this.longLink = cstring(data, 0, data.length);
    else throw new StarlightError('SL_ERR_INTERNAL', `tar extended header payload at byte ${at} without its header`);
  }

  /** The input ended on a block boundary: an error if extended headers announced an entry that never came. */
  end(): void {
    if (this.headerOffset >= 0) throw badTar(`tar archive ends after an extended header at byte ${this.headerOffset}`);
  }
}

/**
 * Reads a whole tar from `reader`, calling `onEntry` once per real entry (extended headers folded in),
 * in archive order, awaiting it. Resolves after the end-of-archive marker (the rest of the input is
 * drained so a tap sees every byte). Rejects with SL_ERR_IMAGE_BAD_TAR (corrupt, truncated) or
 * SL_ERR_IMAGE_UNSUPPORTED (sparse files, multi-volume, unknown entry types).
 */
export async function parseTar(reader: ByteReader, onEntry: EntryHandler, limits: TarLimits = DEFAULT_LAYER_LIMITS): Promise<void> {
  const headers = new TarHeaders(limits);
  for (;;) {
    const at = reader.position;
    const blk = await reader.readExact(BLOCK, 'a header');
    if (!blk) return headers.end();
    if (isZeroBlock(blk)) {
      const next = await reader.readExact(BLOCK, 'the end-of-archive marker');
      if (next && !next.equals(ZERO_BLOCK)) throw badTar(`tar archive has a lone zero block at byte ${at}`, { offset: at });
      await reader.drain();
      return;
    }
    const step = headers.block(blk, at);
    if (step.kind === 'meta') {
      const data = (await reader.readExact(step.size, 'an extended header')) ?? Buffer.alloc(0);
      if (data.length < step.size) throw badTar(`tar archive is truncated inside an extended header at byte ${at}`);
      await reader.forEach(pad(step.size), 'padding');
      headers.meta(data, at);
      continue;
    }
    if (step.kind === 'skip') {
      await reader.forEach(step.size + pad(step.size), 'a volume label');
      continue;
    }
    const { header: h, dataSize } = step;
    let consumed = false;
    const what = `the data of ${JSON.stringify(h.name)}`;
    const body: TarBody = {
      size: h.size,
      read: (fn) => {
        if (consumed) throw new StarlightError('SL_ERR_INTERNAL', `tar body of ${h.name} read twice`);
        consumed = true;
        return reader.forEach(dataSize, what, fn);
      },
    };
    await onEntry(h, body);
    if (!consumed) await reader.forEach(dataSize, what);
    await reader.forEach(pad(dataSize), what);
  }
}

/** Path, link target and xattr sizes of one entry against `limits`. */
function checkEntryLimits(h: TarHeader, limits: TarLimits, at: number): void {
  const nameBytes = Buffer.byteLength(h.name);
  const linkBytes = Buffer.byteLength(h.linkname);
  if (nameBytes > limits.maxPathBytes || linkBytes > limits.maxPathBytes) {
    const what = nameBytes > limits.maxPathBytes ? `name of ${nameBytes} bytes` : `link target of ${linkBytes} bytes`;
    throw limitError('maxPathBytes', limits.maxPathBytes, `tar entry at byte ${at} has a ${what}`, { offset: at, path: h.name.slice(0, 200) });
  }
  if (h.xattrs) {
    let n = 0;
    for (const [k, v] of Object.entries(h.xattrs)) n += k.length + v.length;
    if (n > limits.maxXattrBytes) {
      throw limitError('maxXattrBytes', limits.maxXattrBytes, `tar entry ${JSON.stringify(h.name.slice(0, 200))} at byte ${at} has ${n} bytes of xattrs`, { offset: at, path: h.name.slice(0, 200) });
    }
  }
}

/** Bytes of zero padding after `size` bytes of data. */
export function pad(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}
