/**
 * The proxy's side of the IMAGE frame (docs/protocol.md "Image first", session/image-first.ts): a warm
 * run (every layer indexed) announces its record before the run ends, so the frame goes out before the
 * delta is planned (issue 19, session 11); the frame is written from whichever of the resolution and
 * the run gives the record first, and leaves the process before sendImageFirst resolves (node:http
 * corks a response's first write until the next tick); a run that fails before the image resolved
 * writes nothing; not asked, nothing is written.
 */
import test, { type ExecutionContext } from 'ava';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { nullLogger } from '../../../src/log.js';
import type { ImageSource } from '../../../src/oci/fetcher.js';
import { formatReference, parseReference } from '../../../src/oci/reference.js';
import { DeltaDecoder, DeltaEncoder, type DeltaEvent, type DeltaImage } from '../../../src/protocol/index.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import { IndexerService } from '../../../src/proxy/indexer-service.js';
import { ProxyMetrics } from '../../../src/proxy/metrics.js';
import { imageOfRecord } from '../../../src/proxy/session/delta-plan.js';
import { sendImageFirst } from '../../../src/proxy/session/image-first.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { streamBytes } from '../../helpers/delta-header.js';
import { fakeImage } from '../../helpers/fake-image.js';
import { tempDir } from '../../helpers/tmp.js';

const PLATFORM = 'linux/amd64';
const REF = parseReference('127.0.0.1:1/w:v1');
const IMAGE = { ref: formatReference(REF), platform: PLATFORM };

/** An indexer over a fake registry serving one image of two layers. */
function indexerOf(t: ExecutionContext): IndexerService {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const img = fakeImage('w', 2);
  const client: ImageSource = {
    resolve: async () => img.resolved,
    fetcher: () => ({ fetch: async (desc) => Readable.from([img.blobs.get(desc.digest)!]) }),
  };
  const indexer = new IndexerService({ client, store, cache: new ContentCache({ dir, maxBytes: 64 << 20, store }), metrics: new ProxyMetrics(), logger: nullLogger });
  t.teardown(() => indexer.close());
  return indexer;
}

/** The images of the IMAGE frames in `bytes` (a stream's start), and every event's type. */
function imagesIn(bytes: Buffer): { types: string[]; images: DeltaImage[] } {
  const evs: DeltaEvent[] = new DeltaDecoder().push(bytes);
  const images = evs.flatMap((e) => (e.type === 'image' ? [{ ...e.image, manifest: Buffer.from(e.image.manifest), config: Buffer.from(e.image.config) }] : []));
  return { types: evs.map((e) => e.type), images };
}

/** A promise that never settles (a resolution or a run still under way). */
const never = new Promise<never>(() => undefined);

test('a warm run announces its record before it ends; the IMAGE frame goes out from it', async (t) => {
  const indexer = indexerOf(t);
  const cold = await indexer.image(REF, PLATFORM);
  const order: string[] = [];
  const run = indexer.image(REF, PLATFORM);
  const resolving = indexer.resolution(REF, PLATFORM);
  t.not(resolving, undefined, 'a warm run is in flight');
  void resolving!.then(() => order.push('resolved'));
  let sent!: Promise<boolean>;
  const bytes = await streamBytes(async (enc) => {
    sent = sendImageFirst(resolving, run, enc, IMAGE, () => undefined);
    await run.then(() => order.push('indexed'));
    await sent;
  });
  t.deepEqual(order, ['resolved', 'indexed'], 'the record is announced before the run ends');
  t.true(await sent);
  const { types, images } = imagesIn(bytes);
  t.deepEqual(types, ['image']);
  t.deepEqual(images, [imageOfRecord(cold.record, IMAGE.ref, PLATFORM)]);
});

test('the run ending first: the IMAGE frame goes out from its record', async (t) => {
  const indexer = indexerOf(t);
  const img = await indexer.image(REF, PLATFORM);
  const heads: string[] = [];
  const bytes = await streamBytes(async (enc) => {
    t.true(await sendImageFirst(never, Promise.resolve(img), enc, IMAGE, (d) => heads.push(d)));
  });
  t.deepEqual(heads, [img.record.manifestDigest]);
  t.deepEqual(imagesIn(bytes).images, [imageOfRecord(img.record, IMAGE.ref, PLATFORM)]);
});

test('indexing failing before the image resolved: the error, nothing written (an HTTP error can still go out)', async (t) => {
  const failure = Object.assign(new Error('registry unreachable'), { code: 'SL_ERR_OCI_UNREACHABLE' });
  let started = true;
  const bytes = await streamBytes(async (enc) => {
    await t.throwsAsync(sendImageFirst(never, Promise.reject(failure), enc, IMAGE, () => t.fail('no response head')), { is: failure });
    started = enc.started;
  });
  t.false(started);
  t.is(bytes.length, 0);
});

test('not asked (no image=1): no frame', async (t) => {
  const indexer = indexerOf(t);
  const img = await indexer.image(REF, PLATFORM);
  const bytes = await streamBytes(async (enc) => {
    t.false(await sendImageFirst(undefined, Promise.resolve(img), enc, IMAGE, () => t.fail('no response head')));
  });
  t.is(bytes.length, 0);
});

test('over HTTP, the frame has left the response socket when sendImageFirst resolves (not corked behind the planning)', async (t) => {
  const indexer = indexerOf(t);
  const img = await indexer.image(REF, PLATFORM);
  let corked = -1;
  const srv = createServer((_req, res) => {
    const enc = new DeltaEncoder(res);
    void sendImageFirst(Promise.resolve(img.record), never, enc, IMAGE, () => res.writeHead(200)).then(() => {
      // What follows in a warm delta is synchronous planning: the frame must be out by now.
      corked = res.socket!.writableCorked;
      res.end();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const res = await fetch(`http://127.0.0.1:${(srv.address() as { port: number }).port}/`);
  const { images } = imagesIn(Buffer.from(await res.arrayBuffer()));
  t.deepEqual(images, [imageOfRecord(img.record, IMAGE.ref, PLATFORM)]);
  t.is(corked, 0, 'the response socket is uncorked');
});
