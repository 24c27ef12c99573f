/**
 * Issue 14, a file too large for the proxy's content cache (over a quarter of --cache-size, e.g. model
 * weights): it is served raw from its layer blob (IndexerService.openFromLayer) instead of re-fetching
 * its whole layer into a cache that would refuse it; announced 'identity' at its raw size.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import type { IndexerService } from '../../../src/proxy/indexer-service.js';
import { announce, openCached } from '../../../src/proxy/session/item-source.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

test('content too large for --cache-size: read from its layer, announced identity, no re-fetch into the cache', async (t) => {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 1024 * 1024, store });
  t.true(cache.servedFromLayer(1024 * 1024 / 4 + 1));
  t.false(cache.servedFromLayer(1024 * 1024 / 4));
  const big = randomBytes(512 * 1024);
  const diffID = dg(Buffer.from('layer'));
  // As an older proxy recorded it: encoded (br) and refused by the cache.
  store.putContent({ digest: dg(big), size: big.length, encodedSize: big.length - 10, encoding: 'br', sourceDiffID: diffID, cached: false, lastAccess: 0, encodedDigest: dg(Buffer.from('x')) });

  let refetches = 0;
  const fromLayer: string[] = [];
  const indexer = {
    refetch: async () => void refetches++,
    openFromLayer: async (d: string, digest: string) => (fromLayer.push(`${d} ${digest}`), Readable.from([big])),
  } as unknown as IndexerService;
  t.deepEqual(announce({ store, cache, indexer }, dg(big), 'test'), { digest: dg(big), size: big.length, encodedSize: big.length, encoding: 'identity' });
  const served = await openCached({ store, cache, indexer }, dg(big), diffID);
  t.is(served.rec.encoding, 'identity');
  t.is(served.rec.encodedSize, big.length);
  t.deepEqual(fromLayer, [`${diffID} ${dg(big)}`]);
  t.is(refetches, 0, 'the layer is not re-fetched into the cache');

  // A row never encoded yet (as a layer's index writes it) records its raw size: it is re-fetched
  // (its encoding may fit), here with a re-fetch that stores nothing, so it ends not-found as before.
  const text = Buffer.alloc(200 * 1024, 'compressible ');
  store.putContent({ digest: dg(text), size: text.length, encodedSize: text.length, encoding: 'identity', sourceDiffID: diffID, cached: false, lastAccess: 0 });
  const notFound = await t.throwsAsync(openCached({ store, cache, indexer }, dg(text), diffID));
  t.is((notFound as { code?: string }).code, 'SL_ERR_PROXY_CONTENT_NOT_FOUND');
  t.is(refetches, 3, 'REFETCH_ATTEMPTS re-fetches');
  refetches = 0;

  // A content that fits is still re-fetched when missing (the cache evicted it): the usual path.
  const small = randomBytes(1024);
  store.putContent({ digest: dg(small), size: small.length, encodedSize: small.length, encoding: 'identity', sourceDiffID: diffID, cached: false, lastAccess: 0 });
  const fill = { refetch: async () => void (refetches++, await cache.put(Readable.from([small]), small.length, diffID)) } as unknown as IndexerService;
  const got = await openCached({ store, cache, indexer: fill }, dg(small), diffID);
  t.is(refetches, 1);
  t.is(got.rec.digest, dg(small));
});
