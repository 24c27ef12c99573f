import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { StarlightError } from '../../../src/errors.js';
import { nativeGzip } from '../../../src/layers/decompress.js';
import { buildLayerToc } from '../../../src/layers/indexer.js';
import type { LayerLimits } from '../../../src/layers/limits.js';
import { NativePassFallback, buildLayerTocNative } from '../../../src/layers/native-index.js';
import type { LayerToc, TocEntry } from '../../../src/layers/toc.js';
import { compressLayer, streamToBuffer, writeTarBuffer, type WriterEntry } from '../../../fixtures/image-writer.js';
import { FIXTURES } from '../../helpers/fixtures.js';
import { END_OF_ARCHIVE, fileEntry, fixChecksum, padding, paxHeader, paxRecord, tarHeader } from '../../helpers/hostile-layers.js';
import { SAMPLE_LAYER, digestMismatchAtEnd, feed } from '../../helpers/layer-samples.js';

const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const gzip = async (tar: Buffer) => streamToBuffer(compressLayer(tar, 'gzip'));

interface Pass {
  toc?: LayerToc;
  error?: unknown;
  /** digest → bytes of the files staged (native) or read (streaming) of 1..stageMax bytes. */
  staged: Map<string, Buffer>;
}

async function streaming(blob: Buffer, stageMax: number, opts: { chunk?: number; limits?: Partial<LayerLimits>; expectedDiffID?: string } = {}): Promise<Pass> {
  const read: { entry: TocEntry; pieces: Buffer[] }[] = [];
  try {
    const toc = await buildLayerToc(feed(blob, opts.chunk), {
      mediaType: GZIP,
      limits: opts.limits,
      expectedDiffID: opts.expectedDiffID,
      onFileSink: (entry) => {
        if (entry.size === 0 || entry.size > stageMax) return { write: () => undefined };
        const r = { entry, pieces: [] as Buffer[] };
        read.push(r);
        return { write: (p) => void r.pieces.push(Buffer.from(p)) };
      },
    });
    // entry.digest is set once its bytes were read.
    return { toc, staged: new Map(read.map((r) => [r.entry.digest!, Buffer.concat(r.pieces)])) };
  } catch (error) {
    return { error, staged: new Map() };
  }
}

async function native(blob: Buffer, stageMax: number, opts: { chunk?: number; limits?: Partial<LayerLimits>; expectedDiffID?: string; stop?: string; source?: Readable } = {}): Promise<Pass> {
  const written: Buffer[] = [];
  const files: { digest: string; size: number; at: number }[] = [];
  try {
    const toc = await buildLayerTocNative(opts.source ?? feed(blob, opts.chunk), {
      stageMax,
      limits: opts.limits,
      expectedDiffID: opts.expectedDiffID,
      onFile: (e, at) => {
        if (e.path === opts.stop) return false;
        if (at !== undefined) files.push({ digest: e.digest!, size: e.size, at });
        return true;
      },
      write: (b) => void written.push(b),
    });
    const all = Buffer.concat(written);
    return { toc, staged: new Map(files.map((f) => [f.digest, all.subarray(f.at, f.at + f.size)])) };
  } catch (error) {
    return { error, staged: new Map() };
  }
}

/** Both passes over `tar` (gzip), fed in several chunk sizes: the same TOC and staged bytes, or the same error code. */
async function same(t: ExecutionContext, tar: Buffer, what: string, opts: { stageMax?: number; limits?: Partial<LayerLimits>; fallbackOk?: boolean; expectedDiffID?: string } = {}): Promise<Pass> {
  const blob = await gzip(tar);
  const stageMax = opts.stageMax ?? 64 << 20;
  const ref = await streaming(blob, stageMax, opts);
  // Odd splits of small blobs; large ones (the fixtures' 64 MiB file) in network-sized chunks.
  for (const chunk of blob.length < 256 * 1024 ? [13, 4096, blob.length || 1] : [65536, blob.length]) {
    const got = await native(blob, stageMax, { ...opts, chunk });
    if (got.error instanceof NativePassFallback) {
      t.true(opts.fallbackOk === true, `${what}: unexpected fallback (${got.error.reason})`);
      continue;
    }
    if (ref.error !== undefined) {
      t.is((got.error as StarlightError | undefined)?.code, (ref.error as StarlightError).code, `${what}, chunk ${chunk}: the same error`);
      continue;
    }
    t.is(got.error, undefined, `${what}, chunk ${chunk}: ${String(got.error)}`);
    t.deepEqual(got.toc, ref.toc, `${what}, chunk ${chunk}: the same TOC`);
    t.deepEqual([...got.staged.keys()].sort(), [...ref.staged.keys()].sort(), `${what}, chunk ${chunk}: the same files staged`);
    for (const [d, b] of got.staged) t.is(sha(b), d, `${what}: staged bytes of ${d}`);
  }
  return ref;
}

/** The sample layer, plus a file of whole chunks, a replaced file, long names, every other type, xattrs. */
const layer: WriterEntry[] = [
  ...SAMPLE_LAYER,
  { path: 'exact', type: 'reg', content: { size: 2 * 1024 * 1024, fill: 0x62 } },
  { path: 'a/f', type: 'reg', content: Buffer.from('replaced') },
  { path: `long/${'n'.repeat(130)}/${'m'.repeat(120)}`, type: 'reg', content: Buffer.from('long'), mtime: 99.75 },
  { path: 'link', type: 'symlink', linkname: 'z'.repeat(200) },
  { path: 'c', type: 'char', devmajor: 4, devminor: 64 },
  { path: 'p', type: 'fifo' },
  { path: 'x', type: 'reg', content: Buffer.from('v'), xattrs: { 'user.a': 'b', 'security.capability': new Uint8Array([1, 0, 255]) } },
];

test.before(() => {
  if (!nativeGzip) throw new Error('the gzip addon is not built (npm ci builds it)');
});

test('the native pass gives the streaming pass’s TOC and staged bytes: PAX and GNU tars, every entry type, chunked files, any input split', async (t) => {
  for (const format of ['pax', 'gnu'] as const) {
    const tar = await writeTarBuffer(format === 'pax' ? layer : layer.filter((e) => e.xattrs === undefined), { format });
    for (const stageMax of [0, 1000, 64 << 20]) {
      const ref = await same(t, tar, `${format}, stageMax ${stageMax}`, { stageMax, expectedDiffID: sha(tar) });
      t.truthy(ref.toc);
    }
  }
});

/** `size` bytes that do not compress (a sha256 chain from `seed`): a layer of them is several pool blocks. */
function incompressible(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  let h = createHash('sha256').update(seed).digest();
  for (let off = 0; off < size; off += h.length) {
    h.copy(out, off);
    h = createHash('sha256').update(h).digest();
  }
  return out;
}

test('a layer of several megabytes of incompressible files (files across the addon’s output blocks and calls) gives the streaming pass’s TOC and staged bytes', async (t) => {
  const entries: WriterEntry[] = [{ path: 'd', type: 'dir' }];
  // Sizes around the addon's 1 MiB output blocks and chunk digests, so files straddle blocks.
  for (let i = 0; i < 60; i++) entries.push({ path: `d/f${i}`, type: 'reg', content: incompressible((i * 37_813) % 200_000, `f${i}`) });
  entries.push({ path: 'd/big', type: 'reg', content: incompressible(3 * 1024 * 1024 + 5, 'big') });
  entries.push({ path: 'd/f7', type: 'reg', content: Buffer.from('replaced') });
  const tar = await writeTarBuffer(entries, { format: 'pax' });
  const blob = await gzip(tar);
  t.true(blob.length > 4 * 1024 * 1024, 'several calls’ worth of input');
  for (const stageMax of [0, 100_000, 64 << 20]) {
    const ref = await same(t, tar, `incompressible, stageMax ${stageMax}`, { stageMax, expectedDiffID: sha(tar) });
    t.is(ref.toc?.entries.length, 62);
  }
});

test('the native pass equals the streaming pass on every layer of the fixture images', async (t) => {
  for (const image of FIXTURES) {
    for (const [i, l] of image.layers.entries()) {
      await same(t, await writeTarBuffer(l.entries, { format: l.format }), `${image.name} layer ${i}`, { stageMax: 16 << 20 });
    }
  }
});

test('header edge cases frame alike: base-256 and PAX sizes (also global and cleared), old-style dirs, volume labels, dumpdirs, no end marker, data after it', async (t) => {
  const base256 = fileEntry('b256', Buffer.from('hello'));
  base256.fill(0, 124, 136);
  base256[124] = 0x80;
  base256[135] = 5;
  fixChecksum(base256, 0);
  const oldDir = tarHeader('olddir/', { type: '\0', size: 0 });
  const cases: [string, Buffer][] = [
    ['base-256 size', Buffer.concat([base256, END_OF_ARCHIVE])],
    ['PAX size on a file', Buffer.concat([paxHeader('x', [paxRecord('size', '3')]), tarHeader('s', { size: 99 }), Buffer.from('abc'), padding(3), END_OF_ARCHIVE])],
    ['global PAX size, then cleared by an empty local one', Buffer.concat([paxHeader('g', [paxRecord('size', '2')]), tarHeader('g1', { size: 0 }), Buffer.from('xy'), padding(2), paxHeader('x', [paxRecord('size', '')]), fileEntry('g2', Buffer.from('four')), paxHeader('g', [paxRecord('size', '')]), fileEntry('g3', Buffer.from('five!')), END_OF_ARCHIVE])],
    ['old-style directory', Buffer.concat([oldDir, fileEntry('olddir/f', Buffer.from('in')), END_OF_ARCHIVE])],
    ['volume label and dumpdir', Buffer.concat([tarHeader('label', { type: 'V', size: 700 }), Buffer.alloc(700, 1), padding(700), tarHeader('dd', { type: 'D', size: 10 }), Buffer.alloc(10, 2), padding(10), fileEntry('after', Buffer.from('x')), END_OF_ARCHIVE])],
    ['no end marker', fileEntry('only', Buffer.from('1'))],
    ['one zero block', Buffer.concat([fileEntry('only', Buffer.from('1')), Buffer.alloc(512)])],
    ['garbage after the end marker', Buffer.concat([fileEntry('only', Buffer.from('1')), END_OF_ARCHIVE, Buffer.alloc(3000, 0x41)])],
    ['header-only types with a size field', Buffer.concat([tarHeader('d', { type: '5', size: 1000 }), tarHeader('l', { type: '2', size: 1000, linkname: 'x' }), fileEntry('f', Buffer.from('z')), END_OF_ARCHIVE])],
  ];
  for (const [what, tar] of cases) await same(t, tar, what);
});

test('bad tars fail alike, or the native pass leaves them to the streaming pass; the same limits', async (t) => {
  const tar = await writeTarBuffer(layer);
  const badSum = Buffer.from(tar);
  badSum[10] = badSum[10]! ^ 0xff;
  const unsupported = fileEntry('s', Buffer.from('x'));
  unsupported.write('S', 156, 'latin1');
  fixChecksum(unsupported, 0);
  const one = fileEntry('a', Buffer.from('1'));
  const cases: [string, Buffer][] = [
    ['bad checksum', badSum],
    ['unsupported type', Buffer.concat([unsupported, END_OF_ARCHIVE])],
    ['path escape', await writeTarBuffer([{ path: 'ok', type: 'hardlink', linkname: '../../etc/shadow' }])],
    ['lone zero block', Buffer.concat([one, Buffer.alloc(512), one, END_OF_ARCHIVE])],
    ['truncated inside data', tar.subarray(0, 700)],
    ['truncated inside a header', tar.subarray(0, 300)],
    ['ends after an extended header', (await writeTarBuffer([{ path: 'p'.repeat(300), type: 'reg' }])).subarray(0, 1024)],
    ['malformed PAX record', Buffer.concat([paxHeader('x', [Buffer.from('9 size=x\n')]), one, END_OF_ARCHIVE])],
    ['negative PAX size', Buffer.concat([paxHeader('x', [paxRecord('size', '-5')]), one, END_OF_ARCHIVE])],
  ];
  for (const [what, bad] of cases) {
    const ref = await same(t, bad, what, { fallbackOk: true });
    t.truthy(ref.error, `${what}: the streaming pass refuses it`);
  }
  await same(t, tar, 'maxEntries', { limits: { maxEntries: 3 } });
  await same(t, tar, 'maxPathBytes', { limits: { maxPathBytes: 100 } });
  await same(t, tar, 'maxUncompressedBytes', { limits: { maxUncompressedBytes: 100_000 } });
  await same(t, tar, 'a wrong diffID', { expectedDiffID: sha(Buffer.from('other')) });
});

test('corrupt gzip, a source failing at its end, an abort and a caller that stops', async (t) => {
  const tar = await writeTarBuffer(layer);
  const blob = await gzip(tar);
  const cut = await native(blob.subarray(0, blob.length - 4), 1 << 20);
  t.is((cut.error as StarlightError).code, 'SL_ERR_IMAGE_BAD_COMPRESSION');
  const bad = Buffer.from(blob);
  for (const i of [30, 300, 3000]) bad[i] = bad[i]! ^ 0x5a;
  const verifying = digestMismatchAtEnd(bad);
  const diag = await native(bad, 1 << 20, { source: verifying });
  t.is((diag.error as StarlightError).code, 'SL_ERR_OCI_DIGEST_MISMATCH', 'the source’s own error wins');
  t.true(verifying.destroyed);
  const aborted = await buildLayerTocNative(feed(blob), { stageMax: 1 << 20, signal: AbortSignal.abort(), onFile: () => true, write: () => undefined }).catch((e: unknown) => e);
  t.is((aborted as StarlightError).code, 'SL_ERR_CANCELED');
  const stopped = await native(blob, 1 << 20, { stop: 'a/f' });
  t.true(stopped.error instanceof NativePassFallback);
});
