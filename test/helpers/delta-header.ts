/** A minimal delta header around `items` for protocol and session tests (no layers); a stream's bytes. */
import { PassThrough } from 'node:stream';
import { DeltaEncoder, type ContentItem, type DeltaHeader } from '../../src/protocol/index.js';
import { sha256Digest } from '../../src/oci/digest.js';

/** Identity items of `contents`, in order. */
export function identityItems(contents: readonly Buffer[]): ContentItem[] {
  return contents.map((c) => ({ digest: sha256Digest(c), size: c.length, encodedSize: c.length, encoding: 'identity' }));
}

export function deltaHeader(items: ContentItem[], firstItem = 0): DeltaHeader {
  return {
    ref: 'localhost:5000/app:v1',
    platform: 'linux/amd64',
    manifestDigest: sha256Digest(Buffer.from('m')),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest: Buffer.from('{}'),
    config: Buffer.from('{}'),
    diffIDs: [],
    layers: [],
    items,
    firstItem,
  };
}

/** The bytes a DeltaEncoder writes while `write` runs (a stream read whole). */
export async function streamBytes(write: (enc: DeltaEncoder) => Promise<void>): Promise<Buffer> {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (b: Buffer) => parts.push(b));
  const enc = new DeltaEncoder(out);
  await write(enc);
  out.end();
  await new Promise((r) => out.on('end', r));
  return Buffer.concat(parts);
}
