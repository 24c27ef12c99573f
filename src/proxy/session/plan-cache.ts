/**
 * Memoized delta plans: a rollout sends the same image to many workers at once, and planning it
 * (merging the chain's TOCs, ranking and sorting every file, one metadata-store lookup per item, the
 * TOC blobs) cost ~1 s of the proxy's single thread per request under load, serialised in front of
 * every header (bench/proxy.ts --fanout, docs/design-notes.md "Serving many pulls"). Identical input
 * gives the identical plan (planner.ts is pure), so a plan is reused while its inputs are unchanged:
 *
 * - key: manifest digest, platform, group, the sorted `have` list;
 * - the priority order object it was planned with (PriorityService.order() memoizes it until a trace
 *   upload or a prediction; a different object → replan);
 * - each item's announcement came from the content cache or not (item-source.ts announce()): an item
 *   evicted since, or encoded and cached since, changes the announcement → replan;
 * - `have` entries the proxy did not know at plan time must still be unknown (indexed since → replan).
 *
 * Per request only the header's ref, `firstItem`, `deferred` list and TOC encoding are filled in. The
 * header object and its item table are shared by concurrent streams unless deferred items are
 * announced (the encoder rewrites those entries: they get a copy). Streams sharing the table also
 * share the frames of its runs of small items (framed-runs.ts), kept per plan.
 *
 * Not here: the plan itself (delta-plan.ts, planner.ts), sending (session.ts).
 */
import { LRUCache } from 'lru-cache';
import { yieldToLoop } from '../../event-loop.js';
import { mergeLayersSliced } from '../../layers/merge.js';
import type { MergedTree } from '../../layers/toc.js';
import { type DeltaHeader, headerBytes } from '../../protocol/index.js';
import type { IndexedImage } from '../indexer-service.js';
import type { LearnedFiles } from '../priority-service.js';
import { type DeltaPlanDeps, type DeltaRequest, forRequest, knownHave, orderOf, planDelta } from './delta-plan.js';
import { type FramedRuns, FramedRunStore } from './framed-runs.js';
import { TocWire } from './toc-wire.js';

/** Plans kept ((image, group, have) triples); each holds its item table and TOC blobs. */
const MAX_PLANS = 32;
/** Merged trees kept (images). */
const MAX_MERGED = 16;

interface CachedPlan {
  order: LearnedFiles;
  /** The header with from = 0, no deferred list. */
  header: DeltaHeader;
  sources: string[];
  /** Per item: its announcement came from the content cache. */
  cached: Uint8Array;
  /** ContentCache.membershipChanges when `cached` was last known to be right. */
  membership: number;
  unknownHave: string[];
  /** headerBytes() of instantiated headers without deferred items, by `ref|from|tocs` (a few). */
  encoded: Map<string, Buffer>;
  /** Shared frames of the item table's runs (made at the first stream without deferred items). */
  runs?: FramedRuns;
}

/** Encoded headers kept per plan (refs × resume points; a rollout asks for one). */
const MAX_ENCODED = 4;

export class PlanCache {
  private readonly plans = new LRUCache<string, CachedPlan>({ max: MAX_PLANS });
  /** Merges by manifest digest, memoized as promises (concurrent first requests share one merge). */
  private readonly merged = new LRUCache<string, Promise<MergedTree>>({ max: MAX_MERGED });
  /** Plans served from memory / computed (for tests and the bench). */
  hits = 0;
  misses = 0;

  /**
   * `runs`: where the frames of the plans' runs are kept (bounded; tests pass a small one); `tocs`:
   * the compressed TOCs of requests with `tocs=br`.
   */
  constructor(
    private readonly runs = new FramedRunStore(),
    private readonly tocs = new TocWire(),
  ) {}

  /**
   * The merged tree of `img`'s chain (memoized by manifest digest: TOCs of a digest never change),
   * merged in slices (the event loop runs meanwhile: layers/merge.ts mergeLayersSliced).
   */
  mergedOf(img: IndexedImage): Promise<MergedTree> {
    const key = img.record.manifestDigest;
    let m = this.merged.get(key);
    if (m === undefined) {
      m = mergeLayersSliced(img.tocs);
      this.merged.set(key, m);
      m.catch(() => this.merged.delete(key));
    }
    return m;
  }

  /** planDelta(), reused while its inputs are unchanged (see the file header). */
  async plan(d: DeltaPlanDeps, img: IndexedImage, req: DeltaRequest): Promise<{ header: DeltaHeader; sources: string[]; headerBytes?: Buffer; runs?: FramedRuns }> {
    const merged = await this.mergedOf(img);
    const order = orderOf(d, img, merged, req.group);
    const key = [img.record.manifestDigest, img.platform, req.group ?? '', [...req.have].sort().join(',')].join('|');
    let p = this.plans.get(key);
    if (p === undefined || p.order !== order || !this.valid(d, p)) {
      this.misses++;
      const { header, sources, unknownHave } = await planDelta(d, img, { have: req.have, from: 0, group: req.group }, merged, order);
      const cached = new Uint8Array(header.items.length);
      header.items.forEach((it, i) => (cached[i] = d.cache.has(it.digest) ? 1 : 0));
      p = { order, header, sources, cached, membership: d.cache.membershipChanges, unknownHave, encoded: new Map() };
      this.plans.set(key, p);
    } else this.hits++;
    const header = this.instantiate(d, p, img, req);
    if (req.tocs === 'br') header.layers = await this.tocs.brotli(header.layers);
    if (header.deferred !== undefined) return { header, sources: p.sources };
    const ek = `${header.ref}|${header.firstItem}|${req.tocs ?? ''}`;
    let bytes = p.encoded.get(ek);
    if (bytes === undefined) {
      await yieldToLoop(); // encoding a header of 60 000 items is ~180 ms at load ~9: not right after planning
      bytes = headerBytes(header);
      if (p.encoded.size >= MAX_ENCODED) p.encoded.clear();
      p.encoded.set(ek, bytes);
    }
    p.runs ??= this.runs.runsOf(p.header.items, (digest) => d.cache.inMemory(digest));
    return { header, sources: p.sources, headerBytes: bytes, runs: p.runs };
  }

  private valid(d: DeltaPlanDeps, p: CachedPlan): boolean {
    // Nothing admitted to or dropped from the cache since the last check: no item to look up (50
    // concurrent pulls of 6 500 items each were 325 000 lookups in front of their headers).
    const membership = d.cache.membershipChanges;
    if (membership !== p.membership) {
      const items = p.header.items;
      for (let i = 0; i < items.length; i++) if ((d.cache.has(items[i]!.digest) ? 1 : 0) !== p.cached[i]) return false;
      p.membership = membership;
    }
    return p.unknownHave.every((h) => !knownHave(d, h));
  }

  private instantiate(d: DeltaPlanDeps, p: CachedPlan, img: IndexedImage, req: DeltaRequest): DeltaHeader {
    const header: DeltaHeader = { ...p.header, ref: img.ref };
    forRequest(d, header, req, (i) => p.cached[i] === 1);
    // The encoder rewrites a deferred item's entry when it announces it: those streams get their own table.
    if (header.deferred !== undefined) header.items = p.header.items.map((it) => ({ ...it }));
    return header;
  }
}
