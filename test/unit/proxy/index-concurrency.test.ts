/**
 * Issue 14, indexing concurrency is bounded globally and per image: with --index-concurrency 4, at
 * most 4 layer passes run proxy-wide and at most 2 (half, rounded up) of one image's, so an image of
 * many layers cannot hold every pass while another image waits. The registry is a fake ImageSource
 * whose blob fetches block until the test releases them (the passes' real code runs on them).
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { nullLogger } from '../../../src/log.js';
import type { ResolvedImage } from '../../../src/oci/client.js';
import type { ImageSource } from '../../../src/oci/fetcher.js';
import { parseReference } from '../../../src/oci/reference.js';
import type { Descriptor } from '../../../src/oci/types.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import { IndexerService } from '../../../src/proxy/indexer-service.js';
import { ProxyMetrics } from '../../../src/proxy/metrics.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { END_OF_ARCHIVE, fileEntry } from '../../helpers/hostile-layers.js';
import { pollUntil } from '../../helpers/poll.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const LAYERS = 6;

interface FakeImage {
  resolved: ResolvedImage;
  blobs: Map<string, Buffer>;
}

function fakeImage(name: string): FakeImage {
  const blobs = new Map<string, Buffer>();
  const layers: Descriptor[] = [];
  const diffIDs: string[] = [];
  for (let i = 0; i < LAYERS; i++) {
    const tar = Buffer.concat([fileEntry(`${name}/f${i}`, Buffer.from(`${name} layer ${i}\n`)), END_OF_ARCHIVE]);
    const gz = gzipSync(tar);
    blobs.set(dg(gz), gz);
    layers.push({ mediaType: GZIP, digest: dg(gz), size: gz.length });
    diffIDs.push(dg(tar));
  }
  const config = { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIDs } };
  const configBytes = Buffer.from(JSON.stringify(config));
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: dg(configBytes), size: configBytes.length }, layers };
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

test('layer passes: at most --index-concurrency proxy-wide, at most half of it per image; both images progress', async (t) => {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 64 << 20, store });
  const images = new Map([['a', fakeImage('a')], ['b', fakeImage('b')]]);
  const running = new Map<string, number>([['a', 0], ['b', 0]]);
  let peakTotal = 0;
  const peak = new Map<string, number>([['a', 0], ['b', 0]]);
  const gates: (() => void)[] = [];
  let open = false;
  const client: ImageSource = {
    resolve: async (ref) => images.get(ref.repository)!.resolved,
    fetcher: (ref) => ({
      fetch: async (desc) => {
        const name = ref.repository;
        running.set(name, running.get(name)! + 1);
        peak.set(name, Math.max(peak.get(name)!, running.get(name)!));
        peakTotal = Math.max(peakTotal, running.get('a')! + running.get('b')!);
        if (!open) await new Promise<void>((r) => gates.push(r));
        const body = Readable.from([images.get(name)!.blobs.get(desc.digest)!]);
        body.once('close', () => running.set(name, running.get(name)! - 1));
        return body;
      },
    }),
  };
  const indexer = new IndexerService({ client, store, cache, metrics: new ProxyMetrics(), logger: nullLogger, indexConcurrency: 4 });
  t.teardown(() => indexer.close());
  const a = indexer.image(parseReference('127.0.0.1:1/a:v1'), 'linux/amd64');
  const b = indexer.image(parseReference('127.0.0.1:1/b:v1'), 'linux/amd64');
  await pollUntil('4 passes to wait in the registry', () => gates.length === 4, { timeoutMs: 30_000 });
  t.deepEqual([running.get('a'), running.get('b')], [2, 2], 'each image holds half of the passes');
  open = true;
  for (const g of gates.splice(0)) g();
  const [ia, ib] = await Promise.all([a, b]);
  t.is(ia.tocs.length, LAYERS);
  t.is(ib.tocs.length, LAYERS);
  t.true(peakTotal <= 4, `proxy-wide peak ${peakTotal} ≤ 4`);
  t.true(peak.get('a')! <= 2 && peak.get('b')! <= 2, `per-image peaks ${peak.get('a')}, ${peak.get('b')} ≤ 2`);
});
