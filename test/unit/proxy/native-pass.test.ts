/**
 * Issue 10: the proxy's first index pass of a gzip layer runs natively (src/layers/native-index.ts)
 * when staging is on, and records the same TOC, content rows and staged bytes as the streaming pass;
 * a stage that runs out of room makes it fall back to the streaming pass (one more blob fetch), which
 * encodes what does not fit inline, as before. The registry is a fake ImageSource; the passes' real
 * code runs on its blobs.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { nativeGzip } from '../../../src/layers/decompress.js';
import { createLogger } from '../../../src/log.js';
import type { ResolvedImage } from '../../../src/oci/client.js';
import type { ImageSource } from '../../../src/oci/fetcher.js';
import { parseReference } from '../../../src/oci/reference.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import { IndexerService } from '../../../src/proxy/indexer-service.js';
import { ProxyMetrics } from '../../../src/proxy/metrics.js';
import { StagingArea } from '../../../src/proxy/staging.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { compressLayer, streamToBuffer, writeTarBuffer, type WriterEntry } from '../../../fixtures/image-writer.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
/** The cache's size: contents over a quarter of it (1 MiB) are served from their layer. */
const CACHE = 4 << 20;

const files: WriterEntry[] = [
  { path: 'etc', type: 'dir' },
  ...Array.from({ length: 40 }, (_, i): WriterEntry => ({ path: `etc/f${i}`, type: 'reg', content: Buffer.from(`file ${i}\n`.repeat(i * 50 + 1)) })),
  { path: 'etc/dup', type: 'reg', content: Buffer.from('file 0\n') },
  { path: 'etc/empty', type: 'reg', content: Buffer.alloc(0) },
  { path: 'etc/hard', type: 'hardlink', linkname: 'etc/f3' },
  { path: 'etc/.wh.old', type: 'reg' },
  { path: 'big', type: 'reg', content: { size: (1 << 20) + 12345, fill: 0x42 } },
];

interface Run {
  tocs: unknown;
  rows: Map<string, { size: number; sourceDiffID: string }>;
  staged: Map<string, Buffer>;
  fetches: number;
  logs: Record<string, unknown>[];
}

async function indexOnce(t: ExecutionContext, blob: Buffer, resolved: ResolvedImage, opts: { nativePass?: boolean; stagingBytes: number }): Promise<Run> {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir: join(dir, 'cache'), maxBytes: CACHE, store });
  const staging = new StagingArea(join(dir, 'staging'), opts.stagingBytes);
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', sink: (line) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  let fetches = 0;
  const client: ImageSource = {
    resolve: async () => resolved,
    fetcher: () => ({
      fetch: async () => {
        fetches++;
        return Readable.from((function* () { for (let i = 0; i < blob.length; i += 8192) yield blob.subarray(i, i + 8192); })());
      },
    }),
  };
  const indexer = new IndexerService({ client, store, cache, staging, metrics: new ProxyMetrics(), logger, nativePass: opts.nativePass });
  t.teardown(() => indexer.close());
  const hold = indexer.holdEncoding(); // the stage stays until read below
  const img = await indexer.image(parseReference('127.0.0.1:1/app:v1'), 'linux/amd64');
  const rows = new Map<string, { size: number; sourceDiffID: string }>();
  const staged = new Map<string, Buffer>();
  for (const e of img.tocs[0]!.entries) {
    if (e.type !== 'reg' || e.size === 0) continue;
    const r = store.content(e.digest!);
    if (r !== undefined) rows.set(e.digest!, { size: r.size, sourceDiffID: r.sourceDiffID });
    const s = staging.open(e.digest!);
    if (s !== undefined) staged.set(e.digest!, Buffer.isBuffer(s) ? s : await streamToBuffer(s));
  }
  hold();
  return { tocs: img.tocs, rows, staged, fetches, logs };
}

test('the first pass of a gzip layer runs natively: the streaming pass’s TOC, rows and staged bytes; a full stage falls back to the streaming pass', async (t) => {
  if (!nativeGzip) return t.pass('the gzip addon is not built: the streaming pass only');
  const tar = await writeTarBuffer(files);
  const blob = await streamToBuffer(compressLayer(tar, 'gzip'));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [dg(tar)] } }));
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: dg(config), size: config.length }, layers: [{ mediaType: GZIP, digest: dg(blob), size: blob.length }] };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const resolved = {
    ref: parseReference('127.0.0.1:1/app:v1'),
    platform: { os: 'linux', architecture: 'amd64' },
    manifestDigest: dg(manifestBytes),
    manifestMediaType: manifest.mediaType,
    manifestBytes,
    manifest,
    configBytes: config,
    config: JSON.parse(config.toString()) as unknown,
  } as unknown as ResolvedImage;

  const streaming = await indexOnce(t, blob, resolved, { nativePass: false, stagingBytes: 1 << 30 });
  const native = await indexOnce(t, blob, resolved, { stagingBytes: 1 << 30 });
  const indexed = (r: Run) => r.logs.find((l) => l.msg === 'layer-indexed');
  t.like(indexed(streaming), { native: false });
  t.like(indexed(native), { native: true });
  t.deepEqual(native.tocs, streaming.tocs, 'the same TOC');
  t.deepEqual(native.rows, streaming.rows, 'the same content rows');
  t.deepEqual(native.staged, streaming.staged, 'the same staged bytes');
  t.is(native.fetches, 1);
  const big = dg(Buffer.alloc((1 << 20) + 12345, 0x42));
  t.true(native.rows.has(big) && !native.staged.has(big), 'a content over a quarter of the cache is only hashed (served from its layer)');
  t.true(native.staged.size >= 40, `${native.staged.size} contents staged`);
  for (const [d, b] of native.staged) t.is(dg(b), d);

  // A stage of 64 KiB fills up: the native pass stops, the streaming pass stages what fits and encodes the rest into the cache.
  const full = await indexOnce(t, blob, resolved, { stagingBytes: 64 * 1024 });
  t.like(full.logs.find((l) => l.msg === 'layer-native-fallback'), { digest: dg(blob) });
  t.like(indexed(full), { native: false });
  t.is(full.fetches, 2, 'the fallback fetched the blob again');
  t.deepEqual(full.tocs, streaming.tocs);
  t.true(full.staged.size > 0 && full.staged.size < native.staged.size, `${full.staged.size} of ${native.staged.size} contents staged`);
  for (const [d, b] of full.staged) t.is(dg(b), d);
});
