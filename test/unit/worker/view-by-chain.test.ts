/**
 * A remote snapshot whose own image is not pulled — prepared by a pull that failed after its early
 * Prepares, then found by the next pull of the same layers as already-exists — is served from another
 * pulled image with the same chain ID at that index (same layers, same tree), and release() keeps that
 * image while the snapshot is live (images/service.ts servingImage).
 */
import test from 'ava';
import { join } from 'node:path';
import { createLogger, type Fields } from '../../../src/log.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { chainIds, remoteIdFor } from '../../../src/worker/images/chain.js';
import { ImageRecords } from '../../../src/worker/images/records.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { checkedHeader, madeUpLayer } from '../../helpers/delta-header.js';
import { openImageService } from '../../helpers/image-service.js';
import { tempDir } from '../../helpers/tmp.js';

test('a view whose image is gone is served by a pulled image with the same chain; release keeps that image', async (t) => {
  const root = tempDir(t, 'sl-chainview-');
  const layers = await new LayerStore(join(root, 'layers')).open();
  const records = await new ImageRecords(join(root, 'images'), layers).open();
  const base = madeUpLayer('base', 20);
  const good = checkedHeader([base, madeUpLayer('good', 20)], 'r/good:1');
  // The failed pull's image: the same base layer under another top layer, never recorded.
  const failed = checkedHeader([base, madeUpLayer('bad', 20)], 'r/bad:1');
  await Promise.all(good.layers.map((l) => layers.addToc(l.diffID, l.toc).written));
  await records.putHeader(good);
  await records.put({ ref: good.ref, name: good.ref, manifestDigest: good.manifestDigest, complete: true, pulledAt: 1 });

  const lines: Fields[] = [];
  const log = createLogger({ level: 'debug', sink: (l) => lines.push(JSON.parse(l) as Fields) });
  const tracker = new ContentTracker(await new LocalContentStore(tempDir(t)).open());
  const service = await openImageService(t, { root, layers, records, tracker, releaseGraceMs: 0, log });

  const stale = remoteIdFor(failed.manifestDigest, 0);
  const baseChain = chainIds(good.diffIDs)[0]!;
  t.is(chainIds(failed.diffIDs)[0], baseChain, 'the two images share the base chain');
  await t.throwsAsync(service.viewRequest(stale), { message: /no pulled image has view/ }, 'without a chain ID there is nothing to go by');
  await t.throwsAsync(service.viewRequest(stale, { chainId: chainIds(failed.diffIDs)[1]! }), { message: /no pulled image has view/ }, 'a chain no pulled image has');
  const req = await service.viewRequest(stale, { chainId: baseChain });
  const own = await service.viewRequest(remoteIdFor(good.manifestDigest, 0));
  t.deepEqual(req.tree.diffIDs, [base.diffID]);
  t.deepEqual(req.tree.entries.map((e) => e.path), own.tree.entries.map((e) => e.path), "the same chain's tree");
  t.true(lines.some((l) => l.msg === 'view-served-by-chain' && l.manifest === good.manifestDigest));

  // Only the stale id is live: the image serving it stays.
  await service.release(new Set([stale]));
  t.deepEqual(service.status().map((s) => s.ref), ['r/good:1']);
  // Nothing live: it goes.
  await service.release(new Set());
  t.deepEqual(service.status().map((s) => s.ref), []);
});
