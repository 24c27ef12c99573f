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
const TYPE_BITS: Record<string, number> = {
  reg: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

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

/** One directory entry while the table is built. */
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

/**
 * Builds the table. Throws SL_ERR_FS_BAD_TREE for a tree that breaks MergedTree's contract (no root,
 * missing parent, hardlink to a missing path or to a directory, duplicate path).
 *
 * Runs on the daemon's event loop right after a pull (the warm view), while containerd is asked for
 * the container: per-entry work is kept to a few typed-array stores (issue 19).
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
  let n = 0;
  const inoByPath = new Map<string, number>();
  const owners: TocEntry[] = []; // index ino-1: the entry that defines the inode
  for (const e of tree.entries) {
    if (e.type === 'hardlink' || e.type === 'whiteout') continue;
    if (inoByPath.has(e.path)) throw badTree('duplicate path', e.path);
    if (TYPE_BITS[e.type] === undefined) throw badTree(`unknown entry type ${e.type}`, e.path);
    owners.push(e);
    inoByPath.set(e.path, owners.length);
    if (++n % STEP_ENTRIES === 0) yield;
  }
  if (owners.length === 0 || owners[0].path !== '' || owners[0].type !== 'dir') throw badTree('the root directory must come first', '');
  const count = owners.length;
  const nlink = new Uint32Array(count + 1).fill(1);
  const parents = new Uint32Array(count + 1);
  parents[1] = 1;
  const children: (Child[] | undefined)[] = new Array(count + 1);
  let direntCount = 0;
  const add = (path: string, ino: number): number => {
    const slash = path.lastIndexOf('/');
    const parent = inoByPath.get(slash < 0 ? '' : path.slice(0, slash));
    if (parent === undefined || owners[parent - 1].type !== 'dir') throw badTree('parent directory missing', path);
    const kid = { name: path.slice(slash + 1), ino };
    const list = children[parent];
    if (list) list.push(kid);
    else children[parent] = [kid];
    direntCount++;
    if (owners[ino - 1].type === 'dir') nlink[parent]++;
    return parent;
  };
  for (const e of tree.entries) {
    if (++n % STEP_ENTRIES === 0) yield;
    if (e.path === '' || e.type === 'whiteout') continue;
    if (e.type !== 'hardlink') {
      const ino = inoByPath.get(e.path)!;
      parents[ino] = add(e.path, ino);
      continue;
    }
    const target = e.linkname === undefined ? undefined : inoByPath.get(e.linkname);
    if (target === undefined || owners[target - 1].type === 'dir') throw badTree(`hardlink target ${e.linkname ?? '(none)'} missing or a directory`, e.path);
    if (inoByPath.has(e.path)) throw badTree('duplicate path', e.path);
    inoByPath.set(e.path, target);
    nlink[target]++;
    add(e.path, target);
  }
  for (let ino = 1; ino <= count; ino++) if (owners[ino - 1].type === 'dir') nlink[ino] += 1; // "." (+ parent's entry = 2)

  const strings = new StringTable();
  let xattrCount = 0;
  for (const e of owners) if (e.xattrs) xattrCount += Object.keys(e.xattrs).length;
  // Little-endian views (the layout is LE; DataView stores are explicit and inlined by V8).
  const inodes = Buffer.alloc(count * INODE_RECORD_SIZE);
  const dirents = Buffer.alloc(direntCount * DIRENT_RECORD_SIZE);
  const xattrs = Buffer.alloc(xattrCount * XATTR_RECORD_SIZE);
  const iv = new DataView(inodes.buffer, inodes.byteOffset, inodes.byteLength);
  const dv = new DataView(dirents.buffer, dirents.byteOffset, dirents.byteLength);
  const xv = new DataView(xattrs.buffer, xattrs.byteOffset, xattrs.byteLength);
  const digests: (string | undefined)[] = new Array(count + 1);
  const paths: string[] = new Array(count + 1).fill('');
  const sizes: number[] = new Array(count + 1).fill(0);
  const absent = new Map<string, number[]>();
  let d = 0;
  let x = 0;
  for (let ino = 1; ino <= count; ino++) {
    if (++n % STEP_ENTRIES === 0) yield;
    const e = owners[ino - 1];
    const r = (ino - 1) * INODE_RECORD_SIZE;
    paths[ino] = e.path;
    let size = 0;
    if (e.type === 'reg') {
      if (e.digest === undefined) throw badTree('regular file without digest', e.path);
      size = e.size;
      digests[ino] = e.digest;
      sizes[ino] = e.size;
      const where = size === 0 ? null : locate(e.digest);
      if (where !== null) {
        iv.setUint32(r + 72, strings.addString(where), true);
        iv.setUint32(r + 76, strings.lastLength, true);
      } else if (size > 0) {
        const list = absent.get(e.digest);
        if (list) list.push(ino);
        else absent.set(e.digest, [ino]);
      }
    } else if (e.type === 'symlink') {
      iv.setUint32(r + 56, strings.addString(e.linkname ?? ''), true);
      size = strings.lastLength;
      iv.setUint32(r + 60, size, true);
    }
    // A float64 of ~1.7e9 s resolves ~0.24 µs, so nanoseconds are not real: round to microseconds
    // (what PAX mtimes written by most tools carry) so a µs-precise mtime shows exactly.
    let mtimeSec = Math.floor(e.mtime);
    let micros = Math.round((e.mtime - mtimeSec) * 1e6);
    if (micros >= 1_000_000) {
      mtimeSec += 1;
      micros -= 1_000_000;
    }
    iv.setUint32(r, (TYPE_BITS[e.type] | (e.mode & 0o7777)) >>> 0, true);
    iv.setUint32(r + 4, e.uid >>> 0, true);
    iv.setUint32(r + 8, e.gid >>> 0, true);
    iv.setUint32(r + 12, nlink[ino], true);
    iv.setUint32(r + 16, (e.devmajor ?? 0) >>> 0, true);
    iv.setUint32(r + 20, (e.devminor ?? 0) >>> 0, true);
    iv.setFloat64(r + 24, size, true);
    iv.setFloat64(r + 32, mtimeSec, true);
    iv.setUint32(r + 40, micros * 1000, true);
    iv.setUint32(r + 44, parents[ino], true);
    const kids = sortChildren(children[ino] ?? []);
    iv.setUint32(r + 48, d, true);
    iv.setUint32(r + 52, kids.length, true);
    for (let i = 0; i < kids.length; i++) {
      if (i > 0 && kids[i - 1].name === kids[i].name) throw badTree('duplicate name', e.path);
      const o = d * DIRENT_RECORD_SIZE;
      dv.setUint32(o, strings.addString(kids[i].name), true);
      dv.setUint32(o + 4, strings.lastLength, true);
      dv.setUint32(o + 8, kids[i].ino, true);
      d++;
    }
    iv.setUint32(r + 64, x, true);
    if (e.xattrs) {
      let n = 0;
      for (const [name, value] of Object.entries(e.xattrs)) {
        const o = x * XATTR_RECORD_SIZE;
        xv.setUint32(o, strings.addString(name), true);
        xv.setUint32(o + 4, strings.lastLength, true);
        xv.setUint32(o + 8, strings.add(value), true);
        xv.setUint32(o + 12, value.byteLength, true);
        x++;
        n++;
      }
      iv.setUint32(r + 68, n, true);
    }
  }
  return { buffers: { inodes, dirents, xattrs, strings: strings.finish() }, count, digests, paths, sizes, absent };
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
