/**
 * A small image for IndexerService tests behind a fake ImageSource: `layers` one-file gzip layers
 * named after `name`, the resolved manifest and config a registry would answer, and the blobs by digest.
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { ResolvedImage } from '../../src/oci/client.js';
import { parseReference } from '../../src/oci/reference.js';
import type { Descriptor } from '../../src/oci/types.js';
import { END_OF_ARCHIVE, fileEntry } from './hostile-layers.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface FakeImage {
  resolved: ResolvedImage;
  /** Layer blobs by digest. */
  blobs: Map<string, Buffer>;
}

/** The image `127.0.0.1:1/<name>:v1` of `layers` layers, file `<name>/f<i>` in layer i. */
export function fakeImage(name: string, layers: number): FakeImage {
  const blobs = new Map<string, Buffer>();
  const descs: Descriptor[] = [];
  const diffIDs: string[] = [];
  for (let i = 0; i < layers; i++) {
    const tar = Buffer.concat([fileEntry(`${name}/f${i}`, Buffer.from(`${name} layer ${i}\n`)), END_OF_ARCHIVE]);
    const gz = gzipSync(tar);
    blobs.set(dg(gz), gz);
    descs.push({ mediaType: GZIP, digest: dg(gz), size: gz.length });
    diffIDs.push(dg(tar));
  }
  const config = { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIDs } };
  const configBytes = Buffer.from(JSON.stringify(config));
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: dg(configBytes), size: configBytes.length }, layers: descs };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  return {
    blobs,
    resolved: {
      ref: parseReference(`127.0.0.1:1/${name}:v1`),
      platform: { os: 'linux', architecture: 'amd64' },
      manifestDigest: dg(manifestBytes),
      manifestMediaType: manifest.mediaType,
      manifestBytes,
      manifest,
      configBytes,
      config,
    } as unknown as ResolvedImage,
  };
}
