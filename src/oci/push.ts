/**
 * Writing whole images to a registry: blobs then manifest (`pushImage`), or an index over manifests
 * already pushed (`pushIndex`). Used by test fixtures and bench image scripts.
 *
 * Not here: building layers (src/image), transport (client.ts). Layers given as paths are hashed
 * once to get their digest, then streamed.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { RegistryClient } from './client.js';
import { sha256Digest } from './digest.js';
import { type Reference, formatReference, toReference } from './reference.js';
import { MEDIA_TYPES, type Descriptor, type ImageIndex, type ImageManifest, type Platform } from './types.js';

export interface PushLayer {
  /** Layer bytes, or the path of a file holding them. */
  data: Buffer | string;
  mediaType: string;
}

export interface PushImageInput {
  config: Buffer;
  layers: PushLayer[];
  /** Default: OCI manifest. The config's media type follows (OCI or Docker config). */
  manifestMediaType?: string;
  annotations?: Record<string, string>;
}

export interface PushedImage {
  ref: Reference;
  digest: string;
  manifest: ImageManifest;
  manifestBytes: Buffer;
  /** Descriptor of the manifest (for building an index). */
  descriptor: Descriptor;
}

async function fileDescriptor(path: string, mediaType: string): Promise<Descriptor> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  const { size } = await stat(path);
  return { mediaType, digest: `sha256:${hash.digest('hex')}`, size };
}

/** Pushes config and layers (skipping blobs the registry has), then the manifest under the ref's tag. */
export async function pushImage(client: RegistryClient, refIn: Reference | string, input: PushImageInput, signal?: AbortSignal): Promise<PushedImage> {
  const ref = toReference(refIn);
  const manifestMediaType = input.manifestMediaType ?? MEDIA_TYPES.ociManifest;
  const configMediaType = manifestMediaType === MEDIA_TYPES.dockerManifest ? MEDIA_TYPES.dockerConfig : MEDIA_TYPES.ociConfig;
  const config: Descriptor = { mediaType: configMediaType, digest: sha256Digest(input.config), size: input.config.length };
  await client.pushBlob(ref, input.config, config, signal);
  const layers: Descriptor[] = [];
  for (const layer of input.layers) {
    if (Buffer.isBuffer(layer.data)) {
      const desc: Descriptor = { mediaType: layer.mediaType, digest: sha256Digest(layer.data), size: layer.data.length };
      await client.pushBlob(ref, layer.data, desc, signal);
      layers.push(desc);
    } else {
      const path = layer.data;
      const desc = await fileDescriptor(path, layer.mediaType);
      await client.pushBlob(ref, () => createReadStream(path), desc, signal);
      layers.push(desc);
    }
  }
  const manifest: ImageManifest = { schemaVersion: 2, mediaType: manifestMediaType, config, layers };
  if (input.annotations) manifest.annotations = input.annotations;
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const digest = await client.pushManifest(ref, manifestBytes, manifestMediaType, signal);
  return { ref, digest, manifest, manifestBytes, descriptor: { mediaType: manifestMediaType, digest, size: manifestBytes.length } };
}

/** Pushes an index (OCI, or a Docker manifest list when `docker`) over already-pushed manifests. */
export async function pushIndex(
  client: RegistryClient,
  refIn: Reference | string,
  entries: { descriptor: Descriptor; platform: Platform }[],
  opts: { docker?: boolean; signal?: AbortSignal } = {},
): Promise<{ digest: string; bytes: Buffer; ref: string }> {
  const ref = toReference(refIn);
  const mediaType = opts.docker ? MEDIA_TYPES.dockerManifestList : MEDIA_TYPES.ociIndex;
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType,
    manifests: entries.map((e) => ({ ...e.descriptor, platform: e.platform })),
  };
  const bytes = Buffer.from(JSON.stringify(index));
  const digest = await client.pushManifest(ref, bytes, mediaType, opts.signal);
  return { digest, bytes, ref: formatReference(ref) };
}
