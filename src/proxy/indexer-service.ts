/**
 * Index on demand: resolve a reference through the registry, and for every layer not yet indexed
 * make ONE pass over its blob (fetch → decompress → TOC, src/layers/indexer.ts) that stages each raw
 * file content on local disk (staging.ts); record the layer's TOC and its content rows in the
 * metadata store when the pass succeeded, then hand the stage to the background encoder, which puts
 * the contents into the content cache. So image() resolves as soon as the TOCs exist (a first pull
 * streams at once, its contents 'identity' from the stage) and compression never sits on the
 * critical path. Layer passes run in parallel, at most `indexConcurrency` proxy-wide and half of that
 * (rounded up) per image; concurrent
 * requests for the same image or layer share one run (single-flight maps of promises). A pass that
 * fails (registry unreachable, blob missing, digest mismatch) records nothing and leaves no staged
 * file. Also re-fetches a layer whose contents were evicted from the cache.
 *
 * Not here: planning or streaming deltas, HTTP.
 */
import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { StarlightError, withContext } from '../errors.js';
import { yieldToLoop } from '../event-loop.js';
import { extractLayerFile } from '../layers/file-extract.js';
import { nativeTarWalkFor } from '../layers/decompress.js';
import { type BuildTocOptions, type FileSink, buildLayerToc } from '../layers/indexer.js';
import { NativePassFallback, buildLayerTocNative } from '../layers/native-index.js';
import type { LayerLimits } from '../layers/limits.js';
import { decodeToc, encodeToc } from '../layers/toc-codec.js';
import type { LayerToc } from '../layers/toc.js';
import type { Logger } from '../log.js';
import type { ImageSource } from '../oci/fetcher.js';
import { type Reference, formatReference, parseReference } from '../oci/reference.js';
import type { Descriptor, ImageConfig } from '../oci/types.js';
import type { ContentCache } from './content-cache.js';
import type { ProxyMetrics } from './metrics.js';
import type { ImageRecord, MetadataStore } from './store.js';
import { type ReplicaSync, layerContents } from './replica-sync.js';
import { BackgroundEncoder } from './background-encoder.js';
import { Semaphore } from './semaphore.js';
import type { LayerStage, StagingArea } from './staging.js';
import type { TocEntry } from '../layers/toc.js';

/** The sink of a file served from its layer (ContentCache.servedFromLayer): hashed by the pass, kept nowhere. */
const HASH_ONLY: FileSink = { write: () => undefined };

/** Where the files of one layer pass went. */
interface LayerFiles {
  /** Files staged, with their offsets in the stage, in tar order (a content may repeat). */
  staged: { entry: TocEntry; offset: number }[];
  /** Files only hashed: served from the layer blob. */
  fromLayer: TocEntry[];
}

/** What one pass over a layer blob produced (IndexerService.passLayer). */
interface LayerPass extends LayerFiles {
  toc: LayerToc;
  /** Where its files were staged (none: staging off). */
  stage: LayerStage | undefined;
  /** Read by the native pass. */
  native: boolean;
}

/** Decoded layer TOCs kept in memory (entries, default 256). */
const DECODED_TOCS = 256;
/** Default IndexerServiceOptions.indexConcurrency: layer passes at once, proxy-wide (2-core measure: design-notes). */
export const DEFAULT_INDEX_CONCURRENCY = 4;

/** Default IndexerServiceOptions.encodeConcurrency: staged layers encoded at once. */
const DEFAULT_ENCODE_CONCURRENCY = 1;
/** The key of image()'s run for `ref` on `platform` (single-flight and its resolution). */
function runKey(ref: Reference, platform: string): string {
  return `${formatReference(ref)}|${platform}`;
}

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
  /** The registry (RegistryClient), through its seam. */
  client: ImageSource;
  store: MetadataStore;
  cache: ContentCache;
  metrics: ProxyMetrics;
  logger: Logger;
  /** Raw contents of fresh layers until encoded; without it every pass encodes inline (slow first pull). */
  staging?: StagingArea;
  /** Layer passes (blob fetch + TOC) at once, proxy-wide. Default DEFAULT_INDEX_CONCURRENCY. */
  indexConcurrency?: number;
  /** Staged layers encoded at once in the background. Default DEFAULT_ENCODE_CONCURRENCY. */
  encodeConcurrency?: number;
  /** Bounds on reading one layer (src/layers/limits.ts); unset ones take DEFAULT_LAYER_LIMITS. */
  layerLimits?: Partial<LayerLimits>;
  /** Replicas sharing a database (--db): index once across them, fill cache misses from peers (replica-sync.ts). */
  replicas?: ReplicaSync;
  /**
   * Called with a layer's encoded TOC once this proxy recorded it (the server compresses it for
   * headers then, so no header waits for that: session/toc-wire.ts). Must not throw.
   */
  onLayerIndexed?: (diffID: string, toc: Buffer) => void;
  /**
   * First passes of gzip layers with staging on read natively, their bytes off the main thread
   * (src/layers/native-index.ts). Default true; false: the streaming pass always (tests compare them).
   */
  nativePass?: boolean;
}

export class IndexerService {
  private readonly images = new Map<string, Promise<IndexedImage>>();
  private readonly layers = new Map<string, Promise<LayerToc>>();
  private readonly refetches = new Map<string, Promise<void>>();
  /** Image records of the runs in flight, by image key: resolved once manifest and config are (before the layers). */
  private readonly resolving = new Map<string, Promise<ImageRecord>>();
  /** Decoded TOCs of recently used layers (decoding a 3000-entry TOC per request showed in TTFB). */
  private readonly decoded = new LRUCache<string, LayerToc>({ max: DECODED_TOCS });

  private readonly passes: Semaphore;
  private readonly encoder: BackgroundEncoder;
  /** Aborts running passes at close(). */
  private readonly closing = new AbortController();
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly o: IndexerServiceOptions) {
    this.passes = new Semaphore(o.indexConcurrency ?? DEFAULT_INDEX_CONCURRENCY);
    this.encoder = new BackgroundEncoder({
      cache: o.cache,
      logger: o.logger,
      concurrency: o.encodeConcurrency ?? DEFAULT_ENCODE_CONCURRENCY,
      yieldTo: () => this.passesIdle(),
    });
  }

  /**
   * Resolves `ref` for `platform` and makes sure every layer is indexed (TOCs recorded; contents
   * cached or staged). Single-flight per ref+platform. Failures name the image and the layer.
   */
  image(ref: Reference, platform: string, signal?: AbortSignal): Promise<IndexedImage> {
    const key = runKey(ref, platform);
    let p = this.images.get(key);
    if (p === undefined) {
      let resolved!: (r: ImageRecord) => void;
      this.resolving.set(key, new Promise<ImageRecord>((r) => (resolved = r)));
      // Not bound to one caller's signal: other callers may share this run.
      p = this.indexImage(ref, platform, resolved)
        .catch((err: unknown) => {
          throw withContext(err, `index ${formatReference(ref)}`, { image: formatReference(ref) });
        })
        .finally(() => {
          this.images.delete(key);
          this.resolving.delete(key);
          this.wakeIdle();
        });
      this.images.set(key, p);
    }
    return signal === undefined ? p : raceAbort(p, signal);
  }

  /**
   * While image() runs for `ref`: its record (manifest, config, chain), resolved as soon as the
   * registry answered for manifest and config, before any layer is indexed or, for an image indexed
   * already, before its TOCs are read and its delta planned (it never settles if the run fails
   * first: race it with image()). Undefined when no run is in flight. Nothing is recorded yet: the
   * image is recorded once every layer is indexed.
   */
  resolution(ref: Reference, platform: string): Promise<ImageRecord> | undefined {
    return this.resolving.get(runKey(ref, platform));
  }

  /** Resolves when the background encoding of `diffIDs` is done: their contents are cached (warm). */
  settled(diffIDs: readonly string[]): Promise<void> {
    return this.encoder.settled(diffIDs);
  }

  /** Pauses background encoding until the returned release is called (BackgroundEncoder.hold). */
  holdEncoding(): () => void {
    return this.encoder.hold();
  }

  /** Images and layers being indexed right now (the /metrics gauge). */
  get indexing(): number {
    return this.images.size + this.layers.size;
  }

  /** Staged layers whose background encoding is not finished (the /metrics gauge). */
  get encodesPending(): number {
    return this.encoder.pending;
  }

  /** True while an image or layer is being indexed. */
  get busy(): boolean {
    return this.images.size > 0 || this.layers.size > 0;
  }

  /** Resolves once nothing is being indexed (a content request for a digest not known yet waits here). */
  idle(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops: aborts running layer passes, lets background encodes finish for up to `graceMs` (so a
   * restart right after a first pull is warm), then stops them; resolves when their files are gone.
   */
  async close(graceMs = 0): Promise<void> {
    this.closing.abort();
    await Promise.allSettled([...this.images.values(), ...this.layers.values()]);
    await this.encoder.close(graceMs);
  }

  private wakeIdle(): void {
    if (this.busy) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /** Resolves when no layer pass is running or waiting. */
  private async passesIdle(): Promise<void> {
    while (this.layers.size > 0) await Promise.allSettled([...this.layers.values()]);
  }

  /** `resolved`: called with the image's record once manifest and config are resolved and consistent (resolution()). */
  private async indexImage(ref: Reference, platform: string, resolved: (r: ImageRecord) => void): Promise<IndexedImage> {
    const name = formatReference(ref);
    const cachedDigest = ref.digest ?? undefined;
    let record = cachedDigest !== undefined ? this.o.store.manifest(cachedDigest) : undefined;
    if (record === undefined && cachedDigest !== undefined) record = await this.o.replicas?.shared.manifest(cachedDigest);
    let layers: Descriptor[];
    if (record === undefined) {
      const t0 = performance.now();
      // A tag of an image indexed before resolves with one registry request (its config is stored).
      const r = await this.registry(() => this.o.client.resolve(ref, platform, undefined, (digest) => this.o.store.manifest(digest)?.config));
      this.o.logger.info('image-resolved', { image: name, manifestDigest: r.manifestDigest, seconds: (performance.now() - t0) / 1000 });
      record = {
        manifestDigest: r.manifestDigest,
        mediaType: r.manifestMediaType,
        manifest: r.manifestBytes,
        config: r.configBytes,
        repository: `${ref.registry}/${ref.repository}`,
        diffIDs: r.config.rootfs.diff_ids,
      };
      layers = r.manifest.layers;
    } else {
      layers = (JSON.parse(record.manifest.toString('utf8')) as { layers: Descriptor[] }).layers;
    }
    const config = JSON.parse(record.config.toString('utf8')) as ImageConfig;
    if (layers.length !== record.diffIDs.length) {
      throw new StarlightError('SL_ERR_OCI_MANIFEST', `manifest of ${name} has ${layers.length} layers, its config ${record.diffIDs.length} diff_ids`, {
        details: { image: name, layers: layers.length, diffIDs: record.diffIDs.length },
      });
    }
    // Announced also for an image indexed already: its IMAGE frame lets the worker start containerd's
    // calls while the delta is planned (an update's plan, 30-60 ms at RTT 0: issue 19, session 11).
    resolved(record);
    // At most perImage of this image's layers queue for the proxy-wide passes at once, so one image of
    // many layers cannot hold every pass while other images wait.
    const perImage = new Semaphore(Math.max(1, Math.ceil((this.o.indexConcurrency ?? DEFAULT_INDEX_CONCURRENCY) / 2)));
    const tocs = await Promise.all(layers.map((desc, i) => perImage.run(() => this.layer(record.repository, desc, record.diffIDs[i]!))));
    // Recorded only now: a ref whose layers did not all index is not recorded as an image.
    this.o.store.putImage(name, platform, record);
    await this.o.replicas?.shared.putImage(name, platform, record);
    return { ref: name, platform, record, config, tocs };
  }

  /** The TOC of one layer, indexing it first if needed. Single-flight per diffID. */
  layer(repository: string, desc: Descriptor, diffID: string): Promise<LayerToc> {
    const known = this.toc(diffID);
    if (known !== undefined) return Promise.resolve(known);
    let p = this.layers.get(diffID);
    if (p === undefined) {
      p = this.passes
        .run(() => this.indexLayerOnce(repository, desc, diffID))
        .finally(() => {
          this.layers.delete(diffID);
          this.wakeIdle();
        });
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

  /** Forgets the memoized TOCs of layers the metadata GC deleted (gc.ts): asked for again, they are re-indexed. */
  forgetLayers(diffIDs: readonly string[]): void {
    for (const d of diffIDs) this.decoded.delete(d);
  }

  /**
   * indexLayer, once across replicas (--db): a layer another replica indexed is copied from the shared
   * store; one being indexed by another replica is waited for (its shared index lock), then copied.
   */
  private async indexLayerOnce(repository: string, desc: Descriptor, diffID: string): Promise<LayerToc> {
    const r = this.o.replicas;
    if (r === undefined) return this.indexLayer(repository, desc, diffID);
    if (await r.hydrateLayer(diffID)) return this.toc(diffID)!;
    return r.shared.withIndexLock(
      `layer:${diffID}`,
      async () => {
        if (await r.hydrateLayer(diffID)) return this.toc(diffID)!;
        const toc = await this.indexLayer(repository, desc, diffID);
        await r.shared.putLayerIndex(this.o.store.layer(diffID)!, layerContents(diffID, toc));
        return toc;
      },
      this.closing.signal,
    );
  }

  private async indexLayer(repository: string, desc: Descriptor, diffID: string): Promise<LayerToc> {
    const t0 = process.hrtime.bigint();
    // Phase times of the pass for the 'layer-indexed' log (issue 10's first-contact timeline).
    const at: { fetched?: bigint; parsed?: bigint } = {};
    const { toc, stage, staged, fromLayer, native } = await this.passLayer(repository, desc, diffID, at);
    at.parsed = process.hrtime.bigint();
    let tocBytes: Buffer;
    try {
      // entry.digest is set once a file's bytes were hashed, i.e. by now for every staged entry.
      const contents = new Map<string, { digest: string; size: number; offset: number }>();
      for (const { entry, offset } of staged) if (!contents.has(entry.digest!)) contents.set(entry.digest!, { digest: entry.digest!, size: entry.size, offset });
      await stage?.commit([...contents.values()]);
      const rows = [...contents.values()].map((c) => ({ digest: c.digest, size: c.size, sourceDiffID: diffID }));
      for (const e of fromLayer) rows.push({ digest: e.digest!, size: e.size, sourceDiffID: diffID });
      // Committing, encoding the TOC and storing the rows each take ~100 ms for 20 000 files at load ~9:
      // the event loop runs between them (issue 14, /healthz).
      await yieldToLoop();
      tocBytes = Buffer.from(encodeToc(toc));
      await yieldToLoop();
      await this.o.store.putLayerIndex(
        {
          diffID,
          layerDigest: desc.digest,
          mediaType: desc.mediaType,
          compressedSize: desc.size,
          uncompressedSize: toc.uncompressedSize,
          repository,
          toc: tocBytes,
        },
        // Every staged content gets a row (cached = 0 until the encoder or a re-fetch stores it), and
        // so does every content served from the layer (cached = 0 for good).
        rows,
      );
    } catch (err) {
      await stage?.discard();
      throw err;
    }
    if (stage !== undefined) void this.encoder.enqueue(stage);
    this.o.onLayerIndexed?.(diffID, tocBytes);
    const t1 = process.hrtime.bigint();
    const secs = Number(t1 - t0) / 1e9;
    const since = (t?: bigint): number | undefined => (t === undefined ? undefined : Number(t - t0) / 1e9);
    this.o.metrics.layersIndexed++;
    this.o.metrics.indexSeconds += secs;
    // fetchedSeconds: the registry answered; parsedSeconds: the pass read the blob's end (then commit + record).
    this.o.logger.info('layer-indexed', { diffID, digest: desc.digest, entries: toc.entries.length, staged: staged.length, fromLayer: fromLayer.length, native, seconds: secs, fetchedSeconds: since(at.fetched), parsedSeconds: since(at.parsed) });
    return toc;
  }

  /**
   * One pass over a layer blob for its first index: the native pass where it applies, else (or when
   * it falls back) the streaming one. Files the cache will hold are staged (when staging is on and has
   * room; else encoded into the cache inline), larger ones only hashed (served from the layer). On
   * failure nothing is left staged.
   */
  private async passLayer(repository: string, desc: Descriptor, diffID: string, at: { fetched?: bigint }): Promise<LayerPass> {
    const staging = this.o.staging;
    if (staging !== undefined && this.o.nativePass !== false && nativeTarWalkFor(desc.mediaType)) {
      const stage = staging.begin(diffID);
      const files: LayerFiles = { staged: [], fromLayer: [] };
      try {
        const toc = await this.readLayerNative(repository, desc, diffID, stage, files, at);
        return { toc, stage, ...files, native: true };
      } catch (err) {
        await stage.discard();
        if (!(err instanceof NativePassFallback)) throw err;
        // Staging full, or a tar the native walk leaves to the streaming pass: read it again that way.
        this.o.logger.info('layer-native-fallback', { diffID, digest: desc.digest, reason: err.reason });
      }
    }
    const stage = staging?.begin(diffID);
    const files: LayerFiles = { staged: [], fromLayer: [] };
    try {
      const toc = await this.readLayer(repository, desc, diffID, {
        signal: this.closing.signal,
        onFileSink: (entry) => {
          if (this.o.cache.servedFromLayer(entry.size)) {
            files.fromLayer.push(entry);
            return HASH_ONLY;
          }
          if (stage === undefined || entry.size === 0 || !stage.reserve(entry.size)) return undefined;
          files.staged.push({ entry, offset: stage.position });
          return stage;
        },
        // Staging is full (or off): encode inline (the first pull then waits for it).
        onFile: async (entry, content) => void (await this.o.cache.put(content, entry.size, diffID)),
        at,
      });
      return { toc, stage, ...files, native: false };
    } catch (err) {
      await stage?.discard();
      throw err;
    }
  }

  /**
   * The first index pass of a gzip layer, its bytes kept off the main thread (src/layers/native-index.ts):
   * every file the cache will hold is staged whole into `stage` (its budget reserved per file), larger
   * ones are only hashed (served from the layer). Rejects with NativePassFallback when the stage is
   * full or the tar needs the streaming pass.
   */
  private async readLayerNative(repository: string, desc: Descriptor, diffID: string, stage: LayerStage, files: LayerFiles, at: { fetched?: bigint }): Promise<LayerToc> {
    const blob = await this.fetchLayer(repository, desc, diffID);
    at.fetched = process.hrtime.bigint();
    try {
      return await buildLayerTocNative(blob, {
        expectedDiffID: diffID,
        layerName: desc.digest,
        limits: this.o.layerLimits,
        signal: this.closing.signal,
        stageMax: this.o.cache.largestCached(),
        onFile: (entry, stagedAt) => {
          if (this.o.cache.servedFromLayer(entry.size)) files.fromLayer.push(entry);
          else if (stagedAt !== undefined) {
            if (!stage.reserve(entry.size)) return false;
            files.staged.push({ entry, offset: stagedAt });
          }
          return true;
        },
        write: (bytes) => stage.write(bytes),
      });
    } catch (err) {
      blob.destroy();
      if (err instanceof NativePassFallback) throw err;
      throw layerPassError(err, repository, desc, diffID, this.closing.signal);
    }
  }

  /** The blob of a layer from the registry (counted); errors name layer and repository. */
  private async fetchLayer(repository: string, desc: Descriptor, diffID: string): Promise<Readable> {
    const ref = parseReference(`${repository}@${desc.digest}`);
    try {
      const blob = await this.registry(() => this.o.client.fetcher(ref).fetch(desc));
      this.o.metrics.registryBlobFetches++;
      return blob;
    } catch (err) {
      throw withContext(err, `fetch layer ${desc.digest} of ${repository}`, { layer: desc.digest, diffID });
    }
  }

  /** Fetches and reads a layer blob, handing each regular file to `onFile` (default: store it in the cache). */
  private async readLayer(
    repository: string,
    desc: Descriptor,
    diffID: string,
    opts: { only?: ReadonlySet<string>; onFile?: (entry: TocEntry, content: Readable) => Promise<void>; onFileSink?: BuildTocOptions['onFileSink']; signal?: AbortSignal; at?: { fetched?: bigint } } = {},
  ): Promise<LayerToc> {
    const blob = await this.fetchLayer(repository, desc, diffID);
    if (opts.at !== undefined) opts.at.fetched = process.hrtime.bigint();
    const only = opts.only;
    const onFile = opts.onFile ?? (async (entry: TocEntry, content: Readable) => void (await this.o.cache.put(content, entry.size, diffID, { only })));
    try {
      return await buildLayerToc(blob, {
        mediaType: desc.mediaType,
        expectedDiffID: diffID,
        layerName: desc.digest,
        limits: this.o.layerLimits,
        signal: opts.signal,
        // A file served from its layer is never stored, also not by a re-fetch (its raw temp file alone
        // would take its whole size on disk).
        onFileSink: opts.onFileSink ?? ((entry) => (this.o.cache.servedFromLayer(entry.size) ? HASH_ONLY : undefined)),
        onFile: async (entry, content) => {
          if (entry.size === 0) return;
          await onFile(entry, content);
        },
      });
    } catch (err) {
      blob.destroy();
      throw layerPassError(err, repository, desc, diffID, opts.signal);
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
        let only = wanted;
        if (this.o.replicas !== undefined) {
          const got = await this.o.replicas.fillFromPeers(diffID, wanted);
          if (got.size === wanted.size) return;
          only = new Set([...wanted].filter((d) => !got.has(d)));
        }
        await this.readLayer(l.repository, { mediaType: l.mediaType, digest: l.layerDigest, size: l.compressedSize }, diffID, { only });
        this.o.logger.info('layer-refetched', { diffID, wanted: wanted.size });
      })().finally(() => this.refetches.delete(diffID));
      this.refetches.set(diffID, p);
    }
    return p;
  }

  /**
   * The raw bytes of `digest`, a content of layer `diffID` too large for the cache
   * (ContentCache.servedFromLayer), read out of the layer blob from the registry: decompressed from the
   * blob's start up to the file, each 1 MiB chunk checked against the TOC (src/layers/file-extract.ts).
   * `range`: only file bytes [start, end) (GET /v1/content with a Range header). Rejects with
   * SL_ERR_PROXY_CONTENT_NOT_FOUND when the layer is not indexed or holds no such file, or with the
   * registry's error.
   */
  async openFromLayer(diffID: string, digest: string, range?: { start: number; end: number }): Promise<Readable> {
    const l = this.o.store.layer(diffID);
    const entry = this.toc(diffID)?.entries.find((e) => e.type === 'reg' && e.digest === digest && e.offset !== undefined);
    if (l === undefined || entry === undefined) {
      throw new StarlightError('SL_ERR_PROXY_CONTENT_NOT_FOUND', `content ${digest} is not a file of indexed layer ${diffID}`, { details: { digest, diffID } });
    }
    const desc = { mediaType: l.mediaType, digest: l.layerDigest, size: l.compressedSize };
    let blob: Readable;
    try {
      blob = await this.registry(() => this.o.client.fetcher(parseReference(`${l.repository}@${desc.digest}`)).fetch(desc));
    } catch (err) {
      throw withContext(err, `fetch layer ${desc.digest} of ${l.repository} for ${entry.path}`, { layer: desc.digest, diffID });
    }
    this.o.metrics.registryBlobFetches++;
    this.o.logger.info('content-from-layer', { digest, diffID, path: entry.path, size: entry.size, offset: entry.offset, ...(range !== undefined ? { range: `${range.start}-${range.end}` } : {}) });
    return extractLayerFile(blob, entry, { mediaType: desc.mediaType, layerName: desc.digest, maxZstdWindowBytes: this.o.layerLimits?.maxZstdWindowBytes, range });
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

/**
 * What a failed pass over layer `desc` reports: SL_ERR_CANCELED when `signal` (the proxy closing)
 * stopped it, else the layer's own error (asLayerError) naming layer and repository.
 */
function layerPassError(err: unknown, repository: string, desc: Descriptor, diffID: string, signal: AbortSignal | undefined): unknown {
  const where = { layer: desc.digest, diffID };
  if (signal?.aborted) return new StarlightError('SL_ERR_CANCELED', `indexing layer ${desc.digest} stopped: the proxy is closing`, { details: where });
  return withContext(asLayerError(err), `index layer ${desc.digest} of ${repository}`, where);
}

/**
 * A failure while reading a layer's bytes: StarlightErrors as they are; anything else (a decoder or
 * parser throwing a plain Error, an allocation failing on absurd sizes) is the layer's fault, so bad
 * data rather than "internal". Resource errors from V8 (RangeError: invalid array length, buffer too
 * large) are the layer exceeding what can be held: resource-exhausted.
 */
function asLayerError(err: unknown): unknown {
  if (err instanceof StarlightError || !(err instanceof Error) || err.name === 'AbortError') return err;
  if (err instanceof RangeError) return new StarlightError('SL_ERR_IMAGE_LIMIT', `the layer needs more memory than the proxy can give it: ${err.message}`, { cause: err });
  return new StarlightError('SL_ERR_IMAGE_BAD_TAR', `the layer could not be read: ${err.message}`, { cause: err });
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
