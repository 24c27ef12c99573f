/**
 * Delta headers for tests: a minimal one around `items` for protocol and session tests (no layers),
 * one that passes the worker's header check around made-up TOCs (puller tests), a stream's bytes,
 * and a proxy stand-in that answers every delta request with them.
 */
import type { ExecutionContext } from 'ava';
import { createServer } from 'node:http';
import { PassThrough } from 'node:stream';
import { encodeToc } from '../../src/layers/toc-codec.js';
import { TOC_VERSION, type LayerToc, type TocEntry } from '../../src/layers/toc.js';
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

/** A layer of `files` regular files under dir `name` (content digests made up: nothing is streamed). */
export function madeUpLayer(name: string, files: number): LayerToc {
  const entries: TocEntry[] = [{ path: name, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 }];
  for (let i = 0; i < files; i++) {
    entries.push({ path: `${name}/f${i}`, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 0, digest: sha256Digest(Buffer.from(`${name}${i}`)) });
  }
  return { version: TOC_VERSION, diffID: sha256Digest(Buffer.from(`layer ${name}`)), uncompressedSize: 0, entries };
}

/** A layer whose regular files f0, f1, … at its root hold `contents` (real digests: a stream can carry them). */
export function layerOfFiles(name: string, contents: readonly Buffer[]): LayerToc {
  const entries: TocEntry[] = contents.map((c, i) => ({ path: `f${i}`, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: c.length, mtime: 0, digest: sha256Digest(c) }));
  return { ...madeUpLayer(name, 0), entries };
}

/**
 * A header that passes checkHeaderImage: manifest and config consistent with the chain of `tocs`
 * (the manifest names `ref`, so images of the same chain differ); every TOC sent, no items.
 */
export function checkedHeader(tocs: LayerToc[], ref = 'localhost:5000/app:v1'): DeltaHeader {
  const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: tocs.map((t) => t.diffID) } }));
  const manifest = Buffer.from(JSON.stringify({ ref, config: { digest: sha256Digest(config) }, layers: tocs.map((t) => ({ digest: t.diffID })) }));
  return {
    ref,
    platform: 'linux/amd64',
    manifestDigest: sha256Digest(manifest),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest,
    config,
    diffIDs: tocs.map((t) => t.diffID),
    layers: tocs.map((t) => ({ diffID: t.diffID, toc: encodeToc(t) })),
    items: [],
    firstItem: 0,
  };
}

/**
 * An HTTP server on 127.0.0.1:0 answering every `/v1/delta` request with `h`'s stream (header, the
 * bytes of its items from `contents`, END); its URL. Closed at teardown.
 */
export async function deltaServer(t: ExecutionContext, h: DeltaHeader, contents: readonly Buffer[] = []): Promise<string> {
  const body = await streamBytes(async (enc) => {
    await enc.writeHeader(h);
    for (const [i, c] of contents.entries()) await enc.writeItem(i, c);
    await enc.writeEnd();
  });
  const srv = createServer((req, res) => {
    if (!(req.url ?? '').startsWith('/v1/delta')) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/vnd.starlight.delta.v1' }).end(body);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
}
