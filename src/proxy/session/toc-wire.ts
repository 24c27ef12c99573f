/**
 * Header TOCs as sent to a worker that asked `tocs=br` (docs/protocol.md "Compressed TOCs"): each
 * layer's encodeToc() bytes brotli-compressed once per diffID and kept (a TOC of a diffID never
 * changes). A header carries every TOC the worker lacks before any content: python-web's three are
 * 1.07 MB raw, 0.38 MB compressed, ~55 ms less of a 100 Mbit/s link before the worker can mount.
 *
 * Quality 1 (docs/design-notes.md "Compressed TOCs in the header", bench/toc-compression.ts): on the
 * bench layers' large TOCs it gives 2.8–3.1× at ~7 ms per MB on node's thread pool (q5: 2.9–3.3× at
 * ~45 ms per MB), cheap enough to compress when a header first needs it, also on a cold proxy's
 * critical path.
 *
 * Not here: planning the header (delta-plan.ts), encoding it (src/protocol/frames.ts).
 */
import { LRUCache } from 'lru-cache';
import type { HeaderLayer } from '../../protocol/index.js';
import { brotliAt } from '../content-cache.js';

/** Brotli quality of a header TOC (see the file header). */
const TOC_BROTLI_QUALITY = 1;
/** Compressed TOCs kept, bytes (a 60 000-file layer's TOC is ~10 MB raw, ~3 MB compressed). */
const DEFAULT_TOC_WIRE_BYTES = 64 * 1024 * 1024;

export class TocWire {
  /** diffID → its TOC compressed. */
  private readonly compressed: LRUCache<string, Buffer>;
  /** Compressions running, by diffID (concurrent first headers share one). */
  private readonly inflight = new Map<string, Promise<Buffer>>();

  constructor(maxBytes = DEFAULT_TOC_WIRE_BYTES) {
    this.compressed = new LRUCache<string, Buffer>({ maxSize: Math.max(1, maxBytes), sizeCalculation: (b) => Math.max(1, b.length) });
  }

  /** `layers` with every TOC brotli-compressed (`encoding: 'br'`); the input is not changed. */
  async brotli(layers: readonly HeaderLayer[]): Promise<HeaderLayer[]> {
    const tocs = await Promise.all(layers.map((l) => this.tocOf(l)));
    return layers.map((l, i) => ({ diffID: l.diffID, toc: tocs[i]!, encoding: 'br' }));
  }

  /** The TOC of `diffID` is compressed and kept (a header needing it waits for nothing; tests). */
  has(diffID: string): boolean {
    return this.compressed.has(diffID);
  }

  /**
   * Compresses a layer's TOC ahead of any header (the indexer calls it once the TOC is recorded):
   * an update's or a first contact's header then finds it ready. A failure is left to the header that
   * needs the TOC (it compresses again and reports it).
   */
  warm(diffID: string, toc: Uint8Array): void {
    const p = this.tocOf({ diffID, toc });
    if (p instanceof Promise) p.catch(() => undefined);
  }

  private tocOf(l: HeaderLayer): Buffer | Promise<Buffer> {
    if (l.encoding !== undefined) throw new Error(`TocWire.brotli: the TOC of ${l.diffID} is already encoded`);
    const hit = this.compressed.get(l.diffID);
    if (hit !== undefined) return hit;
    let p = this.inflight.get(l.diffID);
    if (p === undefined) {
      const diffID = l.diffID;
      p = brotliAt(Buffer.from(l.toc.buffer, l.toc.byteOffset, l.toc.byteLength), TOC_BROTLI_QUALITY)
        .then((buf) => {
          this.compressed.set(diffID, buf);
          return buf;
        })
        .finally(() => this.inflight.delete(diffID));
      this.inflight.set(diffID, p);
    }
    return p;
  }
}
