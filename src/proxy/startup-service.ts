/**
 * Startup predictions of the proxy (docs/protocol.md "Planning"): computes, once per image, the order
 * predicted from the image itself (src/proxy/startup/predict.ts) by reading the few file contents it
 * needs (heads of scripts, ELF headers and dynamic sections) from the content cache, and keeps it in
 * memory for the planner. Facts are memoized by content digest, so libc & co. are read once for all
 * images.
 *
 * Cost: bounded by predict.ts MAX_ROUNDS walks of the tree and MAX_FACT_READS (+ MAX_GUESSES read
 * ahead) file reads per image, each at most MAX_DECODE_BYTES of decoded content (a dynamic section far
 * into a brotli-encoded 80 MB library costs one streaming decode: decodedReader). Reading the cache files directly does not count as cache hits or refresh
 * their LRU position. A content that is not cached (evicted, or a cache smaller than the image) is
 * 'unknown': the prediction goes on without it. Warm: a map lookup.
 *
 * Not here: the analysis (startup/, pure), merging with traces (priority-service.ts).
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { type Readable, pipeline } from 'node:stream';
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
/**
 * Decoded bytes per chunk of a cache file's decode, and bytes read from the file at once: zlib's
 * default 16 KiB chunk made a 30 MB library ~2000 pool round trips and iterator steps (issue 10).
 */
const DECODE_CHUNK_BYTES = 256 * 1024;
/** Decoded bytes kept from a content's start (its ELF header and string table: see decodedReader). */
const RETAIN_PREFIX_BYTES = 2 * 1024 * 1024;
/** Decoded bytes kept behind the decoder's position (a path string cut between two read pieces). */
const RETAIN_TAIL_BYTES = 64 * 1024;
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
 * compressed encodings (decodedReader). undefined for encodings
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
        const buf = Buffer.allocUnsafe(n); // only the bytes read are returned
        const { bytesRead } = await h.read(buf, 0, n, base + offset);
        return bytesRead === 0 ? undefined : buf.subarray(0, bytesRead);
      },
      close: () => fh.then((h) => h.close(), () => undefined),
    };
  }
  if (encoding !== 'br' && encoding !== 'gzip' && encoding !== 'deflate-raw') return undefined;
  return decodedReader(() => {
    const raw = createReadStream(file, { highWaterMark: DECODE_CHUNK_BYTES });
    const opts = { chunkSize: DECODE_CHUNK_BYTES };
    const dec = encoding === 'br' ? createBrotliDecompress(opts) : encoding === 'gzip' ? createGunzip(opts) : createInflateRaw(opts);
    // pipeline(), not pipe(): a cache file gone since has() (evicted, dropped as corrupt) fails the
    // read ('unknown' facts) instead of killing the process with an unhandled 'error' and leaving a
    // decode that never ends; a decode reset or closed early closes the file too.
    pipeline(raw, dec, () => {
      // Errors reach the reader through `dec`.
    });
    return dec;
  });
}

/**
 * A RangeReader over a forward decode (`decoder()` starts one): decoded chunks are kept while they
 * lie in the first RETAIN_PREFIX_BYTES or the last RETAIN_TAIL_BYTES decoded, so the reads readFacts
 * makes behind the decoder's position (the ELF header after the script head, the string table in the
 * first segment after the dynamic section at the end, a path string cut by a piece) are answered from
 * memory; any other read behind it restarts the decode.
 */
export function decodedReader(decoder: () => Readable): { read: RangeReader; close: () => Promise<void> } {
  let stream: Readable | undefined;
  let it: AsyncIterator<Buffer> | undefined;
  let pos = 0; // decoded bytes so far
  let kept: { at: number; buf: Buffer }[] = []; // retained chunks, ascending
  const reset = (): void => {
    stream?.destroy();
    stream = decoder();
    it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    pos = 0;
    kept = [];
  };
  /** Copies [from, to) from retained chunks into `out` at `from - base`; false when a part is not retained. */
  const fromKept = (out: Buffer, base: number, from: number, to: number): boolean => {
    let at = from;
    for (const c of kept) {
      if (c.at + c.buf.length <= at || c.at > at) continue;
      const n = Math.min(to, c.at + c.buf.length) - at;
      c.buf.copy(out, at - base, at - c.at, at - c.at + n);
      at += n;
      if (at >= to) return true;
    }
    return at >= to;
  };
  return {
    read: async (offset, length) => {
      if (it === undefined) reset();
      let out = Buffer.allocUnsafe(length);
      let have = 0;
      if (offset < pos) {
        const upto = Math.min(offset + length, pos);
        if (fromKept(out, offset, offset, upto)) have = upto - offset;
        else reset();
      }
      while (have < length) {
        if (pos > MAX_DECODE_BYTES) return undefined;
        const n = await it!.next();
        if (n.done === true) break;
        const chunk = n.value;
        const at = pos;
        pos += chunk.length;
        kept.push({ at, buf: chunk });
        if (at >= RETAIN_PREFIX_BYTES) kept = kept.filter((c) => c.at < RETAIN_PREFIX_BYTES || c.at + c.buf.length > pos - RETAIN_TAIL_BYTES);
        const want = offset + have;
        if (pos > want) {
          const take = Math.min(pos, offset + length) - want;
          chunk.copy(out, have, want - at, want - at + take);
          have += take;
        }
      }
      if (have === 0) return undefined;
      if (have < length) out = out.subarray(0, have);
      return out;
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
