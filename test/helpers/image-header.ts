/**
 * A delta header as a proxy would send it for a real two-layer image (fixtures/image-writer.ts):
 * manifest, config and chain consistent, every layer's TOC in `layers`, every non-empty regular file
 * an identity item. For tests of the worker's header checks and pull.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { ociImage } from '../../fixtures/image-writer.js';
import { buildLayerToc } from '../../src/layers/indexer.js';
import { encodeToc } from '../../src/layers/toc-codec.js';
import type { LayerToc } from '../../src/layers/toc.js';
import type { DeltaHeader } from '../../src/protocol/types.js';

export const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** The header of a small image for `ref`, its TOCs and the items' raw contents (by digest). */
export async function imageHeader(ref: string): Promise<{ header: DeltaHeader; tocs: LayerToc[]; contents: Map<string, Buffer> }> {
  const passwd = Buffer.from('root:x:0:0::/root:/bin/sh\n');
  const app = Buffer.alloc(5000, 7);
  const img = await ociImage([
    { compression: 'gzip', entries: [{ path: 'etc', type: 'dir' }, { path: 'etc/passwd', type: 'reg', content: passwd }] },
    { compression: 'gzip', entries: [{ path: 'bin', type: 'dir' }, { path: 'bin/app', type: 'reg', content: app }] },
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
    ref,
    platform: 'linux/amd64',
    manifestDigest: sha256(manifest),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest,
    config: img.config,
    diffIDs: img.layers.map((l) => l.diffID),
    layers: tocs.map((toc) => ({ diffID: toc.diffID, toc: encodeToc(toc) })),
    items,
    firstItem: 0,
  };
  return { header, tocs, contents: new Map([passwd, app].map((b) => [sha256(b), b])) };
}
