/**
 * release() of an image whose stream has just ended, while the end is still being made durable (the
 * puller's syncfs before its complete markers, then the record): the markers and the record must not
 * come back after release() withdrew them and deleted the content (images/service.ts Known.settled).
 * Otherwise the next pull would announce layers whose content is gone, and a restart would show a
 * released image as complete.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { yieldToLoop } from '../../../src/event-loop.js';
import { createLogger, type Fields } from '../../../src/log.js';
import { sha256Digest } from '../../../src/oci/digest.js';
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

const REF = 'localhost:5000/app:v1';

/** A LayerStore that logs marker writes and withdrawals, in order. */
class OrderedLayers extends LayerStore {
  readonly events: string[] = [];
  override async markComplete(diffIDs: readonly string[]): Promise<void> {
    await super.markComplete(diffIDs);
    this.events.push('mark');
  }
  override async unmarkComplete(diffIDs: readonly string[]): Promise<void> {
    if (diffIDs.length > 0) this.events.push('unmark');
    await super.unmarkComplete(diffIDs);
  }
}

/** ImageRecords that log the writes of complete records. */
class OrderedRecords extends ImageRecords {
  readonly events: string[] = [];
  override async put(rec: ImageRecord): Promise<void> {
    await super.put(rec);
    if (rec.complete) this.events.push('put-complete');
  }
  override async remove(manifestDigest: string): Promise<void> {
    await super.remove(manifestDigest);
    this.events.push('remove');
  }
}

test('an image released while its ended stream is still being made durable: no marker or record comes back after release', async (t) => {
  const contents = [Buffer.from('first file\n'), Buffer.from('second file\n')];
  const h = { ...checkedHeader([madeUpLayer('base', 10), layerOfFiles('top', contents)], REF), items: identityItems(contents) };
  const proxy = await deltaServer(t, h, contents);

  // Every syncfs waits at a gate: the stream's end stays "being made durable" until it opens.
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let syncs = 0;
  const syncfs = batchedSyncfs(async () => {
    syncs++;
    await gate;
  });
  const root = tempDir(t, 'sl-release-');
  const layers = await new OrderedLayers(join(root, 'layers'), { syncfs }).open();
  const records = await new OrderedRecords(join(root, 'images'), layers).open();
  const tracker = new ContentTracker(await new LocalContentStore(join(root, 'content'), { syncfs }).open());
  const lines: Fields[] = [];
  const log = createLogger({ level: 'debug', sink: (l) => lines.push(JSON.parse(l) as Fields) });
  const service = await openImageService(t, { root, layers, records, tracker, proxy, releaseGraceMs: 0, log });

  // A CRI-style Prepare pulls the image; its whole stream arrives at once.
  const remote = await service.resolve({ key: 'k', parent: '', parentRemoteId: undefined, hints: { chainId: chainIds(h.diffIDs)[0]!, imageRef: REF }, labels: {} });
  t.truthy(remote);
  await pollUntil('the stream ended and its flush started', () => syncs > 0 && contents.every((c) => tracker.has(sha256Digest(c))));

  // Nothing shows the image: release it while the flush waits at the gate.
  const released = service.release(new Set());
  for (let i = 0; i < 10; i++) await yieldToLoop();
  open();
  await released;
  // The stream's end finishes: with its markers (the puller) written, and its record not.
  await pollUntil('the completion dealt with', () => layers.events.includes('mark') && lines.some((l) => l.msg === 'image-completion-not-recorded' || records.events.includes('put-complete')));

  t.is(layers.events.lastIndexOf('unmark') > layers.events.lastIndexOf('mark'), true, `markers withdrawn after they were written: ${layers.events.join(' ')}`);
  t.deepEqual(await layers.completeLayers(), [], 'no layer of the released image is announced as complete');
  t.false(records.events.includes('put-complete'), `no complete record written: ${records.events.join(' ')}`);
  t.false(existsSync(join(root, 'images', `${digestHex(h.manifestDigest)}.json`)), 'the record file is gone');
  t.deepEqual(service.status(), []);
  t.false(contents.some((c) => tracker.has(sha256Digest(c))), 'its content was deleted');
});
