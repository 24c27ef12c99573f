/**
 * Metadata GC of the proxy (issue 14): at start, before the content cache opens, and then every
 * --gc-interval seconds while it runs (startPeriodicGc), drop what no image
 * references any more (store.collectUnreferenced: superseded manifests, their layers once old enough,
 * contents only they held, traces of repositories no image belongs to). A content also held by a
 * layer that stays is re-pointed to it, found by decoding the kept layers' TOCs (once, lazily).
 *
 * Not here: removing cache files and memoized TOCs (the caller: server.ts), the content cache's own LRU bound.
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
  /** diffIDs of the layers deleted (the caller forgets their memoized TOCs). */
  removedLayers: string[];
}

/** Default --gc-interval, seconds: unreferenced metadata is collected hourly (and at start). */
export const DEFAULT_GC_INTERVAL_S = 3600;

/** The timer functions the periodic GC uses (injected by tests; default the global ones). */
export interface GcTimers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export interface PeriodicGcOptions {
  store: MetadataStore;
  /** Between runs, ms (> 0). */
  intervalMs: number;
  /** As collectGarbage's minAgeMs. */
  minAgeMs: number;
  logger: Logger;
  /** Called after each run with what it removed (cache files, memoized TOCs). */
  onCollected(r: GcResult): void;
  /** Clock, ms since the epoch; default Date.now. */
  now?: () => number;
  timers?: GcTimers;
}

/**
 * Runs collectGarbage every `intervalMs` until stop(). A failed run is logged (`store-gc-failed`) and
 * the next one tried on schedule: GC never takes the proxy down. The timer does not keep the process
 * alive.
 */
export function startPeriodicGc(o: PeriodicGcOptions): { stop(): void } {
  const timers: GcTimers = o.timers ?? {
    setInterval: (fn, ms) => setInterval(fn, ms).unref(),
    clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
  };
  const now = o.now ?? Date.now;
  const handle = timers.setInterval(() => {
    try {
      o.onCollected(collectGarbage(o.store, now(), o.minAgeMs, o.logger));
    } catch (err) {
      o.logger.warn('store-gc-failed', { error: err });
    }
  }, o.intervalMs);
  return { stop: () => timers.clearInterval(handle) };
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
