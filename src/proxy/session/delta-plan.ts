/**
 * The header of one delta: what the worker has (`have`), the plan (planner.ts) in the learned or
 * heuristic order, and each item as announced (item-source.ts announce()).
 *
 * Not here: HTTP parameters (handlers.ts), sending (session.ts).
 */
import { StarlightError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { yieldToLoop } from '../../event-loop.js';
import { mergeLayersSliced } from '../../layers/merge.js';
import type { LayerToc, MergedTree } from '../../layers/toc.js';
import type { ContentItem, DeltaHeader, DeltaImage } from '../../protocol/index.js';
import type { IndexedImage, IndexerService } from '../indexer-service.js';
import { type PlannedItem, haveContent, planSliced } from '../planner.js';
import { type RankedFile, rankMap } from '../priority.js';
import type { LearnedFiles, PriorityService } from '../priority-service.js';
import type { ImageRecord, MetadataStore } from '../store.js';
import { type ItemSourceDeps, announce, deferrable } from './item-source.js';

export interface DeltaPlanDeps extends ItemSourceDeps {
  store: MetadataStore;
  indexer: IndexerService;
  priority: PriorityService;
}

export interface DeltaRequest {
  /** Digests the worker has (docs/protocol.md `have`). */
  have: readonly string[];
  /** First item index this stream carries. */
  from: number;
  group?: string;
  /** The worker reads ITEM frames (`deferred=1`): contents not encoded yet get their encoding at send time. */
  deferred?: boolean;
  /** `tocs=br`: the header's TOCs go brotli-compressed (docs/protocol.md "Compressed TOCs"). */
  tocs?: 'br';
}

/**
 * True if the proxy can resolve `have` entry `h` (docs/protocol.md `have`): an indexed layer diffID, or
 * the manifest digest of an image whose whole chain is indexed. Others are ignored by the plan.
 */
export function knownHave(d: Pick<DeltaPlanDeps, 'store' | 'indexer'>, h: string): boolean {
  if (d.indexer.toc(h) !== undefined) return true;
  const m = d.store.manifest(h);
  return m !== undefined && m.diffIDs.every((id) => d.store.hasLayer(id));
}

/**
 * What the worker has (docs/protocol.md `have`): a layer diffID → that layer and all its contents; an
 * image manifest digest → its chain and the contents visible in its merged tree. Digests the proxy does
 * not know are ignored (listed in `unknown`): nothing can be deduplicated against them.
 */
async function resolveHave(d: DeltaPlanDeps, have: readonly string[]): Promise<{ haveDiffIDs: Set<string>; haveDigests: Set<string>; unknown: string[] }> {
  const haveDiffIDs = new Set<string>();
  const haveLayers: LayerToc[] = [];
  const haveTrees: MergedTree[] = [];
  const unknown: string[] = [];
  for (const h of have) {
    const l = d.indexer.toc(h);
    if (l !== undefined) {
      haveDiffIDs.add(h);
      haveLayers.push(l);
      continue;
    }
    if (!knownHave(d, h)) {
      unknown.push(h);
      continue;
    }
    const m = d.store.manifest(h)!;
    m.diffIDs.forEach((id) => haveDiffIDs.add(id));
    haveTrees.push(await mergeLayersSliced(m.diffIDs.map((id) => d.indexer.toc(id)!)));
  }
  return { haveDiffIDs, haveDigests: haveContent(haveLayers, haveTrees), unknown };
}

/** The learned/predicted order of `img`'s files for `group` (memoized by the priority service until an upload). */
export function orderOf(d: Pick<DeltaPlanDeps, 'priority'>, img: IndexedImage, merged: MergedTree, group: string | undefined): LearnedFiles {
  const rec = img.record;
  return d.priority.order({ manifestDigest: rec.manifestDigest, repository: rec.repository, diffIDs: rec.diffIDs, merged }, group);
}

/**
 * Indices of `header`'s items from firstItem on that `files` name, in the order of `files` (an item at
 * its first file): the planner's ranked-first order for an order that arrived after the header was
 * planned (DeltaSession.prefer). Files without an item (zero-size, had by the worker) are skipped.
 */
export function itemsInOrder(header: DeltaHeader, files: readonly RankedFile[]): number[] {
  const index = new Map<string, number>();
  for (let i = header.firstItem; i < header.items.length; i++) index.set(header.items[i]!.digest, i);
  const out: number[] = [];
  for (const f of files) {
    const i = index.get(f.digest);
    if (i === undefined) continue;
    out.push(i);
    index.delete(f.digest);
  }
  return out;
}

/**
 * First contact: the header goes out before the startup prediction. `predict` starts once `after`
 * settles (the session's header has left: DeltaSession.headerSent); when it is done, the items its
 * order ranks go first (DeltaSession.prefer, after anything the worker bumped), unless the order did
 * not change from `planned`; the session's items wait for this (or a bump), the header does not.
 * Resolves when done, never rejects (a failed prediction leaves the planned order).
 */
export function preferPrediction(
  d: Pick<DeltaPlanDeps, 'priority'> & { logger: Logger },
  session: { prefer(indices: readonly number[]): void; holdItemsUntil(p: Promise<unknown>): void },
  p: { img: IndexedImage; merged: MergedTree; group: string | undefined; header: DeltaHeader; planned: LearnedFiles; after: Promise<void>; predict: () => Promise<void>; since: number },
): Promise<void> {
  let startedAt = p.since;
  const done = p.after
    .then(() => {
      startedAt = performance.now();
      return p.predict();
    })
    .then(() => {
      const order = orderOf(d, p.img, p.merged, p.group);
      if (order !== p.planned) session.prefer(itemsInOrder(p.header, order.files));
      const now = performance.now();
      // predictSeconds: from the last layer pass; startedSeconds: when the prediction could start (header out).
      d.logger.info('delta-reordered', { image: p.img.ref, predictSeconds: (now - p.since) / 1000, startedSeconds: (startedAt - p.since) / 1000, preferred: order.files.length });
    })
    .catch((err: unknown) => d.logger.warn('delta-reorder-failed', { image: p.img.ref, error: err }));
  session.holdItemsUntil(done);
  return done;
}

/** Items announced per metadata-store query (one query per batch, then the event loop runs). */
const ANNOUNCE_BATCH = 500;

/**
 * announce() of each planned item, with the store's records read ANNOUNCE_BATCH at a time and the
 * event loop running between batches (a lookup per item froze it for ~27 s on 60 000 items at load 18).
 */
async function announceAll(d: DeltaPlanDeps, items: readonly PlannedItem[], ref: string): Promise<ContentItem[]> {
  const out: ContentItem[] = [];
  for (let i = 0; i < items.length; i += ANNOUNCE_BATCH) {
    if (i > 0) await yieldToLoop();
    const batch = items.slice(i, i + ANNOUNCE_BATCH);
    const recs = d.store.contentsOf(batch.map((it) => it.digest));
    for (const it of batch) out.push(announce(d, it.digest, `${it.path} of ${ref}`, recs.get(it.digest)));
  }
  return out;
}

/**
 * The header of a delta of `img` for `req`, and the layer supplying each item (for re-fetches).
 * `merged`: the merged tree of `img`'s chain and `order` its orderOf(), when the caller has them.
 * `unknownHave`: the `have` entries the plan ignored (plan-cache.ts re-checks them).
 * Long steps (merging, planning, the store's records) run in slices with the event loop running
 * between them (src/event-loop.ts); the result is what one synchronous pass would give.
 */
export async function planDelta(
  d: DeltaPlanDeps,
  img: IndexedImage,
  req: DeltaRequest,
  mergedIn?: MergedTree,
  orderIn?: LearnedFiles,
): Promise<{ header: DeltaHeader; sources: string[]; unknownHave: string[] }> {
  const merged = mergedIn ?? (await mergeLayersSliced(img.tocs));
  const order = orderIn ?? orderOf(d, img, merged, req.group);
  const { haveDiffIDs, haveDigests, unknown } = await resolveHave(d, req.have);
  const rec = img.record;
  const p = await planSliced({
    chain: img.tocs,
    merged,
    haveDiffIDs,
    haveDigests,
    config: img.config,
    rank: rankMap(order.files),
  });
  const items = await announceAll(d, p.items, img.ref);
  const header: DeltaHeader = {
    ...imageOfRecord(rec, img.ref, img.platform),
    layers: p.layers.map((l) => ({ diffID: l.diffID, toc: d.store.layer(l.diffID)!.toc })),
    items,
    firstItem: req.from,
  };
  forRequest(d, header, req);
  return { header, sources: p.items.map((it) => it.sourceDiffID), unknownHave: unknown };
}

/** The image fields of a delta of `ref` on `platform` (its HEADER, or the IMAGE frame before it) from its record. */
export function imageOfRecord(rec: ImageRecord, ref: string, platform: string): DeltaImage {
  return {
    ref,
    platform,
    manifestDigest: rec.manifestDigest,
    manifestMediaType: rec.mediaType,
    manifest: rec.manifest,
    config: rec.config,
    diffIDs: rec.diffIDs,
  };
}

/**
 * Fills in the per-request part of a planned header, in place: checks `from` against the item table
 * and, with `deferred=1`, lists the items from `from` on that are staged and not encoded yet
 * (`cached(i)` true: known to be in the cache, no lookup needed).
 */
export function forRequest(d: ItemSourceDeps, header: DeltaHeader, req: DeltaRequest, cached: (i: number) => boolean = () => false): void {
  const n = header.items.length;
  if (req.from > n) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `query parameter from is beyond the ${n} items of this delta`, {
      details: { parameter: 'from', value: String(req.from) },
    });
  }
  header.firstItem = req.from;
  if (req.deferred !== true) return;
  const deferred: number[] = [];
  for (let i = req.from; i < n; i++) if (!cached(i) && deferrable(d, header.items[i]!.digest)) deferred.push(i);
  if (deferred.length > 0) header.deferred = deferred;
}
