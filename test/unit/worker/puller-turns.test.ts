/**
 * A pull's synchronous work (TOC decode, item check, merge) leaves the event loop turns while a
 * caller's early work is under way (issue 19): containerd's Prepares, started in onImageChecked, need
 * this loop at every step (each answer sends the next one; containerd calls our snapshotter back for
 * every new layer). Modelled here by a chain of setImmediate hops started in onImageChecked: it must
 * move on during the pull, not only once the pull has returned.
 */
import test from 'ava';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { Puller } from '../../../src/worker/pull/puller.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { checkedHeader, deltaServer, madeUpLayer } from '../../helpers/delta-header.js';
import { tempDir } from '../../helpers/tmp.js';

const REF = 'localhost:5000/app:v1';

test('the event loop turns between the TOC decodes, the item check and the merge while onImageChecked\'s work runs', async (t) => {
  const tocs = [madeUpLayer('a', 300), madeUpLayer('b', 300), madeUpLayer('c', 300)];
  const client = new ProxyClient({ url: await deltaServer(t, checkedHeader(tocs, REF)) });
  t.teardown(() => client.close());
  const tracker = new ContentTracker(await new LocalContentStore(tempDir(t)).open());
  const puller = new Puller({ client, tracker, layers: await new LayerStore(tempDir(t)).open(), lowerTreesDelayMs: -1 });

  // The caller's early work: one hop per event-loop turn, until the pull has returned.
  let hops = 0;
  let pulled = false;
  const hop = (): void => {
    if (pulled) return;
    hops++;
    setImmediate(hop);
  };
  const p = await puller.pull(REF, undefined, { onImageChecked: () => setImmediate(hop) });
  pulled = true;
  t.teardown(() => p.receiver.close());
  const during = hops;
  t.is(p.tree.entries.filter((e) => e.type === 'reg').length, 900);
  // One turn after onImageChecked, one after each of the 3 TOC decodes, after the item check and
  // before the merge: at least 6 (the stream's own I/O may add more).
  t.true(during >= 6, `the caller's work moved ${during} hop(s) during the pull`);
});
