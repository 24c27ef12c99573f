/**
 * Every fixture image (test/helpers/fixtures.ts: hardlinks, whiteouts, opaque dirs, xattrs, devices,
 * gzip/zstd/uncompressed layers, a 64 MiB file) through a real registry and `starlight proxy`: the
 * header's TOCs equal the TOCs built locally from the same blobs, the items are exactly the distinct
 * non-empty contents visible in the merged tree, and every item's bytes hash to its digest.
 */
import test from 'ava';
import { Readable } from 'node:stream';
import { buildLayerToc } from '../../src/layers/indexer.js';
import { mergeLayers } from '../../src/layers/merge.js';
import { decodeToc } from '../../src/layers/toc-codec.js';
import { ociImage } from '../../fixtures/image-writer.js';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage } from '../../fixtures/push-image.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { fetchDelta, startProxyProcess } from './proxy-support.js';

test('fixture images: header TOCs match local indexing; all visible contents arrive verified', async (t) => {
  const reg = await startRegistry(t);
  const p = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'starlight-proxy-')]);
  const client = new RegistryClient();
  for (const fx of FIXTURES) {
    const img = await ociImage(fx.layers);
    await pushImage(client, `${reg.host}/fx-${fx.name}:v1`, { config: img.config, layers: img.layers.map((l) => ({ data: l.data, mediaType: l.mediaType })) });
    const local = await Promise.all(img.layers.map((l) => buildLayerToc(Readable.from([l.data]), { mediaType: l.mediaType, expectedDiffID: l.diffID })));
    const d = await fetchDelta(p.url, { to: `${reg.host}/fx-${fx.name}:v1` });
    t.deepEqual(d.header.diffIDs, img.layers.map((l) => l.diffID), fx.name);
    t.deepEqual(d.header.layers.map((l) => decodeToc(l.toc)), local, `${fx.name}: TOCs`);
    const merged = mergeLayers(local);
    const visible = new Set(merged.entries.filter((e) => (e.type === 'reg' || e.type === 'hardlink') && e.size > 0).map((e) => e.digest!));
    t.deepEqual(d.header.items.map((i) => i.digest).sort(), [...visible].sort(), `${fx.name}: items`);
    t.is(d.contents.size, visible.size, `${fx.name}: every item verified`);
  }
});
