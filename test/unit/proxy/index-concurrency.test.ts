/**
 * Issue 14, indexing concurrency is bounded globally and per image: with --index-concurrency 4, at
 * most 4 layer passes run proxy-wide and at most 2 (half, rounded up) of one image's, so an image of
 * many layers cannot hold every pass while another image waits. The registry is a fake ImageSource
 * whose blob fetches block until the test releases them (the passes' real code runs on them).
 */
import test from 'ava';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { nullLogger } from '../../../src/log.js';
import type { ImageSource } from '../../../src/oci/fetcher.js';
import { parseReference } from '../../../src/oci/reference.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import { IndexerService } from '../../../src/proxy/indexer-service.js';
import { ProxyMetrics } from '../../../src/proxy/metrics.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { fakeImage } from '../../helpers/fake-image.js';
import { pollUntil } from '../../helpers/poll.js';
import { tempDir } from '../../helpers/tmp.js';

const LAYERS = 6;

test('layer passes: at most --index-concurrency proxy-wide, at most half of it per image; both images progress', async (t) => {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 64 << 20, store });
  const images = new Map([['a', fakeImage('a', LAYERS)], ['b', fakeImage('b', LAYERS)]]);
  const running = new Map<string, number>([['a', 0], ['b', 0]]);
  let peakTotal = 0;
  const peak = new Map<string, number>([['a', 0], ['b', 0]]);
  const gates: (() => void)[] = [];
  let open = false;
  const client: ImageSource = {
    resolve: async (ref) => images.get(ref.repository)!.resolved,
    fetcher: (ref) => ({
      fetch: async (desc) => {
        const name = ref.repository;
        running.set(name, running.get(name)! + 1);
        peak.set(name, Math.max(peak.get(name)!, running.get(name)!));
        peakTotal = Math.max(peakTotal, running.get('a')! + running.get('b')!);
        if (!open) await new Promise<void>((r) => gates.push(r));
        const body = Readable.from([images.get(name)!.blobs.get(desc.digest)!]);
        body.once('close', () => running.set(name, running.get(name)! - 1));
        return body;
      },
    }),
  };
  const indexer = new IndexerService({ client, store, cache, metrics: new ProxyMetrics(), logger: nullLogger, indexConcurrency: 4 });
  t.teardown(() => indexer.close());
  const a = indexer.image(parseReference('127.0.0.1:1/a:v1'), 'linux/amd64');
  const b = indexer.image(parseReference('127.0.0.1:1/b:v1'), 'linux/amd64');
  await pollUntil('4 passes to wait in the registry', () => gates.length === 4, { timeoutMs: 30_000 });
  t.deepEqual([running.get('a'), running.get('b')], [2, 2], 'each image holds half of the passes');
  open = true;
  for (const g of gates.splice(0)) g();
  const [ia, ib] = await Promise.all([a, b]);
  t.is(ia.tocs.length, LAYERS);
  t.is(ib.tocs.length, LAYERS);
  t.true(peakTotal <= 4, `proxy-wide peak ${peakTotal} ≤ 4`);
  t.true(peak.get('a')! <= 2 && peak.get('b')! <= 2, `per-image peaks ${peak.get('a')}, ${peak.get('b')} ≤ 2`);
});
