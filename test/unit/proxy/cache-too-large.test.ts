/**
 * Issue 14, a file larger than the proxy's content cache (--cache-size): the cache refuses to keep it,
 * so once it is no longer staged it cannot be served from the cache. Asking for it fails at once with
 * a typed SL_ERR_IMAGE_LIMIT naming --cache-size, instead of re-fetching its whole layer (many GiB
 * for model weights) REFETCH_ATTEMPTS times only to be refused again.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import type { IndexerService } from '../../../src/proxy/indexer-service.js';
import { openCached } from '../../../src/proxy/session/item-source.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

test('content larger than --cache-size: SL_ERR_IMAGE_LIMIT naming the limit, no layer re-fetch', async (t) => {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 256 * 1024, store });
  const big = randomBytes(1024 * 1024); // incompressible: stays 1 MiB encoded
  const diffID = dg(Buffer.from('layer'));
  const rec = await cache.put(Readable.from([big]), big.length, diffID);
  t.false(rec?.cached, 'the cache refused it');
  t.false(cache.has(dg(big)));

  let refetches = 0;
  const indexer = { refetch: async () => void refetches++ } as unknown as IndexerService;
  const err = await t.throwsAsync(openCached({ store, cache, indexer }, dg(big), diffID));
  t.is((err as { code?: string }).code, 'SL_ERR_IMAGE_LIMIT');
  t.regex(err!.message, /--cache-size 262144 bytes/);
  t.is(refetches, 0, 'the layer is not re-fetched for nothing');

  // A row never encoded yet (as a layer's index writes it) records its raw size: it is re-fetched
  // (its encoding may fit), here with a re-fetch that stores nothing, so it ends not-found as before.
  const text = Buffer.alloc(1024 * 1024, 'compressible ');
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
