/**
 * MergedTree → inode table: the compact encoding the native addon decodes once at mount
 * (native/inode_table.cc), plus the per-inode facts the view keeps in TypeScript (digest, path).
 *
 * Pure: no I/O. Presence of content is asked through the `locate` callback (ContentProvider.locate).
 * Not here: mounting (fuse-views.ts), loading the addon (native.ts).
 *
 * Inode table layout (all little-endian; keep in sync with native/inode_table.h):
 * - `inodes`: one 80-byte record per inode, inode number = index + 1 (1 is the root):
 *     0 u32 st_mode (type | permission bits)   4 u32 uid        8 u32 gid       12 u32 nlink
 *    16 u32 rdev major                         20 u32 rdev minor
 *    24 f64 size (bytes; symlinks: target length)                32 f64 mtime seconds (integer)
 *    40 u32 mtime nanoseconds                  44 u32 parent inode (root: 1)
 *    48 u32 first dirent index                 52 u32 dirent count (directories only)
 *    56 u32 symlink target offset              60 u32 symlink target length (into `strings`)
 *    64 u32 first xattr index                  68 u32 xattr count
 *    72 u32 content path offset                76 u32 content path length (0: content absent)
 * - `dirents`: 12-byte records {u32 name offset, u32 name length, u32 inode}; each directory's range is
 *   sorted by name bytes (the addon binary-searches it and refuses unsorted input).
 * - `xattrs`: 16-byte records {u32 name offset, u32 name length, u32 value offset, u32 value length}.
 * - `strings`: every name, link target, xattr name/value and content path, as raw bytes.
 * Hardlinks share their target's inode (nlink counts the names); directories have nlink 2 + subdirs.
 */
import { StarlightError } from '../../errors.js';
import { runAtOnce, runSliced } from '../../event-loop.js';
import type { MergedTree, TocEntry } from '../../layers/toc.js';

/** Record sizes in bytes; the addon exports the same numbers and native.ts checks they match. */
export const INODE_RECORD_SIZE = 80;
export const DIRENT_RECORD_SIZE = 12;
export const XATTR_RECORD_SIZE = 16;

/** st_mode type bits (Linux). */
export const S_IFMT = 0o170000;

/** The buffers handed to the addon's mount(). */
export interface InodeTableBuffers {
  inodes: Buffer;
  dirents: Buffer;
  xattrs: Buffer;
  strings: Buffer;
}

export interface InodeTable {
  buffers: InodeTableBuffers;
  /** Number of inodes (inode numbers are 1..count). */
  count: number;
  /** Index = inode number: content digest of regular files (undefined for others and index 0). */
  digests: (string | undefined)[];
  /** Index = inode number: the first path naming that inode ('' is the root). */
  paths: string[];
  /** Index = inode number: content size in bytes of regular files. */
  sizes: number[];
  /** Digest → inodes whose content was absent when the table was built. */
  absent: Map<string, number[]>;
}

/** Decoded inode record (tests and debugging). */
export interface InodeRecord {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  parent: number;
  children: { name: string; ino: number }[];
  link: string;
  xattrs: Record<string, Buffer>;
  contentPath: string;
}

function badTree(message: string, path: string): StarlightError {
  return new StarlightError('SL_ERR_FS_BAD_TREE', `cannot build the view's inode table: ${message}`, { details: { path } });
}

/** Appends byte strings to one growing buffer, returning their offset (length: the caller's). */
class StringTable {
  private buf = Buffer.allocUnsafe(1 << 16);
  private size = 0;
  private reserve(n: number): void {
    if (this.size + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.size + n));
    this.buf.copy(next, 0, 0, this.size);
    this.buf = next;
  }
  add(bytes: Uint8Array): number {
    this.reserve(bytes.byteLength);
    this.buf.set(bytes, this.size);
    this.size += bytes.byteLength;
    return this.size - bytes.byteLength;
  }
  /** Appends `s` (UTF-8); its byte length is returned by lastLength. */
  addString(s: string): number {
    // UTF-8 never takes more than 3 bytes per UTF-16 unit: reserve that, write, count what was written.
    this.reserve(s.length * 3);
    const len = this.buf.write(s, this.size, 'utf8');
    this.lastLength = len;
    this.size += len;
    return this.size - len;
  }
  lastLength = 0;
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.size));
  }
}

const SURROGATE = /[\uD800-\uDFFF]/;

/** One directory entry of a directory whose names came out of order (sortChildren). */
interface Child {
  name: string;
  ino: number;
}

/** Plain JS string order, which equals UTF-8 byte order when neither name holds a surrogate. */
function compareCodeUnits(a: Child, b: Child): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** UTF-8 byte order (what the addon binary-searches), for a directory with a name outside the BMP. */
function compareUtf8(a: Child, b: Child): number {
  return Buffer.compare(Buffer.from(a.name, 'utf8'), Buffer.from(b.name, 'utf8'));
}

/** Sorts one directory's entries in UTF-8 byte order; the surrogate test runs once per name, not per comparison. */
function sortChildren(kids: Child[]): Child[] {
  if (kids.length < 2) return kids;
  let wide = false;
  for (const k of kids) if (SURROGATE.test(k.name)) wide = true;
  return kids.sort(wide ? compareUtf8 : compareCodeUnits);
}

/** Entry kinds while the table is built; hardlinks and whiteouts own no inode. */
const KIND = new Map<string, number>([['reg', 1], ['dir', 2], ['symlink', 3], ['char', 4], ['block', 5], ['fifo', 6], ['hardlink', 7], ['whiteout', 8]]);
const KIND_REG = 1;
const KIND_DIR = 2;
const KIND_SYMLINK = 3;
const KIND_CHAR = 4;
const KIND_BLOCK = 5;
const KIND_HARDLINK = 7;
const KIND_WHITEOUT = 8;
/** st_mode type bits (Linux) by kind: reg, dir, symlink, char, block, fifo. */
const KIND_BITS = [0, 0o100000, 0o040000, 0o120000, 0o020000, 0o060000, 0o010000];

/**
 * Builds the table. Throws SL_ERR_FS_BAD_TREE for a tree that breaks MergedTree's contract (no root,
 * missing parent, hardlink to a missing path or to a directory, duplicate path).
 *
 * Runs on the daemon's event loop right after a pull (the warm view), while containerd is asked for
 * the container, and the container's start waits for it (issue 19). TocEntry objects come in many
 * shapes (optional fields), so every property read is a megamorphic lookup: each field is read once
 * per entry, and the rest works on typed arrays. Directory entries are laid out without an object per
 * name; a merged tree comes in path order, so each directory's names arrive sorted and are only
 * checked (sorted here when they are not).
 */
export function buildInodeTable(tree: MergedTree, locate: (digest: string) => string | null): InodeTable {
  return runAtOnce(inodeTableSteps(tree, locate));
}

/**
 * buildInodeTable() in slices with the event loop running between them (src/event-loop.ts): a pull
 * builds its view's table while containerd's answers come in (issue 19). Same result; content is
 * located as the slices reach it.
 */
export function buildInodeTableSliced(tree: MergedTree, locate: (digest: string) => string | null): Promise<InodeTable> {
  return runSliced(inodeTableSteps(tree, locate), TABLE_SLICE_MS);
}

/**
 * Longest slice of the sliced build, ms. Short: one containerd answer takes several event-loop turns
 * (HTTP/2 frames, then the message), each waiting for a slice to end; with 20 ms slices the pull's
 * containerd calls took as long as the whole table (python-web, bench phases, issue 19).
 */
const TABLE_SLICE_MS = 3;

/** Entries handled between two pause points of inodeTableSteps (~1-2 ms on a loaded 2-core host). */
const STEP_ENTRIES = 128;

function* inodeTableSteps(tree: MergedTree, locate: (digest: string) => string | null): Generator<void, InodeTable, undefined> {
  const b = new TableBuilder(tree.entries, locate);
  const total = tree.entries.length;
  for (let i = 0; i < total; i += STEP_ENTRIES) {
    b.scan(i, Math.min(total, i + STEP_ENTRIES));
    yield;
  }
  b.scanned();
  for (let i = 0; i < total; i += STEP_ENTRIES) {
    b.link(i, Math.min(total, i + STEP_ENTRIES));
    yield;
  }
  b.linked();
  for (let ino = 1; ino <= b.count; ino += STEP_ENTRIES) {
    b.record(ino, Math.min(b.count + 1, ino + STEP_ENTRIES));
    yield;
  }
  return b.finish();
}

/**
 * The table's passes over a range of entries (or inodes) at a time; inodeTableSteps pauses between
 * ranges. Plain methods rather than one generator body: V8 optimizes them within the first build
 * (a daemon builds a table per pull, so the first builds are the ones that count).
 */
class TableBuilder {
  private readonly inoByPath = new Map<string, number>();
  /** Index ino-1: the entry that defines the inode. */
  private readonly owners: TocEntry[] = [];
  private readonly entryPath: string[];
  private readonly entryKind: Uint8Array;
  private readonly entryIno: Uint32Array;
  private readonly ownerKind: Uint8Array;
  /** Index ino: the path of the entry that defines the inode (index 0: ''); the table's `paths`. */
  private readonly ownerPath: string[] = [''];
  count = 0;
  // link(): each name's directory.
  private nlink = new Uint32Array(0);
  private parents = new Uint32Array(0);
  private readonly direntParent: Uint32Array;
  private readonly direntIno: Uint32Array;
  private readonly direntName: string[];
  private childCount = new Uint32Array(0);
  private direntCount = 0;
  private lastDir = '\0'; // no path equals it
  private lastDirIno = 0;
  // record(): the buffers.
  private firstChild = new Uint32Array(0);
  private order = new Uint32Array(0);
  private readonly strings = new StringTable();
  private xattrsOf: (Record<string, Uint8Array> | undefined)[] = [];
  private iv = new DataView(new ArrayBuffer(0));
  private dv = new DataView(new ArrayBuffer(0));
  private xv = new DataView(new ArrayBuffer(0));
  private buffers: Omit<InodeTableBuffers, 'strings'> = { inodes: Buffer.alloc(0), dirents: Buffer.alloc(0), xattrs: Buffer.alloc(0) };
  private digests: (string | undefined)[] = [];
  private sizes: number[] = [];
  private readonly absent = new Map<string, number[]>();
  private d = 0;
  private x = 0;

  constructor(
    private readonly entries: TocEntry[],
    private readonly locate: (digest: string) => string | null,
  ) {
    const total = entries.length;
    this.entryPath = new Array(total);
    this.entryKind = new Uint8Array(total);
    this.entryIno = new Uint32Array(total);
    this.ownerKind = new Uint8Array(total + 1);
    this.direntParent = new Uint32Array(total);
    this.direntIno = new Uint32Array(total);
    this.direntName = new Array(total);
  }

  /** Pass 1: each entry's type and path, read once; inode numbers for the entries that own one. */
  scan(from: number, to: number): void {
    const { entries, entryPath, entryKind, entryIno, ownerKind, ownerPath, inoByPath, owners } = this;
    for (let i = from; i < to; i++) {
      const e = entries[i];
      const path = e.path;
      const kind = KIND.get(e.type) ?? 0;
      entryPath[i] = path;
      entryKind[i] = kind;
      if (kind === KIND_HARDLINK || kind === KIND_WHITEOUT) continue;
      if (kind === 0) throw badTree(`unknown entry type ${e.type}`, path);
      if (inoByPath.has(path)) throw badTree('duplicate path', path);
      owners.push(e);
      const ino = owners.length;
      ownerKind[ino] = kind;
      ownerPath.push(path);
      entryIno[i] = ino;
      inoByPath.set(path, ino);
    }
  }

  scanned(): void {
    if (this.owners.length === 0 || this.entryPath[0] !== '' || this.ownerKind[1] !== KIND_DIR) throw badTree('the root directory must come first', '');
    const count = (this.count = this.owners.length);
    this.nlink = new Uint32Array(count + 1).fill(1);
    this.parents = new Uint32Array(count + 1);
    this.parents[1] = 1;
    this.childCount = new Uint32Array(count + 2);
  }

  /** Pass 2: each name's directory (siblings mostly come one after another: the last one is kept). */
  link(from: number, to: number): void {
    const { entries, entryPath, entryKind, entryIno, ownerKind, inoByPath, nlink, parents, direntParent, direntIno, direntName, childCount } = this;
    let n = this.direntCount;
    for (let i = from; i < to; i++) {
      const kind = entryKind[i];
      const path = entryPath[i];
      if (path === '' || kind === KIND_WHITEOUT) continue;
      let ino = entryIno[i];
      if (kind === KIND_HARDLINK) {
        const linkname = entries[i].linkname;
        const target = linkname === undefined ? undefined : inoByPath.get(linkname);
        if (target === undefined || ownerKind[target] === KIND_DIR) throw badTree(`hardlink target ${linkname ?? '(none)'} missing or a directory`, path);
        if (inoByPath.has(path)) throw badTree('duplicate path', path);
        inoByPath.set(path, target);
        nlink[target]++;
        ino = target;
      }
      const slash = path.lastIndexOf('/');
      const dirLen = slash < 0 ? 0 : slash;
      let parent: number | undefined;
      if (dirLen === this.lastDir.length && path.startsWith(this.lastDir)) parent = this.lastDirIno;
      else {
        const dirPath = path.slice(0, dirLen);
        parent = inoByPath.get(dirPath);
        if (parent === undefined || ownerKind[parent] !== KIND_DIR) throw badTree('parent directory missing', path);
        this.lastDir = dirPath;
        this.lastDirIno = parent;
      }
      direntParent[n] = parent;
      direntIno[n] = ino;
      direntName[n] = path.slice(slash + 1);
      n++;
      childCount[parent]++;
      if (kind === KIND_DIR) nlink[parent]++;
      if (kind !== KIND_HARDLINK) parents[ino] = parent;
    }
    this.direntCount = n;
  }

  /** After pass 2: directory link counts, each directory's names laid out together, the buffers. */
  linked(): void {
    const { count, ownerKind, nlink, childCount, direntCount, direntParent } = this;
    for (let ino = 1; ino <= count; ino++) if (ownerKind[ino] === KIND_DIR) nlink[ino] += 1; // "." (+ parent's entry = 2)
    // Each directory's names, contiguous and in tree order (a counting sort by directory, stable).
    const firstChild = (this.firstChild = new Uint32Array(count + 2));
    for (let ino = 1; ino <= count; ino++) firstChild[ino + 1] = firstChild[ino] + childCount[ino];
    const fill = firstChild.slice();
    const order = (this.order = new Uint32Array(direntCount));
    for (let k = 0; k < direntCount; k++) order[fill[direntParent[k]]++] = k;
    let xattrCount = 0;
    this.xattrsOf = new Array(count + 1);
    for (let ino = 1; ino <= count; ino++) {
      const xa = this.owners[ino - 1].xattrs;
      if (xa === undefined) continue;
      this.xattrsOf[ino] = xa;
      xattrCount += Object.keys(xa).length;
    }
    // Little-endian views (the layout is LE; DataView stores are explicit and inlined by V8).
    const inodes = Buffer.alloc(count * INODE_RECORD_SIZE);
    const dirents = Buffer.alloc(direntCount * DIRENT_RECORD_SIZE);
    const xattrs = Buffer.alloc(xattrCount * XATTR_RECORD_SIZE);
    this.buffers = { inodes, dirents, xattrs };
    this.iv = new DataView(inodes.buffer, inodes.byteOffset, inodes.byteLength);
    this.dv = new DataView(dirents.buffer, dirents.byteOffset, dirents.byteLength);
    this.xv = new DataView(xattrs.buffer, xattrs.byteOffset, xattrs.byteLength);
    this.digests = new Array(count + 1);
    this.sizes = new Array(count + 1).fill(0);
  }

  /** Pass 3: the records of inodes [from, to). Each entry's other fields are read once, and only those its type has. */
  record(from: number, to: number): void {
    const { owners, ownerKind, ownerPath, iv, strings, digests, sizes, absent, nlink, parents, childCount, firstChild } = this;
    for (let ino = from; ino < to; ino++) {
      const e = owners[ino - 1];
      const kind = ownerKind[ino];
      const r = (ino - 1) * INODE_RECORD_SIZE;
      const path = ownerPath[ino];
      let size = 0;
      let devmajor = 0;
      let devminor = 0;
      if (kind === KIND_REG) {
        const digest = e.digest;
        if (digest === undefined) throw badTree('regular file without digest', path);
        size = e.size;
        digests[ino] = digest;
        sizes[ino] = size;
        const where = size === 0 ? null : this.locate(digest);
        if (where !== null) {
          iv.setUint32(r + 72, strings.addString(where), true);
          iv.setUint32(r + 76, strings.lastLength, true);
        } else if (size > 0) {
          const list = absent.get(digest);
          if (list) list.push(ino);
          else absent.set(digest, [ino]);
        }
      } else if (kind === KIND_SYMLINK) {
        iv.setUint32(r + 56, strings.addString(e.linkname ?? ''), true);
        size = strings.lastLength;
        iv.setUint32(r + 60, size, true);
      } else if (kind === KIND_CHAR || kind === KIND_BLOCK) {
        devmajor = e.devmajor ?? 0;
        devminor = e.devminor ?? 0;
      }
      // A float64 of ~1.7e9 s resolves ~0.24 µs, so nanoseconds are not real: round to microseconds
      // (what PAX mtimes written by most tools carry) so a µs-precise mtime shows exactly.
      const mtime = e.mtime;
      let mtimeSec = Math.floor(mtime);
      let micros = Math.round((mtime - mtimeSec) * 1e6);
      if (micros >= 1_000_000) {
        mtimeSec += 1;
        micros -= 1_000_000;
      }
      iv.setUint32(r, (KIND_BITS[kind] | (e.mode & 0o7777)) >>> 0, true);
      iv.setUint32(r + 4, e.uid >>> 0, true);
      iv.setUint32(r + 8, e.gid >>> 0, true);
      iv.setUint32(r + 12, nlink[ino], true);
      iv.setUint32(r + 16, devmajor >>> 0, true);
      iv.setUint32(r + 20, devminor >>> 0, true);
      iv.setFloat64(r + 24, size, true);
      iv.setFloat64(r + 32, mtimeSec, true);
      iv.setUint32(r + 40, micros * 1000, true);
      iv.setUint32(r + 44, parents[ino], true);
      iv.setUint32(r + 48, this.d, true);
      iv.setUint32(r + 52, childCount[ino], true);
      if (childCount[ino] > 0) this.writeDirents(firstChild[ino], firstChild[ino + 1], path);
      iv.setUint32(r + 64, this.x, true);
      const xa = this.xattrsOf[ino];
      if (xa !== undefined) iv.setUint32(r + 68, this.writeXattrs(xa), true);
    }
  }

  finish(): InodeTable {
    const { count, digests, ownerPath, sizes, absent } = this;
    return { buffers: { ...this.buffers, strings: this.strings.finish() }, count, digests, paths: ownerPath, sizes, absent };
  }

  /** One directory's dirents (order[from..to) index the names), in UTF-8 byte order. */
  private writeDirents(from: number, to: number, dirPath: string): void {
    const { order, direntName, direntIno, dv, strings } = this;
    let sorted = true;
    let prev = '';
    for (let k = from; k < to; k++) {
      const name = direntName[order[k]];
      // Code-unit order is UTF-8 byte order unless a surrogate is involved: such a directory is sorted.
      if (SURROGATE.test(name) || (k > from && !(prev < name))) {
        sorted = false;
        break;
      }
      prev = name;
    }
    const kids: Child[] | undefined = sorted ? undefined : sortChildren(Array.from(order.subarray(from, to), (k) => ({ name: direntName[k], ino: direntIno[k] })));
    for (let i = 0; i < to - from; i++) {
      const name = kids ? kids[i].name : direntName[order[from + i]];
      const ino = kids ? kids[i].ino : direntIno[order[from + i]];
      if (kids && i > 0 && kids[i - 1].name === name) throw badTree('duplicate name', dirPath);
      const o = this.d * DIRENT_RECORD_SIZE;
      dv.setUint32(o, strings.addString(name), true);
      dv.setUint32(o + 4, strings.lastLength, true);
      dv.setUint32(o + 8, ino, true);
      this.d++;
    }
  }

  /** One inode's xattr records; returns their count. */
  private writeXattrs(xa: Record<string, Uint8Array>): number {
    const { xv, strings } = this;
    let k = 0;
    for (const [name, value] of Object.entries(xa)) {
      const o = this.x * XATTR_RECORD_SIZE;
      xv.setUint32(o, strings.addString(name), true);
      xv.setUint32(o + 4, strings.lastLength, true);
      xv.setUint32(o + 8, strings.add(value), true);
      xv.setUint32(o + 12, value.byteLength, true);
      this.x++;
      k++;
    }
    return k;
  }
}

/** Decodes one inode record back (the inverse of buildInodeTable, for tests and debugging). */
export function readInode(b: InodeTableBuffers, ino: number): InodeRecord {
  const r = (ino - 1) * INODE_RECORD_SIZE;
  const str = (off: number, len: number): Buffer => b.strings.subarray(off, off + len);
  const u = (o: number): number => b.inodes.readUInt32LE(r + o);
  const children: { name: string; ino: number }[] = [];
  for (let i = u(48); i < u(48) + u(52); i++) {
    const o = i * DIRENT_RECORD_SIZE;
    children.push({ name: str(b.dirents.readUInt32LE(o), b.dirents.readUInt32LE(o + 4)).toString('utf8'), ino: b.dirents.readUInt32LE(o + 8) });
  }
  const xattrs: Record<string, Buffer> = {};
  for (let i = u(64); i < u(64) + u(68); i++) {
    const o = i * XATTR_RECORD_SIZE;
    const name = str(b.xattrs.readUInt32LE(o), b.xattrs.readUInt32LE(o + 4)).toString('utf8');
    xattrs[name] = Buffer.from(str(b.xattrs.readUInt32LE(o + 8), b.xattrs.readUInt32LE(o + 12)));
  }
  return {
    mode: u(0), uid: u(4), gid: u(8), nlink: u(12), rdevMajor: u(16), rdevMinor: u(20),
    size: b.inodes.readDoubleLE(r + 24), mtimeSec: b.inodes.readDoubleLE(r + 32), mtimeNsec: u(40),
    parent: u(44), children, link: str(u(56), u(60)).toString('utf8'), xattrs,
    contentPath: str(u(72), u(76)).toString('utf8'),
  };
}
