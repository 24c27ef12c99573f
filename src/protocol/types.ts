/**
 * Data carried by a delta stream v1 (docs/protocol.md). Plain data, no behaviour.
 */
import type { Encoding } from './constants.js';

/** One content item: a distinct file content the worker lacks. Order in the header = send order. */
export interface ContentItem {
  /** 'sha256:<hex>' of the raw (decoded) content. */
  digest: string;
  /** Raw size in bytes. */
  size: number;
  /** Bytes on the wire (sum of its CONTENT frames' data). */
  encodedSize: number;
  encoding: Encoding;
}

/** A layer's TOC: the bytes are encodeToc() output (src/layers/toc-codec.ts). */
export interface HeaderLayer {
  diffID: string;
  /** encodeToc() bytes; with `encoding`, those bytes brotli-compressed (only as sent: a decoder returns them decoded). */
  toc: Uint8Array;
  /** 'br': `toc` is brotli-compressed (a request with `tocs=br`, docs/protocol.md). Absent: as encodeToc() wrote it. */
  encoding?: 'br';
}

export interface DeltaHeader {
  /** The target reference as the proxy resolved it (host/repo:tag or @digest). */
  ref: string;
  /** 'os/arch[/variant]'. */
  platform: string;
  manifestDigest: string;
  manifestMediaType: string;
  /** Raw manifest bytes exactly as served by the registry (digest = manifestDigest). */
  manifest: Uint8Array;
  /** Raw config bytes exactly as in the registry. */
  config: Uint8Array;
  /** diffIDs of the target chain, lowest layer first. */
  diffIDs: string[];
  /** TOCs of the chain's layers the worker lacks, in chain order. */
  layers: HeaderLayer[];
  /** Every item of the plan, in send order (also when resuming). */
  items: ContentItem[];
  /** Index of the first item this stream carries (the request's `from`, default 0). */
  firstItem: number;
  /**
   * Items whose encoding the proxy chooses at send time (only with `deferred=1`): their table entry
   * is a placeholder ('identity', encodedSize = size) until the item's ITEM frame, which a decoder
   * applies to this header's item in place before the item's first chunk event.
   */
  deferred?: number[];
}

/**
 * The image a stream is about, before its HEADER (IMAGE frame, docs/protocol.md "Image first"): the
 * HEADER's fields of the same names, equal to them.
 */
export type DeltaImage = Pick<DeltaHeader, 'ref' | 'platform' | 'manifestDigest' | 'manifestMediaType' | 'manifest' | 'config' | 'diffIDs'>;

/** Totals in the END frame; a decoder checks them against what it saw. */
export interface DeltaEnd {
  /** Number of items sent (items.length - firstItem on success). */
  items: number;
  /** Sum of CONTENT data bytes sent. */
  contentBytes: number;
}

/** Payload of an ERROR frame (OCI-style error entry). */
export interface WireError {
  code: string;
  message: string;
  detail?: Record<string, unknown>;
}

export type DeltaEvent =
  | { type: 'header'; header: DeltaHeader }
  /** The stream's image, before its header (IMAGE frame); not checked against anything yet. */
  | { type: 'image'; image: DeltaImage }
  /** Part of item `index`'s encoded bytes at `offset`; `last` when the item is complete. */
  | { type: 'chunk'; index: number; offset: number; data: Buffer; last: boolean }
  | { type: 'end'; end: DeltaEnd };
