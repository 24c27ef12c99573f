/**
 * A minimal ELF reader for startup prediction: which program loader (PT_INTERP) an executable names,
 * and which shared libraries it needs (DT_NEEDED) with its search paths (DT_RUNPATH, DT_RPATH).
 *
 * Contract: `readElf(read, size)` reads only through `read` (at most five ranges — header, program headers,
 * interp, dynamic section, string window — of at most ELF_MAX_RANGE_BYTES each; for a file of at
 * most PATH_SCAN_MAX_FILE_BYTES, before the dynamic section, its read-only data, ≤ PATH_SCAN_BYTES in
 * ELF_MAX_RANGE_BYTES pieces, forward) and NEVER throws on file contents: anything truncated, out of bounds,
 * inconsistent or simply not ELF gives `undefined` ("unknown"). 32- and 64-bit, little- and big-endian
 * headers are read; values past 2^53 are rejected. Errors of `read` itself (I/O) propagate.
 *
 * Layout read (System V gABI): e_ident → e_phoff/e_phentsize/e_phnum → program headers
 * (PT_LOAD maps virtual addresses to file offsets; PT_INTERP holds the loader path; PT_DYNAMIC the
 * dynamic section) → dynamic entries (DT_NEEDED/DT_RUNPATH/DT_RPATH are offsets into the string table
 * at virtual address DT_STRTAB, DT_STRSZ bytes) → the strings.
 *
 * Not here: resolving library names to files (library-path.ts), reading bytes (the caller's reader).
 */

/** Reads up to `length` bytes at `offset`; a shorter (or undefined) answer means the file ends there. */
export type RangeReader = (offset: number, length: number) => Promise<Uint8Array | undefined>;

export interface ElfInfo {
  bits: 32 | 64;
  bigEndian: boolean;
  /** e_type: 2 = ET_EXEC, 3 = ET_DYN (PIE executables and shared libraries). */
  type: number;
  /** e_machine: 62 = x86-64, 183 = AArch64, 3 = i386, … (picks the multiarch library directory). */
  machine: number;
  /** PT_INTERP: the program loader, e.g. '/lib64/ld-linux-x86-64.so.2'; absent = statically linked (or a library). */
  interp?: string;
  /** DT_NEEDED names in dynamic-section order. */
  needed: string[];
  /** DT_RUNPATH entries (split at ':'), unexpanded ($ORIGIN kept). */
  runpath: string[];
  /** DT_RPATH entries (split at ':'); the loader ignores RPATH when RUNPATH is present. */
  rpath: string[];
  /** DT_SONAME, if any. */
  soname?: string;
  /**
   * Absolute paths the object names in its read-only data (NUL-terminated strings such as
   * "/etc/pam.d", "/etc/login.defs", "/usr/share/postgresql/15"; a printf-style "%…" suffix cut off),
   * distinct, in file order, at most MAX_PATH_STRINGS. Files a program opens by its own compiled-in
   * path (issue 11). Absent when the file was not scanned (too large) or names none.
   */
  paths?: string[];
}

/** Bounds: a hostile file cannot make the reader allocate or loop beyond these. */
const ELF_MAX_PHNUM = 256;
const ELF_MAX_RANGE_BYTES = 1 << 20;
const ELF_MAX_NEEDED = 256;
/** Longest string read (a path or library name). */
const MAX_STRING = 4096;
/**
 * Path strings: scanned only in files up to this size (libnode, 47 MB, names the JS files node loads
 * at startup; the scan comes before the dynamic section, so a streaming decode still passes once).
 */
export const PATH_SCAN_MAX_FILE_BYTES = 64 * 1024 * 1024;
/** Path strings: read-only loaded bytes scanned per file, at most. */
const PATH_SCAN_BYTES = 16 * 1024 * 1024;
/** Path strings kept per file, and their longest length. */
const MAX_PATH_STRINGS = 512;
const MAX_PATH_STRING = 256;
/** A path string as programs compile them in: absolute, portable characters only. */
const PATH_STRING_RE = /^\/[A-Za-z0-9_.+@-]+(?:\/[A-Za-z0-9_.+@-]*)*\/?$/;
const SLASH = 0x2f;
const PF_X = 1;
const PF_W = 2;

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

/** True when `head` starts with the ELF magic. */
export function isElf(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
}

/** Bounds-checked integer reads of one file's byte order and class; undefined past the end. */
class Fields {
  private readonly v: DataView;
  constructor(
    buf: Uint8Array,
    private readonly le: boolean,
    private readonly is64: boolean,
  ) {
    this.v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  u16(o: number): number | undefined {
    return o >= 0 && o + 2 <= this.v.byteLength ? this.v.getUint16(o, this.le) : undefined;
  }
  u32(o: number): number | undefined {
    return o >= 0 && o + 4 <= this.v.byteLength ? this.v.getUint32(o, this.le) : undefined;
  }
  u64(o: number): number | undefined {
    if (o < 0 || o + 8 > this.v.byteLength) return undefined;
    const n = this.v.getBigUint64(o, this.le);
    return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : undefined;
  }
  /** A word of the file's class (Elf32_Addr/Off or Elf64_Addr/Off/Xword). */
  word(o: number): number | undefined {
    return this.is64 ? this.u64(o) : this.u32(o);
  }
  /** Signed d_tag (Elf64_Sxword / Elf32_Sword); tags we need are small and non-negative. */
  tag(o: number): number | undefined {
    if (!this.is64) {
      const x = this.u32(o);
      return x === undefined ? undefined : x | 0;
    }
    if (o < 0 || o + 8 > this.v.byteLength) return undefined;
    const n = this.v.getBigInt64(o, this.le);
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : undefined;
  }
}

interface Segment {
  type: number;
  /** p_flags (PF_X 1, PF_W 2, PF_R 4). */
  flags: number;
  offset: number;
  vaddr: number;
  filesz: number;
}

/** NUL-terminated string at `o` in `buf` (undefined when unterminated or out of bounds). */
function cString(buf: Uint8Array, o: number): string | undefined {
  if (o < 0 || o >= buf.length) return undefined;
  const end = buf.indexOf(0, o);
  if (end < 0 || end - o > MAX_STRING) return undefined;
  return Buffer.from(buf.buffer, buf.byteOffset + o, end - o).toString('latin1');
}

/** The file offset of virtual address `addr` through the PT_LOAD segments. */
function offsetOf(loads: readonly Segment[], addr: number): number | undefined {
  for (const s of loads) if (addr >= s.vaddr && addr < s.vaddr + s.filesz) return s.offset + (addr - s.vaddr);
  return undefined;
}

async function readExact(read: RangeReader, offset: number, length: number, size: number): Promise<Uint8Array | undefined> {
  if (length <= 0 || length > ELF_MAX_RANGE_BYTES || offset < 0 || offset + length > size) return undefined;
  const b = await read(offset, length);
  return b !== undefined && b.length >= length ? b.subarray(0, length) : undefined;
}

/**
 * Absolute path strings where .rodata lives, read forward in pieces (a string cut by a piece boundary
 * is joined): the read-only, non-executable PT_LOAD segments after the first (the first holds the
 * headers and dynamic symbols; text sits between), or — when the linker put .rodata with the code
 * (no separate read-only segment) — every non-writable one.
 */
async function pathStrings(read: RangeReader, size: number, segs: readonly Segment[]): Promise<string[]> {
  const out = new Set<string>();
  let budget = PATH_SCAN_BYTES;
  const loads = segs.filter((s) => s.type === PT_LOAD && (s.flags & PF_W) === 0 && s.filesz > 0).sort((a, b) => a.offset - b.offset);
  const data = loads.filter((s) => (s.flags & PF_X) === 0 && s.offset > 0);
  const ro = data.length > 0 ? data : loads;
  let done = 0; // file offset scanned up to (segments may overlap)
  for (const s of ro) {
    let at = Math.max(s.offset, done);
    const end = Math.min(s.offset + s.filesz, size);
    while (at < end && budget > 0 && out.size < MAX_PATH_STRINGS) {
      const n = Math.min(end - at, ELF_MAX_RANGE_BYTES, budget);
      const u = await readExact(read, at, n, size);
      if (u === undefined) return [...out];
      budget -= n;
      const b = Buffer.from(u.buffer, u.byteOffset, u.length);
      let next = at + n;
      // Strings are NUL-terminated and, in .rodata, NUL-preceded: find "\0/" natively, not per byte,
      // by its '/' (memchr; a search led by the NUL stopped at every one of a binary's many NULs).
      for (let i = 0; out.size < MAX_PATH_STRINGS; ) {
        const k = nulSlash(b, i);
        if (k < 0) break;
        const z = b.indexOf(0, k + 1);
        if (z < 0) {
          if (next < end && n - k <= MAX_PATH_STRING + 1 && k > 0) next = at + k; // cut by the piece: read again from its NUL
          break;
        }
        if (z - k - 1 <= MAX_PATH_STRING) {
          const p = b.toString('latin1', k + 1, z).split('%')[0]!;
          if (PATH_STRING_RE.test(p)) out.add(p);
        }
        i = z;
      }
      at = next;
    }
    done = Math.max(done, at);
  }
  return [...out];
}

/** Index of the first "\0/" at or after `from` in `b` (of its NUL), or -1. */
function nulSlash(b: Buffer, from: number): number {
  for (let j = b.indexOf(SLASH, from + 1); j >= 0; j = b.indexOf(SLASH, j + 1)) if (b[j - 1] === 0) return j - 1;
  return -1;
}

/** Parses an ELF file of `size` bytes through `read` (see the file header); undefined = not ELF or unreadable. */
export async function readElf(read: RangeReader, size: number): Promise<ElfInfo | undefined> {
  if (!Number.isSafeInteger(size) || size < 52) return undefined;
  const ident = await readExact(read, 0, Math.min(64, size), size);
  if (ident === undefined || !isElf(ident)) return undefined;
  const cls = ident[4];
  const data = ident[5];
  if ((cls !== 1 && cls !== 2) || (data !== 1 && data !== 2)) return undefined;
  const is64 = cls === 2;
  const le = data === 1;
  const h = new Fields(ident, le, is64);
  const type = h.u16(16);
  const machine = h.u16(18);
  const phoff = h.word(is64 ? 32 : 28);
  const phentsize = h.u16(is64 ? 54 : 42);
  const phnum = h.u16(is64 ? 56 : 44);
  if (type === undefined || machine === undefined || phoff === undefined || phentsize === undefined || phnum === undefined) return undefined;
  const info: ElfInfo = { bits: is64 ? 64 : 32, bigEndian: !le, type, machine, needed: [], runpath: [], rpath: [] };
  const minEnt = is64 ? 56 : 32;
  if (phnum === 0) return info;
  if (phnum > ELF_MAX_PHNUM || phentsize < minEnt) return undefined;
  const ph = await readExact(read, phoff, phnum * phentsize, size);
  if (ph === undefined) return undefined;
  const p = new Fields(ph, le, is64);
  const segs: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const b = i * phentsize;
    const t = p.u32(b);
    const offset = p.word(b + (is64 ? 8 : 4));
    const vaddr = p.word(b + (is64 ? 16 : 8));
    const filesz = p.word(b + (is64 ? 32 : 16));
    const flags = p.u32(b + (is64 ? 4 : 24));
    if (t === undefined || offset === undefined || vaddr === undefined || filesz === undefined || flags === undefined) return undefined;
    segs.push({ type: t, flags, offset, vaddr, filesz });
  }
  const interp = segs.find((s) => s.type === PT_INTERP);
  if (interp !== undefined) {
    const ib = await readExact(read, interp.offset, Math.min(interp.filesz, MAX_STRING), size);
    // The loader path is NUL-terminated within the segment; a missing NUL ends it at the segment end.
    const s = ib === undefined ? undefined : Buffer.from(ib).toString('latin1').split('\0')[0]!;
    if (s !== undefined && s !== '') info.interp = s;
  }
  // Before the dynamic section: it lies behind the read-only data, so a forward decoder passes once.
  if (size <= PATH_SCAN_MAX_FILE_BYTES) {
    const paths = await pathStrings(read, size, segs);
    if (paths.length > 0) info.paths = paths;
  }
  const dyn = segs.find((s) => s.type === PT_DYNAMIC);
  if (dyn === undefined) return info;
  const entSize = is64 ? 16 : 8;
  const db = await readExact(read, dyn.offset, Math.min(dyn.filesz - (dyn.filesz % entSize), ELF_MAX_RANGE_BYTES - (ELF_MAX_RANGE_BYTES % entSize)), size);
  if (db === undefined) return info;
  const d = new Fields(db, le, is64);
  const strOffs: { tag: number; off: number }[] = [];
  let strtab: number | undefined;
  let strsz: number | undefined;
  for (let o = 0; o + entSize <= db.length; o += entSize) {
    const tag = d.tag(o);
    const val = d.word(o + (is64 ? 8 : 4));
    if (tag === undefined || val === undefined || tag === DT_NULL) break;
    if (tag === DT_STRTAB) strtab = val;
    else if (tag === DT_STRSZ) strsz = val;
    else if ((tag === DT_NEEDED && strOffs.length < ELF_MAX_NEEDED) || tag === DT_RUNPATH || tag === DT_RPATH || tag === DT_SONAME) {
      strOffs.push({ tag, off: val });
    }
  }
  if (strtab === undefined || strsz === undefined || strOffs.length === 0) return info;
  const loads = segs.filter((s) => s.type === PT_LOAD);
  const strFile = offsetOf(loads, strtab);
  if (strFile === undefined) return info;
  // One window covering every wanted string (they are usually close together at the table's start).
  const lo = Math.min(...strOffs.map((s) => s.off));
  const hi = Math.min(strsz, Math.max(...strOffs.map((s) => s.off)) + MAX_STRING, lo + ELF_MAX_RANGE_BYTES);
  if (lo >= strsz) return info;
  const win = await readExact(read, strFile + lo, Math.min(hi - lo, size - (strFile + lo)), size);
  if (win === undefined) return info;
  const split = (s: string): string[] => s.split(':').filter((x) => x !== '');
  for (const { tag, off } of strOffs) {
    const s = cString(win, off - lo);
    if (s === undefined || s === '') continue;
    if (tag === DT_NEEDED) info.needed.push(s);
    else if (tag === DT_RUNPATH) info.runpath.push(...split(s));
    else if (tag === DT_RPATH) info.rpath.push(...split(s));
    else info.soname = s;
  }
  return info;
}
