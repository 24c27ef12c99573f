/**
 * A pull's own record is written before its stream's completion is flushed (images/service.ts
 * doPull, puller.ts `durableAfter`): an update's small stream ends while the pull still answers, and
 * the record's write must not wait behind a syncfs of the whole file system (issue 19, session 12).
 * The status reports when the stream ended (`streamEndedAt`), the transfer's end the bench measures,
 * and when its request went out (`streamRequestedAt`).
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { yieldToLoop } from '../../../src/event-loop.js';
import { LocalContentStore, digestHex } from '../../../src/worker/cas/store.js';
import { batchedSyncfs } from '../../../src/worker/cas/syncfs.js';
import { chainIds } from '../../../src/worker/images/chain.js';
import { ImageRecords, type ImageRecord } from '../../../src/worker/images/records.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { checkedHeader, deltaServer, identityItems, layerOfFiles, madeUpLayer } from '../../helpers/delta-header.js';
import { openImageService } from '../../helpers/image-service.js';
import { pollUntil } from '../../helpers/poll.js';
import { tempDir } from '../../helpers/tmp.js';

const REF = 'localhost:5000/app:v2';

/** ImageRecords whose first (incomplete) put waits until `before` settles: a slow write. */
class SlowFirstPut extends ImageRecords {
  before: Promise<unknown> = Promise.resolve();
  private first = true;
  override async put(rec: ImageRecord): Promise<void> {
    if (this.first) {
      this.first = false;
      await this.before;
    }
    await super.put(rec);
  }
}

test("a pull's record is written before its stream's completion is flushed, and the stream's end is reported", async (t) => {
  const contents = [Buffer.from('new file of the update\n')];
  const h = { ...checkedHeader([madeUpLayer('base', 10), layerOfFiles('top', contents)], REF), items: identityItems(contents) };
  const proxy = await deltaServer(t, h, contents);
  const root = tempDir(t, 'sl-order-');
  const recordFile = join(root, 'images', `${digestHex(h.manifestDigest)}.json`);
  // At each syncfs run: was the pull's record on disk when it started?
  const syncs: boolean[] = [];
  const syncfs = batchedSyncfs(async () => {
    syncs.push(existsSync(recordFile));
  });
  const layers = await new LayerStore(join(root, 'layers'), { syncfs }).open();
  const records = await new SlowFirstPut(join(root, 'images'), layers).open();
  const tracker = new ContentTracker(await new LocalContentStore(join(root, 'content'), { syncfs }).open());
  const service = await openImageService(t, { root, layers, records, tracker, proxy });

  // The record's write is slow: it waits until the stream has ended, then a few loop turns more, in
  // which a flush started at the stream's end would have begun.
  const before = Date.now();
  records.before = (async () => {
    await pollUntil('the stream ended', () => service.status()[0]?.streamEndedAt);
    for (let i = 0; i < 5; i++) await yieldToLoop();
  })();
  await service.resolve({ key: 'k', parent: '', parentRemoteId: undefined, hints: { chainId: chainIds(h.diffIDs)[0]!, imageRef: REF }, labels: {} });
  await pollUntil('the image recorded complete', () => service.status()[0]?.complete);

  t.true(syncs.length > 0, 'the completion was flushed');
  t.deepEqual(syncs, syncs.map(() => true), `every flush started after the record was written: ${JSON.stringify(syncs)}`);
  const ended = service.status()[0]!.streamEndedAt!;
  t.true(ended >= before && ended <= Date.now(), `streamEndedAt ${ended} within the pull`);
  const requested = service.status()[0]!.streamRequestedAt!;
  t.true(requested >= before && requested <= ended, `streamRequestedAt ${requested} between the pull's start and the stream's end ${ended}`);
  t.deepEqual(await layers.completeLayers(), [...h.diffIDs].sort());
});
