/**
 * Issue 14: the worker checks a delta header against what it asked for before storing or showing
 * anything of it. Each case builds a real image (fixtures/image-writer.ts), a header as the proxy would
 * send it, then breaks one thing the way a buggy proxy or a man in the middle would.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { buildLayerToc } from '../../../src/layers/indexer.js';
import type { LayerToc } from '../../../src/layers/toc.js';
import { ociImage } from '../../../fixtures/image-writer.js';
import type { DeltaHeader } from '../../../src/protocol/types.js';
import { checkHeaderImage, checkHeaderItems } from '../../../src/worker/pull/header-check.js';

const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const REF = '127.0.0.1:5000/hc/app:v1';

async function fixture(): Promise<{ header: DeltaHeader; tocs: LayerToc[] }> {
  const img = await ociImage([
    { compression: 'gzip', entries: [{ path: 'etc', type: 'dir' }, { path: 'etc/passwd', type: 'reg', content: Buffer.from('root:x:0:0::/root:/bin/sh\n') }] },
    { compression: 'gzip', entries: [{ path: 'bin', type: 'dir' }, { path: 'bin/app', type: 'reg', content: Buffer.alloc(5000, 7) }] },
  ]);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: img.configDigest, size: img.config.length },
      layers: img.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }),
  );
  const tocs: LayerToc[] = [];
  for (const l of img.layers) tocs.push(await buildLayerToc(Readable.from([l.data]), { mediaType: l.mediaType, expectedDiffID: l.diffID }));
  const items = tocs.flatMap((t) => t.entries.filter((e) => e.type === 'reg' && e.size > 0).map((e) => ({ digest: e.digest!, size: e.size, encodedSize: e.size, encoding: 'identity' as const })));
  const header: DeltaHeader = {
    ref: REF,
    platform: 'linux/amd64',
    manifestDigest: sha256(manifest),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest,
    config: img.config,
    diffIDs: img.layers.map((l) => l.diffID),
    layers: [],
    items,
    firstItem: 0,
  };
  return { header, tocs };
}

test('a header that matches its image passes', async (t) => {
  const { header, tocs } = await fixture();
  t.notThrows(() => checkHeaderImage(header, REF));
  t.notThrows(() => checkHeaderItems(header, tocs, REF));
});

const broken: [string, (h: DeltaHeader) => DeltaHeader][] = [
  ['manifest bytes changed (digest kept)', (h) => ({ ...h, manifest: Buffer.from(Buffer.from(h.manifest).toString().replace('schemaVersion', 'schemaversion')) })],
  ['manifest digest of another image', (h) => ({ ...h, manifestDigest: sha256(Buffer.from('other')) })],
  ['config changed (manifest kept)', (h) => ({ ...h, config: Buffer.from(Buffer.from(h.config).toString().replace('amd64', 'arm64')) })],
  ['a diffID swapped in the chain', (h) => ({ ...h, diffIDs: [h.diffIDs[0]!, sha256(Buffer.from('x'))] })],
  ['a layer dropped from the chain', (h) => ({ ...h, diffIDs: h.diffIDs.slice(0, 1) })],
];

for (const [name, breakIt] of broken) {
  test(`refused: ${name}`, async (t) => {
    const { header } = await fixture();
    t.throws(() => checkHeaderImage(breakIt(header), REF), { code: 'SL_ERR_IMAGE_MISMATCH' } as never);
  });
}

test('refused: an item in no TOC of the chain, or with another size than its TOC says', async (t) => {
  const { header, tocs } = await fixture();
  const foreign = { ...header, items: [...header.items, { digest: sha256(Buffer.from('evil')), size: 4, encodedSize: 4, encoding: 'identity' as const }] };
  t.throws(() => checkHeaderItems(foreign, tocs, REF), { code: 'SL_ERR_IMAGE_MISMATCH' } as never);
  const bigger = { ...header, items: header.items.map((it, i) => (i === 0 ? { ...it, size: it.size * 1000 } : it)) };
  t.throws(() => checkHeaderItems(bigger, tocs, REF), { code: 'SL_ERR_IMAGE_MISMATCH' } as never);
});
