/**
 * The index-time hook of startup prediction: an IndexerService whose image() also makes sure the
 * image's startup prediction exists (PriorityService.prepare) before it answers, so the first delta
 * of an image is already planned with it. Warm: one map lookup (the merged tree is built only when
 * the prediction is missing).
 *
 * Why a subclass: handlers.ts and indexer-service.ts are being restructured elsewhere; once they
 * settle, the same effect is one call after indexing in the delta/trace handlers:
 * `await ctx.priority.prepare(predictTargetOf(img))` — and this file goes away.
 *
 * Not here: the prediction (startup-service.ts), indexing (indexer-service.ts).
 */
import { mergeLayers } from '../image/merge.js';
import type { Reference } from '../oci/reference.js';
import { type IndexedImage, IndexerService, type IndexerServiceOptions } from './indexer-service.js';
import type { PriorityService } from './priority-service.js';
import type { PredictTarget } from './startup-service.js';

/** What PriorityService.prepare needs of an indexed image. */
export function predictTargetOf(img: IndexedImage): PredictTarget {
  return { manifestDigest: img.record.manifestDigest, config: img.config, merged: mergeLayers(img.tocs) };
}

export class PredictingIndexerService extends IndexerService {
  constructor(
    o: IndexerServiceOptions,
    private readonly priority: PriorityService,
  ) {
    super(o);
  }

  override async image(ref: Reference, platform: string, signal?: AbortSignal): Promise<IndexedImage> {
    const img = await super.image(ref, platform, signal);
    if (!this.priority.prepared(img.record.manifestDigest)) await this.priority.prepare(predictTargetOf(img));
    return img;
  }
}
