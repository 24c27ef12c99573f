/**
 * The header of one delta: what the worker has (`have`), the plan (planner.ts) in the learned or
 * heuristic order, and each item as announced (item-source.ts announce()).
 *
 * Not here: HTTP parameters (handlers.ts), sending (session.ts).
 */
import { StarlightError } from '../../errors.js';
import { mergeLayers } from '../../layers/merge.js';
import type { LayerToc, MergedTree } from '../../layers/toc.js';
import type { DeltaHeader } from '../../protocol/index.js';
import type { IndexedImage, IndexerService } from '../indexer-service.js';
import { haveContent, plan } from '../planner.js';
import { rankMap } from '../priority.js';
import type { PriorityService } from '../priority-service.js';
import type { MetadataStore } from '../store.js';
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
}

/**
 * What the worker has (docs/protocol.md `have`): a layer diffID → that layer and all its contents; an
 * image manifest digest → its chain and the contents visible in its merged tree. Digests the proxy does
 * not know are ignored: nothing can be deduplicated against them.
 */
function resolveHave(d: DeltaPlanDeps, have: readonly string[]): { haveDiffIDs: Set<string>; haveDigests: Set<string> } {
  const haveDiffIDs = new Set<string>();
  const haveLayers: LayerToc[] = [];
  const haveTrees: MergedTree[] = [];
  for (const h of have) {
    const l = d.indexer.toc(h);
    if (l !== undefined) {
      haveDiffIDs.add(h);
      haveLayers.push(l);
      continue;
    }
    const m = d.store.manifest(h);
    if (m !== undefined && m.diffIDs.every((id) => d.store.hasLayer(id))) {
      m.diffIDs.forEach((id) => haveDiffIDs.add(id));
      haveTrees.push(mergeLayers(m.diffIDs.map((id) => d.indexer.toc(id)!)));
    }
  }
  return { haveDiffIDs, haveDigests: haveContent(haveLayers, haveTrees) };
}

/** The header of a delta of `img` for `req`, and the layer supplying each item (for re-fetches). */
/** `merged`: the merged tree of `img`'s chain, when the caller built it already. */
export function planDelta(d: DeltaPlanDeps, img: IndexedImage, req: DeltaRequest, merged: MergedTree = mergeLayers(img.tocs)): { header: DeltaHeader; sources: string[] } {
  const { haveDiffIDs, haveDigests } = resolveHave(d, req.have);
  const rec = img.record;
  const p = plan({
    chain: img.tocs,
    merged,
    haveDiffIDs,
    haveDigests,
    config: img.config,
    rank: rankMap(d.priority.order({ manifestDigest: rec.manifestDigest, repository: rec.repository, diffIDs: rec.diffIDs, merged }, req.group).files),
  });
  if (req.from > p.items.length) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `query parameter from is beyond the ${p.items.length} items of this delta`, {
      details: { parameter: 'from', value: String(req.from) },
    });
  }
  const header: DeltaHeader = {
    ref: img.ref,
    platform: img.platform,
    manifestDigest: rec.manifestDigest,
    manifestMediaType: rec.mediaType,
    manifest: rec.manifest,
    config: rec.config,
    diffIDs: rec.diffIDs,
    layers: p.layers.map((l) => ({ diffID: l.diffID, toc: d.store.layer(l.diffID)!.toc })),
    items: p.items.map((it) => announce(d, it.digest, `${it.path} of ${img.ref}`)),
    firstItem: req.from,
  };
  if (req.deferred === true) {
    const deferred: number[] = [];
    for (let i = req.from; i < header.items.length; i++) if (deferrable(d, header.items[i]!.digest)) deferred.push(i);
    if (deferred.length > 0) header.deferred = deferred;
  }
  return { header, sources: p.items.map((it) => it.sourceDiffID) };
}
