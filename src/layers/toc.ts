/**
 * The per-layer file table (TOC) and the merged tree: the data model every other part reads.
 *
 * A LayerToc lists every entry of one layer tar in tar order (later duplicates already resolved:
 * last wins, as when extracting), with whiteouts kept as entries so a merge can apply them. A
 * MergedTree is the flattened view of a layer chain (overlay semantics applied), which the worker
 * mounts and `starlight image toc --merged` prints.
 *
 * Not here: reading tar (tar.ts, indexer.ts), merging (merge.ts), encoding (toc-codec.ts).
 */

/** Entry types. 'whiteout' only appears in a LayerToc (a `.wh.NAME` marker), never in a merged tree. */
export type EntryType = 'reg' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'whiteout';

export interface TocEntry {
  /**
   * Path relative to the image root, normalized: no leading '/', no '.', '..' or empty components.
   * The root directory itself is '' (present in merged trees; in a LayerToc only if the tar has `./`).
   */
  path: string;
  type: EntryType;
  /** Permission and special bits only (mode & 0o7777); the type is in `type`. */
  mode: number;
  uid: number;
  gid: number;
  /** Content length in bytes for 'reg' (and for 'hardlink' in a merged tree: the target's size); else 0. */
  size: number;
  /** Modification time, seconds since the epoch (fractional when the tar has a PAX mtime). */
  mtime: number;
  /** 'symlink': the target as written in the tar. 'hardlink': the normalized path of the link target. */
  linkname?: string;
  /** 'char' and 'block' only. */
  devmajor?: number;
  devminor?: number;
  /** Extended attributes from PAX `SCHILY.xattr.<name>` records; raw value bytes. */
  xattrs?: Record<string, Uint8Array>;
  /** 'sha256:<hex>' of the file content, for 'reg' (including empty files) and merged 'hardlink's. */
  digest?: string;
  /** 'dir' only: the layer holds `<dir>/.wh..wh..opq`, so lower layers' contents of this dir are hidden. */
  opaque?: boolean;
  /** 'reg' only: byte offset of the content inside the uncompressed layer tar (for range reads). */
  offset?: number;
  /**
   * 'dir' only: no tar header gave this directory its attributes; it exists because something under
   * it does (a LayerToc dir created for a `.wh..wh..opq` marker without a dir entry; a merged parent no
   * layer lists). Attributes are the defaults mode 0755, root:root, mtime 0, and a merge lets an
   * existing lower directory's attributes win over an implied one (what containerd's applier does,
   * since it extracts onto the mounted parent chain). Absent means false.
   */
  implied?: boolean;
  /** Merged trees only: index into MergedTree.diffIDs of the layer that supplied this entry. */
  layer?: number;
  /**
   * 'reg' larger than CHUNK_BYTES only (TOC version ≥ 2): sha256 of each consecutive CHUNK_BYTES piece
   * of the content (the last one shorter), 32 raw bytes each, concatenated. Lets a worker verify and
   * serve the head of a large file while the rest still streams (issue 14: no unverified byte is
   * served). Absent in TOCs indexed before version 2: such a file is served only once whole.
   */
  chunks?: Uint8Array;
}

/** Content piece covered by one entry of TocEntry.chunks, bytes. */
export const CHUNK_BYTES = 1024 * 1024;
/** Bytes per digest in TocEntry.chunks (raw sha256). */
export const CHUNK_DIGEST_BYTES = 32;

/** Pieces of CHUNK_BYTES a content of `size` bytes has chunk digests for (0: none, a small file). */
export function chunkCount(size: number): number {
  return size > CHUNK_BYTES ? Math.ceil(size / CHUNK_BYTES) : 0;
}

/** The entry of a directory that exists only because something under it does (see `implied`). */
export function impliedDir(path: string): TocEntry {
  return { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0, implied: true };
}

/**
 * Bump when the TOC encoding changes incompatibly; stored alongside every encoded TOC. Version 2 added
 * TocEntry.chunks; decoders read versions 1 and 2 (a version 1 TOC has no chunk digests).
 */
export const TOC_VERSION = 2;

export interface LayerToc {
  /** TOC_VERSION when built here; a decoded TOC keeps the version it was encoded with (1 has no chunks). */
  version: number;
  /** 'sha256:<hex>' of the uncompressed tar, computed while reading. */
  diffID: string;
  /** Size of the uncompressed tar in bytes. */
  uncompressedSize: number;
  entries: TocEntry[];
}

/**
 * A flattened chain: entries sorted by path (byte order of the UTF-8 path, '' first), no whiteouts,
 * every parent directory present. Hardlinks point (`linkname`) at another entry of the same tree and
 * carry that entry's digest and size.
 */
export interface MergedTree {
  /** diffIDs of the chain, lowest layer first. */
  diffIDs: string[];
  entries: TocEntry[];
}
