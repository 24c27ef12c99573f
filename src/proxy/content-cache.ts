/**
 * The proxy's content cache: each distinct file content stored once on disk, encoded per file
 * (brotli q5 unless small or incompressible: docs/design-notes.md), under <data>/content/sha256/xx/<hex>,
 * bounded by `maxBytes` of encoded bytes with LRU eviction. The LRU lives in memory (lru-cache) and is
 * rebuilt from the metadata store at start; evicted contents stay known to the store (cached = 0) so a
 * later request re-fetches them from their source layer (indexer-service.ts).
 *
 * Not here: fetching layers, choosing what to send.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { brotliCompress, brotliCompressSync, constants as zc, createBrotliCompress, type BrotliOptions } from 'node:zlib';
import { LRUCache } from 'lru-cache';
import { StarlightError } from '../errors.js';
import type { Encoding } from '../protocol/constants.js';
import type { ContentRecord, MetadataStore } from './store.js';
import { sha256Digest } from '../oci/digest.js';

/** Contents smaller than this (bytes) are stored 'identity': too small for compression to pay (design-notes). */
export const MIN_COMPRESS_BYTES = 512;
/** Keep the encoded form only if it is at most this fraction of the raw size; else 'identity'. */
export const MAX_USEFUL_RATIO = 0.9;
/** Brotli quality of the compressibility probe (q1: ~200 MB/s, ratio within ~10 % of q5). */
const SAMPLE_QUALITY = 1;
/** Brotli quality for stored contents (measured: docs/design-notes.md). */
const BROTLI_QUALITY = 5;
/** Encoded contents up to this size (bytes) are read whole by open(): most image files are small. */
const WHOLE_READ_BYTES = 256 * 1024;
/** Encoded contents up to this size (bytes) are read synchronously by open() (see there). */
const SYNC_READ_BYTES = 64 * 1024;
/** Contents up to this size (bytes) are buffered in memory while indexing instead of via a temp file. */
const IN_MEMORY_BYTES = 256 * 1024;
/** Read size of content streams (bytes): one CONTENT frame's worth. */
const STREAM_READ_BYTES = 1024 * 1024;
/**
 * Default bound (bytes) of the in-memory tier of verified encoded contents (ContentCacheOptions.hotBytes).
 * A rollout streams the same image to many workers at once: serving its items from memory removes the
 * per-item store query, file reads and sha256 check (bench/proxy.ts --fanout, docs/design-notes.md
 * "Serving many pulls").
 */
const DEFAULT_HOT_BYTES = 256 * 1024 * 1024;
/** Encoded contents up to this size (bytes) are read whole into the in-memory tier; larger ones stream. */
const HOT_ITEM_BYTES = 4 * 1024 * 1024;
/**
 * Contents larger than --cache-size divided by this are never cached, staged or written to a temp
 * file: the index pass only hashes them and they are served from their layer blob (issue 14, model
 * weights; docs/design-notes.md "Files larger than the cache"). A quarter keeps one such file from
 * evicting most of the cache, and bounds the temp files of an inline put (raw + encoded) to half of it.
 */
const LAYER_SERVED_FRACTION = 4;
/** Persist last-access times to the store after this many touches (and on close). */
const TOUCH_FLUSH_EVERY = 1000;
/**
 * A content's last access is persisted at most once per this many ms: it only orders the LRU rebuilt
 * at the next start, and one store write per item sent cost ~20 ms per 1000 items on the serving
 * thread of a rollout (bench/proxy.ts --fanout).
 */
const TOUCH_PERSIST_MS = 5 * 60_000;

export interface CacheCounters {
  hits: number;
  misses: number;
  evictions: number;
  /** Cache files whose encoded bytes did not hash to the recorded digest (dropped, re-fetched). */
  corrupt: number;
}

export interface ContentCacheOptions {
  /** The --data dir; contents go to <dir>/content. */
  dir: string;
  /** Bound on stored encoded bytes (--cache-size). */
  maxBytes: number;
  store: MetadataStore;
  counters?: CacheCounters;
  /** Bound (bytes) of the in-memory tier of verified encoded contents; default DEFAULT_HOT_BYTES, 0 = none. */
  hotBytes?: number;
}

/** A cached content held in memory, verified when it was read from disk. */
interface HotItem {
  rec: ContentRecord;
  data: Buffer;
}

/**
 * Larger contents are first probed on their first SAMPLE_BYTES: brotli on random/pre-compressed data
 * (e.g. 90 MB of .so-like random bytes in bench/proxy.ts) spent ~3 s of a 12 s cold index for nothing.
 */
export const SAMPLE_BYTES = 256 * 1024;

async function sampleCompresses(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(SAMPLE_BYTES);
    const { bytesRead } = await fh.read(buf, 0, SAMPLE_BYTES, 0);
    return sampleWorthCompressing(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/** True if brotli q1 makes `sample` (≤ SAMPLE_BYTES of a content) small enough to keep (MAX_USEFUL_RATIO). */
export function sampleWorthCompressing(sample: Buffer): boolean {
  const enc = brotliCompressSync(sample, { params: { [zc.BROTLI_PARAM_QUALITY]: SAMPLE_QUALITY, [zc.BROTLI_PARAM_SIZE_HINT]: sample.length } });
  return enc.length <= sample.length * MAX_USEFUL_RATIO;
}


const brotli = promisify(brotliCompress) as (buf: Buffer, opts: BrotliOptions) => Promise<Buffer>;

/** `buf` brotli-compressed at `quality` on node's thread pool (the event loop runs meanwhile). */
export function brotliAt(buf: Buffer, quality: number): Promise<Buffer> {
  return brotli(buf, { params: { [zc.BROTLI_PARAM_QUALITY]: quality, [zc.BROTLI_PARAM_SIZE_HINT]: buf.length } });
}

export class ContentCache {
  private readonly root: string;
  private readonly tmp: string;
  private readonly lru: LRUCache<string, number>;
  private readonly store: MetadataStore;
  readonly counters: CacheCounters;
  private readonly touched = new Map<string, number>();
  /**
   * Changes of which digests are cached (admissions, evictions, deletions) so far: equal numbers mean
   * has() answers as before for every digest (plan-cache.ts skips re-checking a plan's items then).
   */
  membershipChanges = 0;
  /** Single-flight of concurrent puts of the same digest. */
  private readonly inflight = new Map<string, Promise<ContentRecord>>();
  /** Verified encoded bytes of recently served contents (see DEFAULT_HOT_BYTES); undefined: no memory tier. */
  private readonly hot: LRUCache<string, HotItem> | undefined;
  /** When each content's last access was last queued for the store (see TOUCH_PERSIST_MS). */
  private readonly persistedAt = new Map<string, number>();
  /** Single-flight of whole reads into `hot` (concurrent streams of one image read each file once). */
  private readonly reading = new Map<string, Promise<{ rec: ContentRecord; body: Buffer } | undefined>>();

  constructor(opts: ContentCacheOptions) {
    this.root = join(opts.dir, 'content', 'sha256');
    this.tmp = join(opts.dir, 'content', 'tmp');
    mkdirSync(this.root, { recursive: true });
    rmSync(this.tmp, { recursive: true, force: true });
    mkdirSync(this.tmp, { recursive: true });
    this.store = opts.store;
    this.counters = opts.counters ?? { hits: 0, misses: 0, evictions: 0, corrupt: 0 };
    this.lru = new LRUCache<string, number>({
      maxSize: Math.max(1, opts.maxBytes),
      sizeCalculation: (v) => Math.max(1, v),
      dispose: (_v, digest, reason) => {
        if (reason !== 'evict' && reason !== 'delete') return;
        this.membershipChanges++;
        this.counters.evictions++;
        this.store.setCached(digest, false);
        this.hot?.delete(digest);
        this.persistedAt.delete(digest);
        rmSync(this.pathOf(digest), { force: true });
      },
    });
    const hotBytes = Math.min(opts.hotBytes ?? DEFAULT_HOT_BYTES, opts.maxBytes);
    this.hot = hotBytes > 0 ? new LRUCache<string, HotItem>({ maxSize: hotBytes, sizeCalculation: (v) => Math.max(1, v.data.length) }) : undefined;
    for (const c of this.store.cachedContents()) {
      try {
        statSync(this.pathOf(c.digest));
        this.lru.set(c.digest, c.encodedSize);
      } catch {
        this.store.setCached(c.digest, false);
      }
    }
  }

  /** Bound on stored encoded bytes (--cache-size): a content encoded larger than this is never cached. */
  get maxBytes(): number {
    return this.lru.maxSize;
  }

  /** True if a content of `size` raw bytes is never cached: it is served from its layer blob (LAYER_SERVED_FRACTION). */
  servedFromLayer(size: number): boolean {
    return size > this.largestCached();
  }

  /** The largest raw size a content may have and be cached (larger ones: servedFromLayer). */
  largestCached(): number {
    return Math.floor(this.lru.maxSize / LAYER_SERVED_FRACTION);
  }

  pathOf(digest: string): string {
    const hex = digest.slice('sha256:'.length);
    return join(this.root, hex.slice(0, 2), hex);
  }

  /** Encoded bytes currently stored. */
  get storedBytes(): number {
    return this.lru.calculatedSize;
  }

  has(digest: string): boolean {
    return this.lru.has(digest);
  }

  /**
   * Stores `content` (raw bytes, `size` long) under its sha256, computed while reading (the indexer
   * learns a file's digest only after its bytes). If `expectedDigest` is given a mismatch fails with
   * SL_ERR_OCI_DIGEST_MISMATCH. Content already cached is not stored twice. With `only`, contents
   * whose digest is not in it are hashed but not stored (re-fetching a few evicted items of a layer
   * must not evict the rest). Returns the record, or undefined when skipped by `only`.
   */
  async put(
    content: Readable,
    size: number,
    sourceDiffID: string,
    opts: { expectedDigest?: string; only?: ReadonlySet<string> } = {},
  ): Promise<ContentRecord | undefined> {
    if (size <= IN_MEMORY_BYTES) return this.putSmall(content, size, sourceDiffID, opts);
    const expectedDigest = opts.expectedDigest;
    const base = join(this.tmp, randomBytes(8).toString('hex'));
    const rawPath = base + '.raw';
    const encPath = base + '.br';
    try {
      const hash = createHash('sha256');
      let n = 0;
      content.on('data', (b: Buffer) => {
        hash.update(b);
        n += b.length;
      });
      await pipeline(content, createWriteStream(rawPath));
      const digest = 'sha256:' + hash.digest('hex');
      if ((expectedDigest !== undefined && digest !== expectedDigest) || n !== size) {
        throw new StarlightError('SL_ERR_OCI_DIGEST_MISMATCH', `content expected as ${expectedDigest ?? digest} hashed to ${digest} (${n} of ${size} bytes)`, {
          details: { digest: expectedDigest ?? digest, got: digest },
        });
      }
      if (opts.only !== undefined && !opts.only.has(digest)) return undefined;
      const known = this.store.content(digest);
      if (known?.cached === true && this.lru.has(digest)) return known;
      const running = this.inflight.get(digest);
      if (running !== undefined) return await running;
      const p = this.commit(digest, size, rawPath, encPath, sourceDiffID).finally(() => this.inflight.delete(digest));
      this.inflight.set(digest, p);
      return await p;
    } finally {
      await rm(rawPath, { force: true });
      await rm(encPath, { force: true });
    }
  }

  /** put() for small contents: buffered in memory, compressed on the thread pool, one file written. */
  private async putSmall(
    content: Readable,
    size: number,
    sourceDiffID: string,
    opts: { expectedDigest?: string; only?: ReadonlySet<string> },
  ): Promise<ContentRecord | undefined> {
    const parts: Buffer[] = [];
    let n = 0;
    for await (const b of content as AsyncIterable<Buffer>) {
      n += b.length;
      if (n > size) break;
      parts.push(b);
    }
    const data = Buffer.concat(parts);
    const digest = sha256Digest(data);
    if ((opts.expectedDigest !== undefined && digest !== opts.expectedDigest) || n !== size) {
      throw new StarlightError('SL_ERR_OCI_DIGEST_MISMATCH', `content expected as ${opts.expectedDigest ?? digest} hashed to ${digest} (${n} of ${size} bytes)`, {
        details: { digest: opts.expectedDigest ?? digest, got: digest },
      });
    }
    if (opts.only !== undefined && !opts.only.has(digest)) return undefined;
    const known = this.store.content(digest);
    if (known?.cached === true && this.lru.has(digest)) return known;
    const running = this.inflight.get(digest);
    if (running !== undefined) return await running;
    const p = (async (): Promise<ContentRecord> => {
      let encoding: Encoding = 'identity';
      let body: Buffer = data;
      if (size >= MIN_COMPRESS_BYTES) {
        const enc = await brotliAt(data, BROTLI_QUALITY);
        if (enc.length <= size * MAX_USEFUL_RATIO) {
          encoding = 'br';
          body = enc;
        }
      }
      const tmp = join(this.tmp, randomBytes(8).toString('hex'));
      const encodedDigest = encoding === 'identity' ? digest : sha256Digest(body);
      try {
        await writeFile(tmp, body);
        const rec = await this.install(digest, size, body.length, encoding, tmp, sourceDiffID, encodedDigest);
        if (rec.cached) this.hot?.set(digest, { rec, data: body });
        return rec;
      } finally {
        await rm(tmp, { force: true });
      }
    })().finally(() => this.inflight.delete(digest));
    this.inflight.set(digest, p);
    return await p;
  }

  private async commit(digest: string, size: number, rawPath: string, encPath: string, sourceDiffID: string): Promise<ContentRecord> {
    let encoding: Encoding = 'identity';
    let encodedSize = size;
    let finalTmp = rawPath;
    let encodedDigest = digest;
    if (size >= MIN_COMPRESS_BYTES && (size <= SAMPLE_BYTES || (await sampleCompresses(rawPath)))) {
      const hash = createHash('sha256');
      await pipeline(
        createReadStream(rawPath),
        createBrotliCompress({ params: { [zc.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY, [zc.BROTLI_PARAM_SIZE_HINT]: size } }),
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            cb(null, chunk);
          },
        }),
        createWriteStream(encPath),
      );
      const es = (await stat(encPath)).size;
      if (es <= size * MAX_USEFUL_RATIO) {
        encoding = 'br';
        encodedSize = es;
        finalTmp = encPath;
        encodedDigest = 'sha256:' + hash.digest('hex');
      }
    }
    return this.install(digest, size, encodedSize, encoding, finalTmp, sourceDiffID, encodedDigest);
  }

  /** Renames the finished encoded file into place and records it (store + LRU). */
  private async install(
    digest: string,
    size: number,
    encodedSize: number,
    encoding: Encoding,
    finalTmp: string,
    sourceDiffID: string,
    encodedDigest: string,
  ): Promise<ContentRecord> {
    const dest = this.pathOf(digest);
    mkdirSync(join(dest, '..'), { recursive: true });
    await rename(finalTmp, dest);
    const rec: ContentRecord = { digest, size, encodedSize, encoding, sourceDiffID, cached: true, lastAccess: Date.now(), encodedDigest };
    this.store.putContent(rec);
    if (!this.lru.has(digest)) this.membershipChanges++;
    this.lru.set(digest, encodedSize);
    if (!this.lru.has(digest)) {
      // larger than the whole cache: lru-cache refuses it (contents over a quarter of it are not put: servedFromLayer)
      this.store.setCached(digest, false);
      await rm(dest, { force: true });
      return { ...rec, cached: false };
    }
    return rec;
  }

  /**
   * Opens the encoded bytes of `digest`: read whole when small (≤ WHOLE_READ_BYTES: one syscall, no
   * stream machinery per item), else a stream (the open fd survives a concurrent eviction).
   * Returns undefined on a miss (never stored, or evicted): the caller re-fetches.
   *
   * The bytes are checked against the recorded encoded digest (a corrupt cache file was otherwise
   * served forever): a whole read that does not match counts as a miss (the entry is dropped, so the
   * caller re-fetches it from its layer before anything is sent); a stream is hashed as it is read and,
   * on a mismatch at its end, the entry is dropped for the next reader (the bytes already went out:
   * the worker's digest check refuses them and it asks again).
   */
  async open(digest: string): Promise<{ rec: ContentRecord; body: Buffer | Readable } | undefined> {
    if (this.hot !== undefined && this.lru.has(digest)) {
      const h = this.inMemory(digest);
      if (h !== undefined) return { rec: h.rec, body: h.data };
      const pending = this.reading.get(digest);
      if (pending !== undefined) return pending;
    }
    const rec = this.store.content(digest);
    if (rec === undefined || !this.lru.has(digest)) {
      this.counters.misses++;
      return undefined;
    }
    // With the memory tier a file is read once while it stays there: asynchronously (a cold page
    // cache under disk load made each sync read block every stream of the process for milliseconds).
    if (this.hot !== undefined && rec.encodedSize <= HOT_ITEM_BYTES) {
      const p = this.readWhole(rec).finally(() => this.reading.delete(digest));
      this.reading.set(digest, p);
      return p;
    }
    if (rec.encodedSize <= SYNC_READ_BYTES) {
      // Small files are read synchronously: from the page cache this is ~15 µs, while the async
      // open/fstat/read/close round trips through the thread pool made a warm delta of 3000 small
      // files take ~200 µs per item (bench/proxy.ts, docs/design-notes.md).
      let data: Buffer;
      try {
        data = readFileSync(this.pathOf(digest));
      } catch {
        this.counters.misses++;
        this.lru.delete(digest);
        return undefined;
      }
      if (!this.intact(rec, data)) return undefined;
      this.counters.hits++;
      this.lru.get(digest);
      this.touch(digest);
      return { rec, body: data };
    }
    let fh;
    try {
      fh = await open(this.pathOf(digest), 'r');
    } catch {
      this.counters.misses++;
      this.lru.delete(digest);
      return undefined;
    }
    this.counters.hits++;
    this.lru.get(digest); // refresh recency
    this.touch(digest);
    if (rec.encodedSize <= WHOLE_READ_BYTES) {
      let data: Buffer;
      try {
        data = await fh.readFile();
      } finally {
        await fh.close();
      }
      if (!this.intact(rec, data)) {
        this.counters.hits--;
        return undefined;
      }
      return { rec, body: data };
    }
    const raw = fh.createReadStream({ highWaterMark: STREAM_READ_BYTES });
    if (rec.encodedDigest === undefined) return { rec, body: raw };
    const hash = createHash('sha256');
    let n = 0;
    const checked = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        n += chunk.length;
        cb(null, chunk);
      },
      flush: (cb) => {
        if (n !== rec.encodedSize || 'sha256:' + hash.digest('hex') !== rec.encodedDigest) this.dropCorrupt(digest);
        cb();
      },
    });
    raw.on('error', (err) => checked.destroy(err));
    checked.on('close', () => raw.destroy());
    return { rec, body: raw.pipe(checked) };
  }

  /**
   * The verified encoded bytes of `digest` if the memory tier holds them (a hit, as open()); else
   * undefined, without reading anything (synchronous: framed-runs.ts builds shared frames from them).
   */
  inMemory(digest: string): { rec: ContentRecord; data: Buffer } | undefined {
    if (this.hot === undefined || !this.lru.has(digest)) return undefined;
    const h = this.hot.get(digest);
    if (h === undefined) return undefined;
    this.counters.hits++;
    this.lru.get(digest);
    this.touch(digest);
    return h;
  }

  /** Reads a cached content whole, checks it and keeps it in the memory tier; undefined on a miss. */
  private async readWhole(rec: ContentRecord): Promise<{ rec: ContentRecord; body: Buffer } | undefined> {
    let data: Buffer;
    try {
      data = await readFile(this.pathOf(rec.digest));
    } catch {
      this.counters.misses++;
      this.lru.delete(rec.digest);
      return undefined;
    }
    if (!this.intact(rec, data)) return undefined;
    this.counters.hits++;
    this.lru.get(rec.digest);
    this.touch(rec.digest);
    // Evicted or dropped meanwhile: serve these verified bytes, but do not keep them.
    if (this.lru.has(rec.digest)) this.hot!.set(rec.digest, { rec, data });
    return { rec, body: data };
  }

  /** True if `data` is what was cached for `rec`; else the entry is dropped (and counted) and false. */
  private intact(rec: ContentRecord, data: Buffer): boolean {
    if (rec.encodedDigest === undefined) return true;
    if (data.length === rec.encodedSize && sha256Digest(data) === rec.encodedDigest) return true;
    this.counters.misses++;
    this.dropCorrupt(rec.digest);
    return false;
  }

  private dropCorrupt(digest: string): void {
    this.counters.corrupt++;
    this.hot?.delete(digest);
    this.lru.delete(digest);
  }

  private touch(digest: string): void {
    const now = Date.now();
    const last = this.persistedAt.get(digest);
    if (last !== undefined && now - last < TOUCH_PERSIST_MS) return;
    this.persistedAt.set(digest, now);
    this.touched.set(digest, now);
    if (this.touched.size >= TOUCH_FLUSH_EVERY) this.flush();
  }

  /** Writes pending last-access times to the store. */
  flush(): void {
    if (this.touched.size === 0) return;
    this.store.touchMany(this.touched);
    this.touched.clear();
  }

  /** Drops a content whose store row the metadata GC deleted (gc.ts): its file and memory copies. */
  forget(digest: string): void {
    if (!this.lru.delete(digest)) rmSync(this.pathOf(digest), { force: true });
    this.hot?.delete(digest);
    this.touched.delete(digest);
    this.persistedAt.delete(digest);
  }

  close(): void {
    this.flush();
  }
}
