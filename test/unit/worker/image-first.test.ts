/**
 * The worker's side of the IMAGE frame (docs/protocol.md "Image first"): a pull asks `image=1`; the
 * image a cold proxy names before its header is checked and handed to onImageChecked at once, before
 * the header exists (so containerd's records start while the proxy indexes), and once only; a header
 * of another image after it fails the pull; an IMAGE frame that does not check out fails it before
 * onImageChecked.
 */
import test, { type ExecutionContext } from 'ava';
import { createServer, type ServerResponse } from 'node:http';
import { DeltaEncoder, PREAMBLE_BYTES, headerBytes } from '../../../src/protocol/index.js';
import { imageFrame, imageOf, preamble } from '../../../src/protocol/frames.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { Puller } from '../../../src/worker/pull/puller.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { imageHeader, sha256 } from '../../helpers/image-header.js';
import { tempDir } from '../../helpers/tmp.js';

const REF = '127.0.0.1:5000/if/app:v1';

/**
 * A fake proxy: each GET /v1/delta gets `serve(enc, res)`; resolves with its URL and the queries seen.
 */
async function fakeProxy(t: ExecutionContext, serve: (enc: DeltaEncoder, res: ServerResponse) => Promise<void>): Promise<{ url: string; queries: URLSearchParams[] }> {
  const queries: URLSearchParams[] = [];
  const srv = createServer((req, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/v1/delta') return void res.writeHead(204).end();
    queries.push(u.searchParams);
    res.writeHead(200, { 'content-type': 'application/vnd.starlight.delta.v1' });
    const enc = new DeltaEncoder(res);
    serve(enc, res).then(
      () => res.end(),
      () => res.destroy(),
    );
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return { url: `http://127.0.0.1:${(srv.address() as { port: number }).port}`, queries };
}

async function puller(t: ExecutionContext, url: string): Promise<Puller> {
  const client = new ProxyClient({ url });
  t.teardown(() => client.close());
  const tracker = new ContentTracker(await new LocalContentStore(tempDir(t)).open());
  return new Puller({ client, tracker, layers: await new LayerStore(tempDir(t)).open(), lowerTreesDelayMs: -1 });
}


test('the IMAGE frame reaches onImageChecked before the header exists, once; the pull asks image=1', async (t) => {
  const { header, contents } = await imageHeader(REF);
  let checked!: () => void;
  const imageChecked = new Promise<void>((r) => (checked = r));
  const px = await fakeProxy(t, async (enc) => {
    await enc.writeImage(imageOf(header));
    // The header waits until the worker has acted on the image (no timing involved).
    await imageChecked;
    await enc.writeHeader(header);
    for (const [i, it] of header.items.entries()) await enc.writeItem(i, contents.get(it.digest)!);
    await enc.writeEnd();
  });
  const calls: string[] = [];
  const pulled = await (await puller(t, px.url)).pull(REF, undefined, {
    onImageChecked: (im) => {
      calls.push(im.manifestDigest);
      checked();
    },
  });
  t.teardown(() => pulled.receiver.close());
  t.deepEqual(calls, [header.manifestDigest], 'called once, with the IMAGE frame');
  t.is(px.queries[0]!.get('image'), '1');
  t.is(px.queries[0]!.get('early'), null, 'early items are retired: never asked');
  await pulled.receiver.done;
});

test('a header of another image than the IMAGE frame named fails the pull', async (t) => {
  const { header } = await imageHeader(REF);
  // Self-consistent, but another manifest (a key order the registry might serve).
  const otherManifest = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(header.manifest).toString()), annotations: { a: 'b' } }));
  const other = { ...imageOf(header), manifest: otherManifest, manifestDigest: sha256(otherManifest) };
  // Written raw: this proxy's encoder refuses a header of another image after an IMAGE frame.
  const px = await fakeProxy(t, async (_enc, res) => {
    res.write(Buffer.concat([preamble(), imageFrame(other), headerBytes(header).subarray(PREAMBLE_BYTES)]));
  });
  const calls: string[] = [];
  await t.throwsAsync((await puller(t, px.url)).pull(REF, undefined, { onImageChecked: (im) => calls.push(im.manifestDigest) }), { code: 'SL_ERR_PROTOCOL_MALFORMED' });
  t.deepEqual(calls, [other.manifestDigest]);
});

test('an IMAGE frame whose manifest does not hash to its digest fails the pull before onImageChecked', async (t) => {
  const { header } = await imageHeader(REF);
  const px = await fakeProxy(t, async (enc) => {
    await enc.writeImage({ ...imageOf(header), manifestDigest: sha256(Buffer.from('another')) });
    await enc.writeHeader(header);
  });
  const calls: string[] = [];
  await t.throwsAsync((await puller(t, px.url)).pull(REF, undefined, { onImageChecked: (im) => calls.push(im.manifestDigest) }), { code: 'SL_ERR_IMAGE_MISMATCH' });
  t.deepEqual(calls, []);
});
