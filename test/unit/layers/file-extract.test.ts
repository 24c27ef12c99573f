/**
 * Issue 14, files too large for the proxy's cache are read back out of their layer blob
 * (src/layers/file-extract.ts): the right bytes at the TOC entry's offset, handed on only in checked
 * 1 MiB chunks, so a blob that no longer matches its index yields an error and no wrong byte.
 */
import test from 'ava';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { buildLayerToc } from '../../../src/layers/indexer.js';
import { extractLayerFile } from '../../../src/layers/file-extract.js';
import { CHUNK_BYTES, type TocEntry } from '../../../src/layers/toc.js';
import { END_OF_ARCHIVE, fileEntry } from '../../helpers/hostile-layers.js';

const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** Deterministic content: byte i is a function of i (so a shifted read is caught). */
function content(n: number, salt: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >>> 10) * 7 + salt) & 0xff;
  return b;
}

const small = content(3000, 1);
const big = content(2 * CHUNK_BYTES + 12345, 2);
const tar = Buffer.concat([fileEntry('a/small', small), fileEntry('a/big.bin', big), fileEntry('z', content(700, 3)), END_OF_ARCHIVE]);
const blob = gzipSync(tar);

async function readAll(r: Readable): Promise<{ data: Buffer; pieces: number[] }> {
  const parts: Buffer[] = [];
  for await (const p of r as AsyncIterable<Buffer>) parts.push(p);
  return { data: Buffer.concat(parts), pieces: parts.map((p) => p.length) };
}

async function entryOf(path: string): Promise<TocEntry> {
  const toc = await buildLayerToc(Readable.from([blob]), { mediaType: GZIP });
  return toc.entries.find((e) => e.path === path)!;
}

test('a file read back from its layer blob: its bytes, in chunks of at most 1 MiB; the blob is left once the file ends', async (t) => {
  const e = await entryOf('a/big.bin');
  t.truthy(e.chunks, 'a large file has chunk digests');
  const src = Readable.from([blob.subarray(0, 1000), blob.subarray(1000)]);
  const { data, pieces } = await readAll(extractLayerFile(src, e, { mediaType: GZIP, layerName: 'L' }));
  t.true(data.equals(big));
  t.deepEqual(pieces, [CHUNK_BYTES, CHUNK_BYTES, 12345]);
  t.true(src.destroyed, 'the blob stream is closed');

  const s = await entryOf('a/small');
  t.true((await readAll(extractLayerFile(Readable.from([blob]), s, { mediaType: GZIP, layerName: 'L' }))).data.equals(small));
});

test('a blob whose second chunk differs from the index: an error after the first (checked) chunk, no wrong byte', async (t) => {
  const e = await entryOf('a/big.bin');
  const bad = Buffer.from(tar);
  bad[e.offset! + CHUNK_BYTES + 5]! ^= 0x40;
  const got: Buffer[] = [];
  const err = await t.throwsAsync(async () => {
    for await (const p of extractLayerFile(Readable.from([gzipSync(bad)]), e, { mediaType: GZIP, layerName: 'L' }) as AsyncIterable<Buffer>) got.push(p);
  });
  t.is((err as { code?: string }).code, 'SL_ERR_OCI_DIGEST_MISMATCH');
  t.regex(err!.message, /chunk 1 of a\/big\.bin/);
  t.is(Buffer.concat(got).length, CHUNK_BYTES, 'only the verified first chunk was handed on');
  t.true(Buffer.concat(got).equals(big.subarray(0, CHUNK_BYTES)));

  // A small file without chunk digests is checked whole before its bytes go out.
  const s = await entryOf('a/small');
  const bad2 = Buffer.from(tar);
  bad2[s.offset! + 10]! ^= 1;
  const parts: Buffer[] = [];
  const err2 = await t.throwsAsync(async () => {
    for await (const p of extractLayerFile(Readable.from([gzipSync(bad2)]), s, { mediaType: GZIP, layerName: 'L' }) as AsyncIterable<Buffer>) parts.push(p);
  });
  t.is((err2 as { code?: string }).code, 'SL_ERR_OCI_DIGEST_MISMATCH');
  t.is(parts.length, 0);
});

test('a layer that ends before the file: SL_ERR_IMAGE_BAD_TAR', async (t) => {
  const e = await entryOf('a/big.bin');
  const cut = gzipSync(tar.subarray(0, e.offset! + CHUNK_BYTES + 100));
  const err = await t.throwsAsync(readAll(extractLayerFile(Readable.from([cut]), e, { mediaType: GZIP, layerName: 'L' })));
  t.is((err as { code?: string }).code, 'SL_ERR_IMAGE_BAD_TAR');
});

test('a byte range: only its bytes, from the checked chunks around it', async (t) => {
  const e = await entryOf('a/big.bin');
  for (const [start, end] of [
    [0, 10],
    [CHUNK_BYTES - 5, CHUNK_BYTES + 7],
    [2 * CHUNK_BYTES + 100, big.length],
    [123, big.length],
  ] as const) {
    const { data } = await readAll(extractLayerFile(Readable.from([blob]), e, { mediaType: GZIP, layerName: 'L', range: { start, end } }));
    t.true(data.equals(big.subarray(start, end)), `${start}-${end}`);
  }
  // A chunk outside the range may differ (it is not read): the range is still served.
  const bad = Buffer.from(tar);
  bad[e.offset! + 10]! ^= 1;
  const { data } = await readAll(extractLayerFile(Readable.from([gzipSync(bad)]), e, { mediaType: GZIP, layerName: 'L', range: { start: CHUNK_BYTES + 1, end: CHUNK_BYTES + 99 } }));
  t.true(data.equals(big.subarray(CHUNK_BYTES + 1, CHUNK_BYTES + 99)));
  // The chunk holding the range differs: an error, nothing handed on.
  const err = await t.throwsAsync(readAll(extractLayerFile(Readable.from([gzipSync(bad)]), e, { mediaType: GZIP, layerName: 'L', range: { start: 5, end: 20 } })));
  t.is((err as { code?: string }).code, 'SL_ERR_OCI_DIGEST_MISMATCH');
  // A file without chunk digests is checked whole, the range cut from it.
  const s = await entryOf('a/small');
  t.true((await readAll(extractLayerFile(Readable.from([blob]), s, { mediaType: GZIP, layerName: 'L', range: { start: 100, end: 200 } }))).data.equals(small.subarray(100, 200)));
});
