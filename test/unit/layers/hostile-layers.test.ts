/**
 * Issue 14, reading side: hostile layers built byte by byte (test/helpers/hostile-layers.ts) fed to
 * buildLayerToc. Each class ends in SL_ERR_IMAGE_LIMIT naming the limit it hit (or, where the input
 * is legitimate, in a correct TOC), never in an out-of-memory, a hang or a plain Error. Memory and
 * event-loop figures of a real proxy process are in test/e2e/proxy-hostile.test.ts.
 */
import test from 'ava';
import { Readable } from 'node:stream';
import { StarlightError } from '../../../src/errors.js';
import { buildLayerToc } from '../../../src/layers/indexer.js';
import type { LayerLimits } from '../../../src/layers/limits.js';
import { compressLayer, streamToBuffer, writeTarBuffer } from '../../../fixtures/image-writer.js';
import {
  END_OF_ARCHIVE,
  fileEntry,
  gzipRepeat,
  padding,
  paxHeader,
  paxRecord,
  tarHeader,
  zstdRawFrame,
  zstdRleFrame,
} from '../../helpers/hostile-layers.js';

const MIB = 1024 * 1024;

async function limitHit(t: import('ava').ExecutionContext, blob: Buffer, limit: keyof LayerLimits, limits: Partial<LayerLimits> = {}, mediaType?: string): Promise<void> {
  const err = await t.throwsAsync(buildLayerToc(Readable.from([blob]), { layerName: 'sha256:hostile', limits, mediaType }));
  t.true(err instanceof StarlightError, String(err));
  t.is((err as StarlightError).code, 'SL_ERR_IMAGE_LIMIT', err?.message);
  t.is((err as StarlightError).details.limit, limit, err?.message);
  t.regex(err!.message, new RegExp(limit));
}

test("'x' headers piling up before one entry stop at maxExtendedHeaderBytes", async (t) => {
  const x = paxHeader('x', [paxRecord('comment', 'c'.repeat(512 * 1024))]);
  const tar = Buffer.concat([x, x, x, fileEntry('f', Buffer.from('x')), END_OF_ARCHIVE]);
  await limitHit(t, tar, 'maxExtendedHeaderBytes');
});

test("a 'g' header's xattr is shared by the entries that follow, and their total is bounded by maxMetadataBytes", async (t) => {
  const value = Buffer.alloc(60 * 1024, 0x61);
  const g = paxHeader('g', [paxRecord('SCHILY.xattr.user.big', value), paxRecord('comment', 'ignored')]);
  // Few entries: every entry carries the xattr.
  const small = Buffer.concat([g, fileEntry('a', Buffer.from('1')), fileEntry('b', Buffer.from('2')), END_OF_ARCHIVE]);
  const toc = await buildLayerToc(Readable.from([small]));
  t.is(toc.entries.length, 2);
  for (const e of toc.entries) t.is(Buffer.from(e.xattrs!['user.big']!).compare(value), 0);
  // Many entries (each would carry 60 KiB): refused once the layer's metadata passes the bound.
  const entry = fileEntry('same-name');
  const { blob } = gzipRepeat(g, Buffer.concat(Array<Buffer>(64).fill(entry)), 200, END_OF_ARCHIVE);
  await limitHit(t, blob, 'maxMetadataBytes', { maxMetadataBytes: 64 * MIB });
});

test("a 'g' header cannot keep more than maxExtendedHeaderBytes of records in force", async (t) => {
  const g = paxHeader('g', [paxRecord('SCHILY.xattr.user.a', 'v'.repeat(900 * 1024))]);
  const g2 = paxHeader('g', [paxRecord('SCHILY.xattr.user.b', 'v'.repeat(900 * 1024))]);
  await limitHit(t, Buffer.concat([g, g2, fileEntry('f'), END_OF_ARCHIVE]), 'maxExtendedHeaderBytes');
});

test('huge xattrs, huge names, huge link targets and too deep paths hit their limits', async (t) => {
  const xattr = paxHeader('x', [paxRecord('SCHILY.xattr.user.huge', Buffer.alloc(100 * 1024, 1))]);
  await limitHit(t, Buffer.concat([xattr, fileEntry('f'), END_OF_ARCHIVE]), 'maxXattrBytes');
  const name = paxHeader('x', [paxRecord('path', 'n'.repeat(10_000))]);
  await limitHit(t, Buffer.concat([name, fileEntry('f'), END_OF_ARCHIVE]), 'maxPathBytes');
  const link = paxHeader('x', [paxRecord('linkpath', 'l'.repeat(10_000))]);
  await limitHit(t, Buffer.concat([link, tarHeader('s', { type: '2' }), END_OF_ARCHIVE]), 'maxPathBytes');
  const deep = paxHeader('x', [paxRecord('path', 'd/'.repeat(3000) + 'f')]);
  await limitHit(t, Buffer.concat([deep, fileEntry('f'), END_OF_ARCHIVE]), 'maxPathBytes');
});

test('deep paths within PATH_MAX index (and merge) fine', async (t) => {
  const parts: Buffer[] = [];
  for (let i = 0; i < 200; i++) parts.push(paxHeader('x', [paxRecord('path', `${'d/'.repeat(2000)}f${i}`)]), fileEntry('f', Buffer.from(String(i))));
  parts.push(END_OF_ARCHIVE);
  const toc = await buildLayerToc(Readable.from([Buffer.concat(parts)]));
  t.is(toc.entries.length, 200);
  t.is(toc.entries[0]!.path, `${'d/'.repeat(2000)}f0`);
});

test('very many entries (duplicates of one name) stop at maxEntries', async (t) => {
  const entry = fileEntry('dup', Buffer.from('x'));
  const { blob } = gzipRepeat(Buffer.alloc(0), Buffer.concat(Array<Buffer>(1024).fill(entry)), 200, END_OF_ARCHIVE);
  await limitHit(t, blob, 'maxEntries', { maxEntries: 100_000 });
});

test('a directory replaced by a file drops its subtree, listed or implied, in one pass', async (t) => {
  const parts: Buffer[] = [tarHeader('d/', { type: '5', mode: 0o755 })];
  const N = 20_000;
  for (let i = 0; i < N; i++) parts.push(fileEntry(`d/f${i}`));
  parts.push(fileEntry('d/x/y/z', Buffer.from('deep'))); // ancestors d/x, d/x/y not listed
  parts.push(fileEntry('keep', Buffer.from('k')));
  // Alternate file and directory at 'd' many times: each replacement must not scan the layer.
  for (let i = 0; i < N; i++) parts.push(fileEntry('d', Buffer.from('file')), tarHeader('d/', { type: '5', mode: 0o755 }));
  parts.push(fileEntry('d/last', Buffer.from('l')), END_OF_ARCHIVE);
  const toc = await buildLayerToc(Readable.from([Buffer.concat(parts)]));
  t.deepEqual(
    toc.entries.map((e) => e.path),
    ['keep', 'd', 'd/last'],
  );
  t.is(toc.entries[1]!.type, 'dir');
});

test('decompressed size over maxUncompressedBytes is refused while reading', async (t) => {
  const size = 100 * MIB;
  const { blob } = gzipRepeat(tarHeader('big', { size }), Buffer.alloc(MIB), 100, Buffer.concat([padding(size), END_OF_ARCHIVE]));
  await limitHit(t, blob, 'maxUncompressedBytes', { maxUncompressedBytes: 32 * MIB });
});

test('a gzip ratio over maxRatio is refused after the grace bytes', async (t) => {
  const size = 100 * MIB;
  const { blob } = gzipRepeat(tarHeader('zeros', { size }), Buffer.alloc(MIB), 100, Buffer.concat([padding(size), END_OF_ARCHIVE]));
  await limitHit(t, blob, 'maxRatio', { maxRatio: 100 });
});

test('a zstd bomb of RLE blocks is refused by ratio (default limits)', async (t) => {
  const blocks = 8192; // 1 GiB of output from 32 KiB
  const size = blocks * 128 * 1024;
  const blob = Buffer.concat([zstdRawFrame(tarHeader('zeros', { size })), zstdRleFrame(17, blocks), zstdRawFrame(END_OF_ARCHIVE)]);
  await limitHit(t, blob, 'maxRatio', {}, 'application/vnd.oci.image.layer.v1.tar+zstd');
});

test('a zstd frame declaring a giant window is refused before anything is allocated', async (t) => {
  const blob = Buffer.concat([zstdRleFrame(30, 4)]);
  await limitHit(t, blob, 'maxZstdWindowBytes', {}, 'application/vnd.oci.image.layer.v1.tar+zstd');
  // Also when sniffed, and after a first good frame.
  const good = zstdRawFrame(fileEntry('ok', Buffer.from('fine')));
  await limitHit(t, Buffer.concat([good, zstdRleFrame(28, 2)]), 'maxZstdWindowBytes', { maxZstdWindowBytes: 64 * MIB });
});

test('ordinary zstd layers (zstd CLI, several frames) still index with the block-wise feeding', async (t) => {
  const tar = await writeTarBuffer([
    { path: 'a', type: 'reg', content: { size: 3 * MIB + 17, generate: (o, l) => Buffer.from(Array.from({ length: l }, (_, i) => ((o + i) * 7) & 0xff)) } },
    { path: 'b', type: 'reg', content: Buffer.from('b') },
  ]);
  const one = await streamToBuffer(compressLayer(tar, 'zstd'));
  const half = Math.floor(tar.length / 2);
  const two = Buffer.concat([await streamToBuffer(compressLayer(tar.subarray(0, half), 'zstd')), await streamToBuffer(compressLayer(tar.subarray(half), 'zstd'))]);
  for (const blob of [one, two]) {
    const toc = await buildLayerToc(Readable.from((function* () { for (let i = 0; i < blob.length; i += 1000) yield blob.subarray(i, i + 1000); })()));
    t.is(toc.uncompressedSize, tar.length);
    t.deepEqual(toc.entries.map((e) => e.path), ['a', 'b']);
  }
  // A truncated zstd layer is still bad compression, not a limit.
  const err = await t.throwsAsync(buildLayerToc(Readable.from([one.subarray(0, one.length - 10)])));
  t.is((err as StarlightError).code, 'SL_ERR_IMAGE_BAD_COMPRESSION');
});

test('a limit hit inside a file ends the consumer stream with the error (no consumer left waiting)', async (t) => {
  const size = 100 * MIB;
  const { blob } = gzipRepeat(tarHeader('big', { size }), Buffer.alloc(MIB), 100, Buffer.concat([padding(size), END_OF_ARCHIVE]));
  let consumerError: unknown;
  const err = await t.throwsAsync(
    buildLayerToc(Readable.from([blob]), {
      limits: { maxUncompressedBytes: 16 * MIB },
      onFile: async (_e, content) => {
        try {
          for await (const _ of content) void _;
        } catch (e) {
          consumerError = e;
        }
      },
    }),
  );
  t.is((err as StarlightError).code, 'SL_ERR_IMAGE_LIMIT');
  t.is((consumerError as StarlightError | undefined)?.code, 'SL_ERR_IMAGE_LIMIT');
});
