/**
 * Issue 14, TOC version 2: the indexer records per-chunk digests of large files; the codec round-trips
 * them, still reads version 1 TOCs (no chunks), and refuses chunk digests that do not fit the size.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { Readable } from 'node:stream';
import { buildLayerToc } from '../../../src/layers/indexer.js';
import { decodeToc, encodeToc, TOC_MAGIC } from '../../../src/layers/toc-codec.js';
import { CHUNK_BYTES, CHUNK_DIGEST_BYTES } from '../../../src/layers/toc.js';
import { ociImage } from '../../../fixtures/image-writer.js';

test('large files get one sha256 per 1 MiB chunk (last one shorter); small files none; round-trips', async (t) => {
  const big = randomBytes(2 * CHUNK_BYTES + 1000);
  const img = await ociImage([{ compression: 'gzip', entries: [{ path: 'big', type: 'reg', content: big }, { path: 'small', type: 'reg', content: randomBytes(CHUNK_BYTES) }] }]);
  const toc = await buildLayerToc(Readable.from([img.layers[0]!.data]), { mediaType: img.layers[0]!.mediaType });
  const e = toc.entries.find((x) => x.path === 'big')!;
  const want = Buffer.concat([0, 1, 2].map((i) => createHash('sha256').update(big.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES)).digest()));
  t.deepEqual(Buffer.from(e.chunks!), want);
  t.is(toc.entries.find((x) => x.path === 'small')!.chunks, undefined, 'a file of exactly one chunk has none');
  t.deepEqual(decodeToc(encodeToc(toc)), toc);
});

test('a version 1 TOC (15 fields per entry) still decodes, without chunks', (t) => {
  const p = new Packr({ useRecords: false });
  const row = ['f', 'reg', 0o644, 0, 0, 5, 1, null, null, null, null, 'sha256:' + 'b'.repeat(64), 0, 512, null];
  const toc = decodeToc(p.pack([TOC_MAGIC, 1, 'sha256:' + 'a'.repeat(64), 1024, [row]]));
  t.is(toc.version, 1);
  t.is(toc.entries[0]!.digest, 'sha256:' + 'b'.repeat(64));
  t.is(toc.entries[0]!.chunks, undefined);
});

test('chunk digests that do not fit the file size are SL_ERR_IMAGE_BAD_TOC', (t) => {
  const p = new Packr({ useRecords: false });
  const row = ['f', 'reg', 0o644, 0, 0, 3 * CHUNK_BYTES, 1, null, null, null, null, 'sha256:' + 'b'.repeat(64), 0, 512, null, new Uint8Array(2 * CHUNK_DIGEST_BYTES)];
  t.throws(() => decodeToc(p.pack([TOC_MAGIC, 2, 'sha256:' + 'a'.repeat(64), 1024, [row]])), { code: 'SL_ERR_IMAGE_BAD_TOC' } as never);
});
