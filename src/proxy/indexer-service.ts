/**
 * Index on demand: resolve a reference through the registry, and for every layer not yet indexed
 * fetch its blob once, build its TOC (src/image/indexer.ts) while storing each file content into the
 * content cache, and record manifest, config and TOCs in the metadata store. Concurrent requests for
 * the same image or the same layer share one run (single-flight maps of promises). Also re-fetches a
 * layer whose contents were evicted from the cache.
 *
 * Not here: planning or streaming deltas, HTTP.
 */
import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { withContext } from '../errors.js';
import { buildLayerToc } from '../image/indexer.js';
import { decodeToc, encodeToc } from '../image/toc-codec.js';
import type { LayerToc } from '../image/toc.js';
import type { Logger } from '../log.js';
import type { RegistryClient } from '../oci/client.js';
import { type Reference, formatReference, parseReference } from '../oci/reference.js';
import type { Descriptor, ImageConfig } from '../oci/types.js';
import type { ContentCache } from './content-cache.js';
import type { ProxyMetrics } from './metrics.js';
import type { ImageRecord, MetadataStore } from './store.js';

/** Decoded layer TOCs kept in memory (entries, default 256). */
const DECODED_TOCS = 256;

export interface IndexedImage {
  /** Fully qualified reference that was resolved. */
  ref: string;
  platform: string;
  record: ImageRecord;
  config: ImageConfig;
  /** The chain's TOCs, lowest first. */
  tocs: LayerToc[];
}

export interface IndexerServiceOptions {
  client: RegistryClient;
  store: MetadataStore;
  cache: ContentCache;
  metrics: ProxyMetrics;
  logger: Logger;
}

export class IndexerService {
  private readonly images = new Map<string, Promise<IndexedImage>>();
  private readonly layers = new Map<string, Promise<LayerToc>>();
  private readonly refetches = new Map<string, Promise<void>>();
  /** Decoded TOCs of recently used layers (decoding a 3000-entry TOC per request showed in TTFB). */
  private readonly decoded = new LRUCache<string, LayerToc>({ max: DECODED_TOCS });

  constructor(private readonly o: IndexerServiceOptions) {}

  /** Resolves `ref` for `platform` and makes sure every layer is indexed. Single-flight per ref+platform. */
  image(ref: Reference, platform: string, signal?: AbortSignal): Promise<IndexedImage> {
    const key = `${formatReference(ref)}|${platform}`;
    let p = this.images.get(key);
    if (p === undefined) {
      // Not bound to one caller's signal: other callers may share this run.
      p = this.indexImage(ref, platform).finally(() => this.images.delete(key));
      this.images.set(key, p);
    }
    return signal === undefined ? p : raceAbort(p, signal);
  }

  private async indexImage(ref: Reference, platform: string): Promise<IndexedImage> {
    const name = formatReference(ref);
    const cachedDigest = ref.digest ?? undefined;
    let record = cachedDigest !== undefined ? this.o.store.manifest(cachedDigest) : undefined;
    let layers: Descriptor[];
    if (record === undefined) {
      const r = await this.registry(() => this.o.client.resolve(ref, platform));
      record = {
        manifestDigest: r.manifestDigest,
        mediaType: r.manifestMediaType,
        manifest: r.manifestBytes,
        config: r.configBytes,
        repository: `${ref.registry}/${ref.repository}`,
        diffIDs: r.config.rootfs.diff_ids,
      };
      layers = r.manifest.layers;
      this.o.store.putImage(name, platform, record);
    } else {
      layers = (JSON.parse(record.manifest.toString('utf8')) as { layers: Descriptor[] }).layers;
    }
    const config = JSON.parse(record.config.toString('utf8')) as ImageConfig;
    if (layers.length !== record.diffIDs.length) {
      throw withContext(new Error(`manifest has ${layers.length} layers, config ${record.diffIDs.length} diff_ids`), `index ${name}`);
    }
    const tocs = await Promise.all(layers.map((desc, i) => this.layer(record.repository, desc, record.diffIDs[i]!)));
    return { ref: name, platform, record, config, tocs };
  }

  /** The TOC of one layer, indexing it first if needed. Single-flight per diffID. */
  layer(repository: string, desc: Descriptor, diffID: string): Promise<LayerToc> {
    const known = this.toc(diffID);
    if (known !== undefined) return Promise.resolve(known);
    let p = this.layers.get(diffID);
    if (p === undefined) {
      p = this.indexLayer(repository, desc, diffID).finally(() => this.layers.delete(diffID));
      this.layers.set(diffID, p);
    }
    return p;
  }

  /** The TOC of an indexed layer (memoized), or undefined if it is not indexed. */
  toc(diffID: string): LayerToc | undefined {
    let t = this.decoded.get(diffID);
    if (t === undefined) {
      const stored = this.o.store.layer(diffID);
      if (stored === undefined) return undefined;
      t = decodeToc(stored.toc);
      this.decoded.set(diffID, t);
    }
    return t;
  }

  private async indexLayer(repository: string, desc: Descriptor, diffID: string): Promise<LayerToc> {
    const t0 = process.hrtime.bigint();
    const toc = await this.readLayer(repository, desc, diffID);
    this.o.store.putLayer({
      diffID,
      layerDigest: desc.digest,
      mediaType: desc.mediaType,
      compressedSize: desc.size,
      uncompressedSize: toc.uncompressedSize,
      repository,
      toc: Buffer.from(encodeToc(toc)),
    });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    this.o.metrics.layersIndexed++;
    this.o.metrics.indexSeconds += secs;
    this.o.logger.info('layer-indexed', { diffID, digest: desc.digest, entries: toc.entries.length, seconds: secs });
    return toc;
  }

  /** Fetches and reads a layer blob, storing every file content in the cache (already cached ones are skipped). */
  private async readLayer(repository: string, desc: Descriptor, diffID: string, only?: ReadonlySet<string>): Promise<LayerToc> {
    const ref = parseReference(`${repository}@${desc.digest}`);
    const blob: Readable = await this.registry(() => this.o.client.fetchBlob(ref, desc));
    this.o.metrics.registryBlobFetches++;
    try {
      return await buildLayerToc(blob, {
        mediaType: desc.mediaType,
        expectedDiffID: diffID,
        layerName: desc.digest,
        onFile: async (entry, content) => {
          if (entry.size === 0) return;
          await this.o.cache.put(content, entry.size, diffID, { only });
        },
      });
    } catch (err) {
      blob.destroy();
      throw withContext(err, `index layer ${desc.digest} of ${repository}`, { layer: desc.digest, diffID });
    }
  }

  /**
   * Re-reads layer `diffID` to restore the `wanted` contents evicted from the cache (others are not
   * stored again, so a cache smaller than the layer still makes progress). Joins a re-read of the same
   * layer already running; the caller re-checks the cache afterwards.
   */
  refetch(diffID: string, wanted: ReadonlySet<string>): Promise<void> {
    let p = this.refetches.get(diffID);
    if (p === undefined) {
      p = (async () => {
        const l = this.o.store.layer(diffID);
        if (l === undefined) throw withContext(new Error(`layer ${diffID} is not indexed`), 'refetch content');
        await this.readLayer(l.repository, { mediaType: l.mediaType, digest: l.layerDigest, size: l.compressedSize }, diffID, wanted);
        this.o.logger.info('layer-refetched', { diffID, wanted: wanted.size });
      })().finally(() => this.refetches.delete(diffID));
      this.refetches.set(diffID, p);
    }
    return p;
  }

  private async registry<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.o.metrics.registryErrors++;
      throw err;
    }
  }
}

/** `p`, or a rejection with SL_ERR_CANCELED once `signal` aborts (p keeps running for other waiters). */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(withContext(signal.reason ?? abortError(), 'request aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(withContext(abortError(), 'request aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function abortError(): Error {
  const e = new Error('aborted');
  e.name = 'AbortError';
  return e;
}
