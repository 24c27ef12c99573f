import test from 'ava';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { StarlightError } from '../../../src/errors.js';
import { buildLayerToc } from '../../../src/layers/indexer.js';
import type { TocEntry } from '../../../src/layers/toc.js';
import { compressLayer, streamToBuffer, writeTarBuffer, type WriterEntry } from '../../../fixtures/image-writer.js';
import { SAMPLE_LAYER, digestMismatchAtEnd, feed } from '../../helpers/layer-samples.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const byPath = (es: TocEntry[]) => Object.fromEntries(es.map((e) => [e.path, e]));
const blob = async (tar: Buffer, c: 'gzip' | 'zstd' | 'none') => streamToBuffer(compressLayer(tar, c));

const layer = SAMPLE_LAYER;

test('diffID, size, digests and offsets for gzip, zstd and plain layers (sniffed and by media type)', async (t) => {
  const tar = await writeTarBuffer(layer);
  for (const c of ['gzip', 'zstd', 'none'] as const) {
    const b = await blob(tar, c);
    for (const mediaType of [undefined, `application/vnd.oci.image.layer.v1.tar${c === 'none' ? '' : `+${c}`}`]) {
      const toc = await buildLayerToc(feed(b), { mediaType, expectedDiffID: sha(tar) });
      t.is(toc.diffID, sha(tar), c);
      t.is(toc.uncompressedSize, tar.length);
      const e = byPath(toc.entries);
      t.deepEqual(Object.keys(e), ['', 'a', 'a/f', 'a/empty', 'a/h', 'a/gone', 'o', 'big']);
      t.is(e['a/f']!.digest, sha(Buffer.from('hello')));
      t.is(tar.subarray(e['a/f']!.offset!, e['a/f']!.offset! + 5).toString(), 'hello');
      t.is(e['a/empty']!.digest, sha(Buffer.alloc(0)));
      t.is(e['big']!.digest, sha(Buffer.alloc(3_000_001, 0x61)));
      t.like(e['a/h'], { type: 'hardlink', linkname: 'a/f', digest: sha(Buffer.from('hello')), size: 5 });
      t.like(e['a/gone'], { type: 'whiteout' });
      t.like(e['o'], { type: 'dir', opaque: true, mode: 0o700, mtime: 5 });
      t.falsy(e['o']!.implied); // the explicit dir entry that came after the marker replaced the defaults
    }
  }
});

test('an opaque marker without a dir entry creates an implied dir; parents are not invented', async (t) => {
  const toc = await buildLayerToc(Readable.from([await writeTarBuffer([{ path: 'x/y/.wh..wh..opq', type: 'reg' }, { path: 'p/q/r', type: 'reg' }])]));
  t.deepEqual(toc.entries.map((e) => [e.path, e.type, e.opaque ?? false, e.implied ?? false]), [
    ['x/y', 'dir', true, true],
    ['p/q/r', 'reg', false, false],
  ]);
});

test('later duplicates replace earlier ones; a file replacing a dir drops its sub-entries', async (t) => {
  const tar = await writeTarBuffer([
    { path: 'd', type: 'dir' },
    { path: 'd/x', type: 'reg', content: Buffer.from('1') },
    { path: 'f', type: 'reg', content: Buffer.from('first') },
    { path: 'f', type: 'reg', content: Buffer.from('second') },
    { path: 'keep', type: 'hardlink', linkname: 'f' },
    { path: 'f', type: 'reg', content: Buffer.from('third') },
    { path: 'd', type: 'reg', content: Buffer.from('now a file') },
  ]);
  const toc = await buildLayerToc(Readable.from([tar]));
  t.deepEqual(toc.entries.map((e) => e.path), ['keep', 'f', 'd']);
  const e = byPath(toc.entries);
  t.is(e['keep']!.digest, sha(Buffer.from('second'))); // the link shares the inode it was made from
  t.is(e['f']!.digest, sha(Buffer.from('third')));
});

test('expectedDiffID mismatch is SL_ERR_IMAGE_DIFFID_MISMATCH', async (t) => {
  const tar = await writeTarBuffer(layer);
  await t.throwsAsync(buildLayerToc(Readable.from([tar]), { expectedDiffID: sha(Buffer.from('other')) }), { code: 'SL_ERR_IMAGE_DIFFID_MISMATCH' });
});

test('truncated or corrupt gzip and zstd are SL_ERR_IMAGE_BAD_COMPRESSION', async (t) => {
  const tar = await writeTarBuffer(layer);
  for (const c of ['gzip', 'zstd'] as const) {
    const b = await blob(tar, c);
    // Cut inside the compressed data, and cut only the trailer (the tar itself may be complete then).
    for (const cut of [Math.floor(b.length / 2), b.length - 4]) {
      await t.throwsAsync(buildLayerToc(feed(b.subarray(0, cut))), { code: 'SL_ERR_IMAGE_BAD_COMPRESSION' }, `${c} cut at ${cut}`);
    }
    const corrupt = Buffer.from(b);
    for (let i = 20; i < 60; i++) corrupt[i] = corrupt[i]! ^ 0x5a;
    await t.throwsAsync(buildLayerToc(feed(corrupt)), { code: 'SL_ERR_IMAGE_BAD_COMPRESSION' }, `${c} corrupt`);
  }
});

test('path escapes in names, hardlink targets and whiteouts are SL_ERR_IMAGE_PATH_ESCAPE', async (t) => {
  for (const entries of [
    [{ path: '../evil', type: 'reg' }],
    [{ path: 'a/../../evil', type: 'dir' }],
    [{ path: 'ok', type: 'hardlink', linkname: '../../etc/shadow' }],
    [{ path: '.wh...', type: 'reg' }],
  ] as WriterEntry[][]) {
    const err = await t.throwsAsync(buildLayerToc(Readable.from([await writeTarBuffer(entries)]), { layerName: 'sha256:l1' }), { code: 'SL_ERR_IMAGE_PATH_ESCAPE' });
    t.is((err as unknown as { details: { layer?: string } }).details.layer, 'sha256:l1');
  }
});

test('onFile gets each file with backpressure; unread content is discarded; rejections abort', async (t) => {
  const tar = await writeTarBuffer([
    { path: 'slow', type: 'reg', content: { size: 5_000_000, fill: 7 } },
    { path: 'ignored', type: 'reg', content: { size: 2_000_000, fill: 8 } },
    { path: 'small', type: 'reg', content: Buffer.from('s') },
  ]);
  const got: Record<string, string> = {};
  const toc = await buildLayerToc(feed(tar, 65536), {
    onFile: async (e, content) => {
      if (e.path === 'ignored') return;
      const h = createHash('sha256');
      for await (const c of content) {
        h.update(c as Buffer);
        if (e.path === 'slow') await sleep(1);
      }
      got[e.path] = `sha256:${h.digest('hex')}`;
    },
  });
  const e = byPath(toc.entries);
  t.is(got["slow"], e["slow"]!.digest!);
  t.is(got["small"], e["small"]!.digest!);
  t.is(e['ignored']!.digest, sha(Buffer.alloc(2_000_000, 8)));
  await t.throwsAsync(
    buildLayerToc(feed(tar), { onFile: async () => Promise.reject(new Error('disk full')) }),
    { message: 'disk full' },
  );
});

test('an aborted signal cancels', async (t) => {
  const tar = await writeTarBuffer(layer);
  await t.throwsAsync(buildLayerToc(feed(tar), { signal: AbortSignal.abort() }), { code: 'SL_ERR_CANCELED' });
});

test("a corrupt blob reports the source's own error (digest check at its end), not the gzip/tar error it caused", async (t) => {
  const tar = await writeTarBuffer(layer);
  const good = await blob(tar, 'gzip');
  const bad = Buffer.from(good);
  for (const i of [30, 300, 3000]) bad[i] = bad[i]! ^ 0x5a;
  const verifying = digestMismatchAtEnd(bad);
  const err = await t.throwsAsync(buildLayerToc(verifying, { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }));
  t.is((err as StarlightError).code, 'SL_ERR_OCI_DIGEST_MISMATCH');
  t.true(verifying.destroyed);
  // a source that ends cleanly keeps the gzip/tar verdict
  const err2 = await t.throwsAsync(buildLayerToc(feed(bad), { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }));
  t.true(['SL_ERR_IMAGE_BAD_COMPRESSION', 'SL_ERR_IMAGE_BAD_TAR'].includes((err2 as StarlightError).code));
});
