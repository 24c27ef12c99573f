/**
 * Startup predictions of the proxy (docs/protocol.md "Planning"): computes, once per image, the order
 * predicted from the image itself (src/proxy/startup/predict.ts) by reading the few file contents it
 * needs (heads of scripts, ELF headers and dynamic sections) from the content cache, and keeps it in
 * memory for the planner. Facts are memoized by content digest, so libc & co. are read once for all
 * images.
 *
 * Cost: bounded by predict.ts MAX_ROUNDS walks of the tree and MAX_FACT_READS file reads per image, each at most
 * MAX_DECODE_BYTES of decoded content (a dynamic section far into a brotli-encoded 80 MB library costs
 * one streaming decode). Reading the cache files directly does not count as cache hits or refresh
 * their LRU position. A content that is not cached (evicted, or a cache smaller than the image) is
 * 'unknown': the prediction goes on without it. Warm: a map lookup.
 *
 * Not here: the analysis (startup/, pure), merging with traces (priority-service.ts).
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflateRaw } from 'node:zlib';
import { LRUCache } from 'lru-cache';
import { yieldToLoop } from '../event-loop.js';
import { mergeLayers } from '../layers/merge.js';
import type { MergedTree } from '../layers/toc.js';
import type { Logger } from '../log.js';
import type { ImageConfig } from '../oci/types.js';
import type { Encoding } from '../protocol/constants.js';
import type { IndexedImage } from './indexer-service.js';
import type { RangeReader } from './startup/elf.js';
import { readFacts } from './startup/facts.js';
import { type FileFacts, type Prediction, StartupTree, predictWith } from './startup/predict.js';

/** Decoded bytes read from one content at most (beyond: 'unknown'). */
const MAX_DECODE_BYTES = 256 * 1024 * 1024;
/** Predictions kept in memory (images). */
const MEMO_IMAGES = 256;
/** Facts kept in memory (contents). */
const MEMO_FACTS = 50_000;

/** Where the cached bytes of a content are (ContentCache satisfies it). */
export interface CachedContentFiles {
  has(digest: string): boolean;
  pathOf(digest: string): string;
}

/** The encoding of a cached content (MetadataStore satisfies it). */
export interface ContentEncodings {
  content(digest: string): { encoding: Encoding } | undefined;
}

/**
 * Raw contents staged by a first-contact index pass (StagingArea satisfies it): read before the cache,
 * so a first delta is predicted from the staged layer bytes while the cache's encoding still runs.
 */
export interface StagedContents {
  lookup(digest: string): { path: string; offset: number; size: number } | undefined;
}

export interface StartupServiceOptions {
  cache: CachedContentFiles;
  store: ContentEncodings;
  staging?: StagedContents;
  logger?: Logger;
}

/** What to predict for: an indexed image. */
export interface PredictTarget {
  manifestDigest: string;
  config?: ImageConfig;
  merged: MergedTree;
}

export class StartupService {
  private readonly memo = new LRUCache<string, Prediction>({ max: MEMO_IMAGES });
  private readonly running = new Map<string, Promise<Prediction>>();
  private readonly facts = new LRUCache<string, FileFacts>({ max: MEMO_FACTS });

  constructor(private readonly o: StartupServiceOptions) {}

  /** The prediction of an image if already computed (sync, for the planner's path). */
  get(manifestDigest: string): Prediction | undefined {
    return this.memo.get(manifestDigest);
  }

  /** Computes (once; concurrent callers share the run) and returns the prediction of `t`. */
  ensure(t: PredictTarget): Promise<Prediction> {
    const hit = this.memo.get(t.manifestDigest);
    if (hit !== undefined) return Promise.resolve(hit);
    let p = this.running.get(t.manifestDigest);
    if (p === undefined) {
      p = this.compute(t)
        .then((pr) => {
          this.memo.set(t.manifestDigest, pr);
          return pr;
        })
        .finally(() => this.running.delete(t.manifestDigest));
      this.running.set(t.manifestDigest, p);
    }
    return p;
  }

  private async compute(t: PredictTarget): Promise<Prediction> {
    const t0 = process.hrtime.bigint();
    const sizeOf = new Map(t.merged.entries.filter((e) => e.digest !== undefined).map((e) => [e.digest!, e.size]));
    const read = async (d: string): Promise<FileFacts> => {
      const f = await this.readFactsOf(d, sizeOf.get(d) ?? 0).catch((): FileFacts => ({ kind: 'unknown' }));
      this.facts.set(d, f);
      return f;
    };
    // Each step below is ~80 ms on 60 000 entries at load ~9: the event loop runs between them (issue 14).
    await yieldToLoop();
    const tree = new StartupTree(t.merged.entries);
    await yieldToLoop();
    const pr = await predictWith(tree, t.config, read, (d) => this.facts.get(d));
    this.o.logger?.info('startup-predicted', {
      manifestDigest: t.manifestDigest,
      files: pr.files.length,
      core: pr.files.filter((f) => f.core).length,
      reads: pr.reads,
      rounds: pr.rounds,
      seconds: Number(process.hrtime.bigint() - t0) / 1e9,
    });
    return { files: pr.files, need: pr.need };
  }

  private async readFactsOf(digest: string, size: number): Promise<FileFacts> {
    if (size === 0) return { kind: 'unknown' };
    const staged = this.o.staging?.lookup(digest);
    const rec = staged === undefined ? this.o.store.content(digest) : undefined;
    if (staged === undefined && (rec === undefined || !this.o.cache.has(digest))) return { kind: 'unknown' };
    const reader = staged !== undefined ? cachedReader(staged.path, 'identity', staged.offset, staged.size) : cachedReader(this.o.cache.pathOf(digest), rec!.encoding);
    if (reader === undefined) return { kind: 'unknown' };
    try {
      return await readFacts(reader.read, size);
    } finally {
      await reader.close();
    }
  }
}

/**
 * A RangeReader over a cache file: positioned reads for 'identity', a forward streaming decode for
 * compressed encodings (a read behind the decoder's position restarts it). undefined for encodings
 * without a decoder here (zstd). `base`/`limit` (identity only): the content starts `base` bytes into
 * `file` and is `limit` bytes long (a staged content inside its layer pass's file).
 */
function cachedReader(file: string, encoding: Encoding, base = 0, limit = Infinity): { read: RangeReader; close: () => Promise<void> } | undefined {
  if (encoding === 'identity') {
    const fh = open(file, 'r');
    return {
      read: async (offset, length) => {
        const h = await fh;
        const n = Math.max(0, Math.min(length, limit - offset));
        if (n === 0) return undefined;
        const buf = Buffer.alloc(n);
        const { bytesRead } = await h.read(buf, 0, n, base + offset);
        return bytesRead === 0 ? undefined : buf.subarray(0, bytesRead);
      },
      close: () => fh.then((h) => h.close(), () => undefined),
    };
  }
  const decoder = (): Readable | undefined => {
    if (encoding === 'br') return createReadStream(file).pipe(createBrotliDecompress());
    if (encoding === 'gzip') return createReadStream(file).pipe(createGunzip());
    if (encoding === 'deflate-raw') return createReadStream(file).pipe(createInflateRaw());
    return undefined;
  };
  if (encoding !== 'br' && encoding !== 'gzip' && encoding !== 'deflate-raw') return undefined;
  let stream: Readable | undefined;
  let it: AsyncIterator<Buffer> | undefined;
  let pos = 0; // decoded offset of `pending[0]`
  let pending: Buffer = Buffer.alloc(0);
  const reset = (): void => {
    stream?.destroy();
    stream = decoder()!;
    it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    pos = 0;
    pending = Buffer.alloc(0);
  };
  return {
    read: async (offset, length) => {
      if (it === undefined || offset < pos) reset();
      // Drop decoded bytes before `offset`, then collect `length` bytes (or until the end).
      const parts: Buffer[] = [];
      let have = 0;
      for (;;) {
        if (pending.length > 0) {
          const skip = Math.max(0, offset - pos);
          if (skip >= pending.length) {
            pos += pending.length;
            pending = Buffer.alloc(0);
          } else {
            const take = pending.subarray(skip, skip + (length - have));
            parts.push(take);
            have += take.length;
            pos += skip + take.length;
            pending = pending.subarray(skip + take.length);
            if (have >= length) break;
          }
        }
        if (pos > MAX_DECODE_BYTES) return undefined;
        const n = await it!.next();
        if (n.done === true) break;
        pending = n.value;
      }
      // Keep the stream positioned at the first byte not returned (a later read continues from it).
      return have === 0 ? undefined : Buffer.concat(parts, have);
    },
    close: () => {
      stream?.destroy();
      return Promise.resolve();
    },
  };
}

/** What PriorityService.prepare needs of an indexed image (`merged`: its merged tree, when the caller has it). */
export function predictTargetOf(img: IndexedImage, merged: MergedTree = mergeLayers(img.tocs)): PredictTarget {
  return { manifestDigest: img.record.manifestDigest, config: img.config, merged };
}
