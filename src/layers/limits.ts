/**
 * Bounds on what reading one layer may cost (memory, disk, CPU), so a hostile or broken layer fails
 * with SL_ERR_IMAGE_LIMIT (resource-exhausted) naming the layer and the limit, instead of driving the
 * reader out of memory or freezing it. Defaults admit every real image we know of (the largest bench
 * layer has ~40 000 entries and 850 MB uncompressed; model-weight layers hold single files of many
 * GiB, which only the uncompressed-size bound touches).
 *
 * Where they are enforced: tar.ts (extended headers, names, xattrs per entry), indexer.ts (entries,
 * metadata bytes, uncompressed size, ratio), decompress.ts (zstd window).
 * Not here: the proxy flags that set them (src/proxy/config.ts).
 */
import { StarlightError } from '../errors.js';

export interface LayerLimits {
  /** Tar entries (headers of real entries, duplicates included) per layer. */
  maxEntries: number;
  /** Bytes of one entry's path or link target (Linux PATH_MAX is 4096). */
  maxPathBytes: number;
  /** Bytes of one entry's extended attributes, names and values (Linux XATTR_LIST_MAX is 64 KiB). */
  maxXattrBytes: number;
  /** PAX ('x' and 'g') and GNU long-name header bytes pending before one entry / in force globally. */
  maxExtendedHeaderBytes: number;
  /**
   * Metadata kept in memory for one layer's TOC, estimated as paths + link targets + xattrs +
   * ENTRY_OVERHEAD_BYTES per entry (bounds the TOC, its encoding and its store rows).
   */
  maxMetadataBytes: number;
  /** Uncompressed tar bytes per layer. */
  maxUncompressedBytes: number;
  /**
   * Uncompressed / compressed bytes, checked once RATIO_GRACE_BYTES were produced; 0 = off. gzip
   * cannot exceed ~1032:1, so the default only stops zstd streams of runs (the "bomb" class).
   */
  maxRatio: number;
  /** Largest zstd window a frame may declare, bytes (the reference decoder's default limit is 128 MiB). */
  maxZstdWindowBytes: number;
}

/** Per-entry cost assumed by maxMetadataBytes for the entry object itself (measured ~150-250 B in V8). */
export const ENTRY_OVERHEAD_BYTES = 200;
/** Uncompressed bytes produced before maxRatio applies (small layers of zeros are fine). */
export const RATIO_GRACE_BYTES = 64 * 1024 * 1024;

export const DEFAULT_LAYER_LIMITS: Readonly<LayerLimits> = {
  maxEntries: 1_000_000,
  maxPathBytes: 4096,
  maxXattrBytes: 64 * 1024,
  maxExtendedHeaderBytes: 1024 * 1024,
  maxMetadataBytes: 256 * 1024 * 1024,
  maxUncompressedBytes: 64 * 1024 ** 3,
  maxRatio: 2000,
  maxZstdWindowBytes: 128 * 1024 * 1024,
};

/** `partial` over the defaults. */
export function layerLimits(partial: Partial<LayerLimits> = {}): LayerLimits {
  return { ...DEFAULT_LAYER_LIMITS, ...partial };
}

/** The error for a layer beyond `limit` (a LayerLimits key), with what was seen. */
export function limitError(limit: keyof LayerLimits, value: number, message: string, details: Record<string, unknown> = {}): StarlightError {
  return new StarlightError('SL_ERR_IMAGE_LIMIT', `${message} (limit ${limit}=${value})`, { details: { ...details, limit, value } });
}
