/**
 * Where a session's item bytes come from, in the encoding its header announced: the content cache
 * (encoded, verified as read), the staging area (raw contents of a layer indexed moments ago, sent
 * 'identity' while the background encoder compresses them), a re-fetch of the item's layer from
 * the registry when the cache evicted it, or — for a file too large for the cache — its layer blob
 * read up to the file and through it, 'identity' (IndexerService.openFromLayer). If what is found is encoded otherwise than announced (the
 * header said 'identity' before the encoder finished), it is decoded to identity on the way out.
 *
 * Also what the header announces per item (announce()).
 *
 * Not here: ordering or framing (session.ts, send-queue.ts), indexing (indexer-service.ts).
 */
import type { Readable } from 'node:stream';
import {
  brotliDecompressSync,
  createBrotliDecompress,
  createGunzip,
  createInflateRaw,
  gunzipSync,
  inflateRawSync,
} from 'node:zlib';
import { StarlightError } from '../../errors.js';
import type { ContentItem, Encoding } from '../../protocol/index.js';
import { type ContentCache, MAX_USEFUL_RATIO, MIN_COMPRESS_BYTES, brotliAt } from '../content-cache.js';
import type { IndexerService } from '../indexer-service.js';
import { type StagingArea, readStaged } from '../staging.js';
import { encodeStagedToFile } from './staged-file-encoding.js';
import type { ContentRecord, MetadataStore } from '../store.js';

/**
 * Brotli quality of send-time encoding (deferred items of a first contact): q1 compresses ~200 MB/s
 * per core at a ratio within ~25 % of the cache's q5 (~30 MB/s), so a stream is not CPU-bound below
 * WAN speeds; the background encoder stores q5 for later pulls (docs/design-notes.md "First contact":
 * q2 sends 7 % fewer bytes, but re-measured on a quiet machine in session 13 a cold python-web stream
 * ended 1.2–3.3 s later on loopback and 0.3–1.8 s later at 150 ms / 100 Mbit/s: q1 stays).
 */
const SEND_TIME_BROTLI_QUALITY = 1;
/**
 * Staged contents up to this size (bytes) are encoded at send time in memory; larger ones are encoded
 * to a temp file of the staging area ahead of the sender (staged-file-encoding.ts).
 */
const SEND_TIME_MAX_BYTES = 16 * 1024 * 1024;

/** Re-fetch attempts per item before giving up (a concurrent re-fetch may have stored other digests). */
const REFETCH_ATTEMPTS = 3;

export interface ItemSourceDeps {
  store: MetadataStore;
  cache: ContentCache;
  indexer: IndexerService;
  staging?: StagingArea;
}

export type ItemBody = Buffer | Readable;

/** An item's bytes and the encoding they are in. */
export interface OpenedItem {
  body: ItemBody;
  encoding: Encoding;
  encodedSize: number;
}

/** True if `digest` would be announced 'identity' only because it is staged and not encoded yet. */
export function deferrable(d: ItemSourceDeps, digest: string): boolean {
  return !d.cache.has(digest) && d.staging?.lookup(digest) !== undefined;
}

/**
 * A deferred item's bytes, encoding chosen now (docs/protocol.md, ITEM frame): the cached encoding if
 * the background encoder already stored it; else a staged content encoded now with fast brotli
 * (SEND_TIME_BROTLI_QUALITY; the cache's own q5 copy comes from the background encoder): in memory up
 * to SEND_TIME_MAX_BYTES, streamed into a temp file above it; or 'identity' when that does not pay
 * (small, incompressible) or the staging budget has no room for the temp file; else the cache after
 * a re-fetch.
 */
export async function openDeferred(d: ItemSourceDeps, item: ContentItem, sourceDiffID: string, alsoWanted?: () => string[]): Promise<OpenedItem> {
  const staged = d.cache.has(item.digest) ? undefined : d.staging?.lookup(item.digest);
  if (staged !== undefined && item.size > SEND_TIME_MAX_BYTES && d.staging !== undefined) {
    const enc = await encodeStagedToFile(d.staging, staged, SEND_TIME_BROTLI_QUALITY);
    if (enc !== undefined) return { body: enc.body, encoding: 'br', encodedSize: enc.encodedSize };
  }
  const raw = staged === undefined ? undefined : readStaged(staged);
  if (raw !== undefined) {
    if (item.size < MIN_COMPRESS_BYTES || item.size > SEND_TIME_MAX_BYTES) return { body: raw, encoding: 'identity', encodedSize: item.size };
    const buf = Buffer.isBuffer(raw) ? raw : await readAll(raw);
    const enc = await brotliAt(buf, SEND_TIME_BROTLI_QUALITY);
    if (enc.length <= buf.length * MAX_USEFUL_RATIO) return { body: enc, encoding: 'br', encodedSize: enc.length };
    return { body: buf, encoding: 'identity', encodedSize: item.size };
  }
  const { rec, body } = await openCached(d, item.digest, sourceDiffID, alsoWanted);
  return { body, encoding: rec.encoding, encodedSize: rec.encodedSize };
}

async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of r as AsyncIterable<Buffer>) parts.push(b);
  return Buffer.concat(parts);
}

/**
 * The item entry a header announces for `digest`: the cached encoding when the cache holds it, else
 * 'identity' when it is staged (the first contact) or too large for the cache (served raw from its
 * layer blob), else the recorded one (re-fetched on demand).
 * Throws SL_ERR_INTERNAL for a digest the proxy does not know (a planner/indexer bug). `rec`: the
 * store's record of `digest` when the caller read it already (batched: delta-plan.ts).
 */
export function announce(d: ItemSourceDeps, digest: string, what: string, rec: ContentRecord | undefined = d.store.content(digest)): ContentItem {
  if (rec !== undefined && d.cache.has(digest)) return { digest, size: rec.size, encodedSize: rec.encodedSize, encoding: rec.encoding };
  const staged = d.staging?.lookup(digest);
  if (staged !== undefined) return { digest, size: staged.size, encodedSize: staged.size, encoding: 'identity' };
  if (rec !== undefined && d.cache.servedFromLayer(rec.size)) return { digest, size: rec.size, encodedSize: rec.size, encoding: 'identity' };
  if (rec !== undefined) return { digest, size: rec.size, encodedSize: rec.encodedSize, encoding: rec.encoding };
  throw new StarlightError('SL_ERR_INTERNAL', `content ${digest} (${what}) is not in the store`, { details: { digest } });
}

/**
 * Encoded bytes of `digest` from the cache, re-fetching its source layer if the cache evicted it; a
 * content too large for the cache (ContentCache.servedFromLayer) comes raw out of its layer blob.
 * `alsoWanted` names other digests of the same layer worth restoring in the same pass.
 */
export async function openCached(
  d: ItemSourceDeps,
  digest: string,
  sourceDiffID: string,
  alsoWanted: () => string[] = () => [],
): Promise<{ rec: ContentRecord; body: ItemBody }> {
  let got = await d.cache.open(digest);
  const known = got === undefined ? d.store.content(digest) : undefined;
  // Too large for the cache (model weights): read out of its layer blob, never re-fetched into the cache.
  if (known !== undefined && d.cache.servedFromLayer(known.size)) return { rec: layerServed(known), body: await d.indexer.openFromLayer(sourceDiffID, digest) };
  for (let attempt = 0; got === undefined && attempt < REFETCH_ATTEMPTS; attempt++) {
    await d.indexer.refetch(sourceDiffID, new Set([digest, ...alsoWanted()]));
    got = await d.cache.open(digest);
  }
  if (got === undefined) {
    throw new StarlightError('SL_ERR_PROXY_CONTENT_NOT_FOUND', `content ${digest} is not in layer ${sourceDiffID} or does not fit the cache (--cache-size)`, {
      details: { digest, diffID: sourceDiffID },
    });
  }
  return got;
}

/** The record of a content served from its layer: raw bytes ('identity'), whatever an older cache recorded. */
function layerServed(rec: ContentRecord): ContentRecord {
  return { ...rec, encoding: 'identity', encodedSize: rec.size, encodedDigest: undefined, cached: false };
}

/**
 * Bytes of `item` in its announced encoding: staged raw bytes for an 'identity' item still staged,
 * else the cache (re-fetching if evicted), decoded to identity if the cache holds it encoded.
 */
export async function openItem(d: ItemSourceDeps, item: ContentItem, sourceDiffID: string, alsoWanted?: () => string[]): Promise<ItemBody> {
  if (item.encoding === 'identity') {
    const staged = d.staging?.open(item.digest);
    if (staged !== undefined) return staged;
  }
  const { rec, body } = await openCached(d, item.digest, sourceDiffID, alsoWanted);
  if (rec.encoding === item.encoding && rec.encodedSize === item.encodedSize) return body;
  if (item.encoding === 'identity' && rec.size === item.size) return decodeToIdentity(body, rec.encoding);
  if (!Buffer.isBuffer(body)) body.destroy();
  throw new StarlightError('SL_ERR_INTERNAL', `content ${item.digest} is cached as ${rec.encoding} (${rec.encodedSize} B), not as announced (${item.encoding}, ${item.encodedSize} B)`, {
    details: { digest: item.digest },
  });
}

function decodeToIdentity(body: ItemBody, from: Encoding): ItemBody {
  if (from === 'identity') return body;
  if (Buffer.isBuffer(body)) {
    if (from === 'br') return brotliDecompressSync(body);
    if (from === 'gzip') return gunzipSync(body);
    if (from === 'deflate-raw') return inflateRawSync(body);
  } else {
    const dec = from === 'br' ? createBrotliDecompress() : from === 'gzip' ? createGunzip() : from === 'deflate-raw' ? createInflateRaw() : undefined;
    if (dec !== undefined) {
      body.on('error', (err) => dec.destroy(err));
      dec.on('close', () => body.destroy());
      return body.pipe(dec);
    }
  }
  if (!Buffer.isBuffer(body)) body.destroy();
  throw new StarlightError('SL_ERR_INTERNAL', `cannot decode cached ${from} content`, { details: { encoding: from } });
}
