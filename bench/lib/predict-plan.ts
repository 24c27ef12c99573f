/**
 * A warm delta's planning step as handlers.ts does it (order → rank map → plan), timed for two
 * priority services alternately (so load drift hits both alike): median ms of `runs` each.
 */
import type { LayerToc, MergedTree } from '../../src/layers/toc.js';
import type { ImageConfig } from '../../src/oci/types.js';
import { plan } from '../../src/proxy/planner.js';
import { rankMap } from '../../src/proxy/priority.js';
import type { PriorityService } from '../../src/proxy/priority-service.js';

export function planTimed(services: readonly PriorityService[], img: { name: string; config: ImageConfig; merged: MergedTree }, runs: number): number[] {
  const chain: LayerToc[] = [{ version: 1, diffID: img.merged.diffIDs[0]!, uncompressedSize: 0, entries: img.merged.entries }];
  const merged = img.merged;
  const ms: number[][] = services.map(() => []);
  for (let i = 0; i < runs + 1; i++) {
    services.forEach((priority, k) => {
      const t0 = performance.now();
      const order = priority.order({ manifestDigest: `sha256:${img.name}`, repository: `r/${img.name}`, diffIDs: merged.diffIDs, merged });
      plan({ chain, merged, haveDiffIDs: new Set(), haveDigests: new Set(), config: img.config, rank: rankMap(order.files) });
      if (i > 0) ms[k]!.push(performance.now() - t0); // the first computes the memoized order
    });
  }
  return ms.map((m) => m.sort((a, b) => a - b)[Math.floor(m.length / 2)]!);
}
