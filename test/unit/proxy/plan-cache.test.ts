/**
 * PlanCache with real parts (metadata store, content cache, priority service): a repeated request
 * reuses the plan (same item table, header bytes encoded once) and gets the same header as a fresh
 * planDelta(); a trace upload, a content evicted from the cache, or a `have` image indexed since
 * each make the next request plan again, and the new header says what a fresh plan says.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { brotliDecompressSync } from 'node:zlib';
import { tempDir } from '../../helpers/tmp.js';
import { encodeToc } from '../../../src/layers/toc-codec.js';
import { TOC_VERSION, type LayerToc, type TocEntry } from '../../../src/layers/toc.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import type { IndexedImage, IndexerService } from '../../../src/proxy/indexer-service.js';
import { PriorityService } from '../../../src/proxy/priority-service.js';
import { planDelta } from '../../../src/proxy/session/delta-plan.js';
import { PlanCache } from '../../../src/proxy/session/plan-cache.js';
import { TRACE_UPLOAD_VERSION, type TraceUploadBody } from '../../../src/protocol/traces.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';

const dg = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

function entry(path: string, content: Buffer): TocEntry {
  return { path, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: content.length, mtime: 0, digest: dg(content) } as TocEntry;
}

test('a plan is reused until a trace upload, an eviction or a newly known `have` changes it', async (t) => {
  const dir = tempDir(t, 'starlight-plans-');
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 64 * 1024 * 1024, store });
  const contents = Array.from({ length: 6 }, (_, i) => Buffer.concat([Buffer.from(`file ${i}\n`), randomBytes(2000)]));
  const toc: LayerToc = { version: TOC_VERSION, diffID: dg('layer'), uncompressedSize: 1, entries: contents.map((c, i) => entry(`usr/lib/f${i}`, c)) };
  await store.putLayerIndex(
    { diffID: toc.diffID, layerDigest: dg('blob'), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', compressedSize: 1, uncompressedSize: 1, repository: 'reg/app', toc: encodeToc(toc) },
    contents.map((c) => ({ digest: dg(c), size: c.length, sourceDiffID: toc.diffID })),
  );
  for (const c of contents) await cache.put(Readable.from([c]), c.length, toc.diffID);
  const tocs = new Map([[toc.diffID, toc]]);
  const indexer = { toc: (id: string) => tocs.get(id) } as unknown as IndexerService;
  const priority = new PriorityService(store, 'reg');
  const deps = { store, cache, indexer, priority };
  const manifest = Buffer.from('{"layers":[]}');
  const img: IndexedImage = {
    ref: 'reg/app:v1',
    platform: 'linux/amd64',
    record: { manifestDigest: dg(manifest), mediaType: 'application/vnd.oci.image.manifest.v1+json', manifest, config: Buffer.from('{}'), repository: 'reg/app', diffIDs: [toc.diffID] },
    config: {} as IndexedImage['config'],
    tocs: [toc],
  };
  const plans = new PlanCache();
  const fresh = async (have: string[] = []): Promise<unknown> => (await planDelta(deps, img, { have, from: 0 })).header;

  const a = await plans.plan(deps, img, { have: [], from: 0 });
  const b = await plans.plan(deps, img, { have: [], from: 0 });
  t.is(plans.misses, 1);
  t.is(plans.hits, 1);
  t.is(a.header.items, b.header.items, 'one item table');
  t.is(a.headerBytes, b.headerBytes, 'encoded once');
  t.deepEqual(b.header, await fresh());
  // tocs=br: the same plan, its TOCs compressed (once per diffID), encoded apart from the plain header.
  const br = await plans.plan(deps, img, { have: [], from: 0, tocs: 'br' });
  t.is(plans.misses, 1, 'the TOC encoding is per request, not per plan');
  t.is(br.header.items, a.header.items);
  t.is(br.header.layers[0]!.encoding, 'br');
  t.deepEqual(brotliDecompressSync(br.header.layers[0]!.toc), encodeToc(toc));
  t.true(br.header.layers[0]!.toc.length < encodeToc(toc).length);
  t.not(br.headerBytes, a.headerBytes);
  t.is(a.header.layers[0]!.encoding, undefined, 'the plain header is unchanged');
  t.is((await plans.plan(deps, img, { have: [], from: 0, tocs: 'br' })).header.layers[0]!.toc, br.header.layers[0]!.toc, 'compressed once');
  const resumed = await plans.plan(deps, img, { have: [], from: 4 });
  t.is(resumed.header.firstItem, 4);
  t.is(plans.misses, 1, 'a resume reuses the plan');

  // A trace ranks the last file first: the next request plans again, in the new order.
  const last = toc.entries[5]!;
  const upload: TraceUploadBody = {
    version: TRACE_UPLOAD_VERSION,
    ref: img.ref,
    platform: img.platform,
    manifestDigest: img.record.manifestDigest,
    traces: [{ startedAt: 0, windowMs: 1000, entries: [{ path: last.path, digest: last.digest } as TraceUploadBody['traces'][number]['entries'][number]] }],
  };
  priority.record(upload, Date.now());
  const traced = await plans.plan(deps, img, { have: [], from: 0 });
  t.is(plans.misses, 2);
  t.is(traced.header.items[0]!.digest, last.digest!);
  t.deepEqual(traced.header, await fresh());

  // An item evicted from the cache is announced from the store record: planned again.
  for (let i = 0; i < 2; i++) await cache.put(Readable.from([randomBytes(40 * 1024 * 1024)]), 40 * 1024 * 1024, toc.diffID);
  t.false(cache.has(last.digest!));
  const evicted = await plans.plan(deps, img, { have: [], from: 0 });
  t.is(plans.misses, 3);
  t.deepEqual(evicted.header, await fresh());
  t.deepEqual((await plans.plan(deps, img, { have: [], from: 0 })).header, evicted.header);
  t.is(plans.misses, 3, 'no cache change since: reused without re-checking its items');
  // Cached again: announced from the cache, planned again.
  await cache.put(Readable.from([contents[contents.length - 1]!]), contents[contents.length - 1]!.length, toc.diffID);
  t.true(cache.has(last.digest!));
  await plans.plan(deps, img, { have: [], from: 0 });
  t.is(plans.misses, 4);

  // `have` = a layer the proxy does not know yet: ignored; once indexed, everything is deduplicated.
  const other: LayerToc = { version: TOC_VERSION, diffID: dg('other'), uncompressedSize: 1, entries: contents.map((c, i) => entry(`opt/f${i}`, c)) };
  const before = await plans.plan(deps, img, { have: [other.diffID], from: 0 });
  t.is(before.header.items.length, contents.length);
  tocs.set(other.diffID, other);
  const after = await plans.plan(deps, img, { have: [other.diffID], from: 0 });
  t.is(after.header.items.length, 0);
  t.deepEqual(after.header, await fresh([other.diffID]));
});
