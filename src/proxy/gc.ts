/**
 * Metadata GC of the proxy (issue 14): at start, before the content cache opens, drop what no image
 * references any more (store.collectUnreferenced: superseded manifests, their layers once old enough,
 * contents only they held, traces of repositories no image belongs to). A content also held by a
 * layer that stays is re-pointed to it, found by decoding the kept layers' TOCs (once, lazily).
 *
 * Not here: removing cache files (the caller, with ContentCache.pathOf), the content cache's own LRU bound.
 */
import { decodeToc } from '../layers/toc-codec.js';
import type { Logger } from '../log.js';
import type { MetadataStore } from './store.js';

/** Default age (ms since indexing) before an unreferenced layer is collected: a superseded image may still be read lazily. */
export const DEFAULT_GC_MIN_AGE_MS = 7 * 24 * 3600 * 1000;

export interface GcResult {
  manifests: number;
  layers: number;
  contents: number;
  traces: number;
  /** Digests whose cache files the caller removes. */
  removedCached: string[];
}

export function collectGarbage(store: MetadataStore, now: number, minAgeMs: number, logger: Logger): GcResult {
  let holders: Map<string, string> | undefined;
  const r = store.collectUnreferenced(now, minAgeMs, (digest, kept) => {
    if (holders === undefined) {
      holders = new Map();
      for (const diffID of kept) {
        const l = store.layer(diffID);
        if (l === undefined) continue;
        for (const e of decodeToc(l.toc).entries) if (e.type === 'reg' && e.digest !== undefined && !holders.has(e.digest)) holders.set(e.digest, diffID);
      }
    }
    return holders.get(digest);
  });
  if (r.manifests + r.layers + r.contents + r.traces > 0) logger.info('store-collected', { manifests: r.manifests, layers: r.layers, contents: r.contents, traces: r.traces });
  return r;
}
