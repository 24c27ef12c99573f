/**
 * The proxy's request handlers: parse and validate parameters, call the indexer/planner/cache, write
 * the response. Errors before a delta header → thrown (server.ts maps them with http-errors.ts);
 * errors after it → an ERROR frame, so the worker can tell a failure from a truncation.
 *
 * Not here: routing, auth, TLS (server.ts); planning rules (planner.ts); traces (trace-handlers.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { StarlightError, withContext } from '../errors.js';
import { mergeLayers } from '../image/merge.js';
import type { LayerToc, MergedTree } from '../image/toc.js';
import type { Logger } from '../log.js';
import { formatPlatform, parsePlatform } from '../oci/platform.js';
import { type Reference, isDigest, parseReference } from '../oci/reference.js';
import type { Readable } from 'node:stream';
import { DELTA_MEDIA_TYPE, DeltaEncoder, HTTP_HEADER_ENCODING, HTTP_HEADER_RAW_SIZE, TRACE_GROUP_RE, type ContentItem } from '../protocol/index.js';
import type { ContentCache } from './content-cache.js';
import type { IndexerService } from './indexer-service.js';
import type { ProxyMetrics } from './metrics.js';
import { haveContent, plan } from './planner.js';
import { rankMap } from './priority.js';
import type { MetadataStore } from './store.js';
import type { PriorityService } from './priority-service.js';

/** Items opened ahead of the one being written (bounded: ≤ this × WHOLE_READ_BYTES buffered per stream). */
export const PREFETCH_ITEMS = 8;
/** Max tokens in `have` (bounds request work). */
export const MAX_HAVE = 1024;

export interface HandlerContext {
  store: MetadataStore;
  cache: ContentCache;
  indexer: IndexerService;
  /** Startup traces and learned orders. */
  priority: PriorityService;
  metrics: ProxyMetrics;
  logger: Logger;
  /** Allowed registry hosts (host[:port]); the first is the default for refs without a host. */
  registries: string[];
  /** Platform when the request names none ('linux/amd64'). */
  defaultPlatform: string;
  /** The content cache's bound (bytes), to size re-fetch batches. */
  cacheBytes: number;
}

function badParam(name: string, why: string, value?: string): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `query parameter ${name} ${why}`, { details: { parameter: name, value } });
}

/** Parses a ref parameter; refs without a registry host get the default one; other hosts → 403. */
export function resolveRef(s: string | null, registries: string[], param = 'to'): Reference {
  if (s === null || s === '') throw badParam(param, 'is required (an image reference)');
  const first = s.split('/')[0]!;
  const hasHost = s.includes('/') && (/[.:]/.test(first) || first === 'localhost');
  const ref = parseReference(hasHost ? s : `${registries[0]}/${s}`);
  if (!registries.includes(ref.registry)) {
    throw new StarlightError('SL_ERR_PROXY_REGISTRY_NOT_ALLOWED', `registry ${ref.registry} of ${s} is not served by this proxy (allowed: ${registries.join(', ')})`, {
      details: { registry: ref.registry, image: s },
    });
  }
  return ref;
}

export function platformParam(url: URL, dflt: string): string {
  const p = url.searchParams.get('platform');
  return formatPlatform(parsePlatform(p === null || p === '' ? dflt : p));
}

/** `group` query parameter: absent/empty → undefined; else it must be a group label. */
export function groupParam(url: URL): string | undefined {
  const g = url.searchParams.get('group');
  if (g === null || g === '') return undefined;
  if (!TRACE_GROUP_RE.test(g)) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'query parameter group must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit', {
      details: { parameter: 'group', value: g },
    });
  }
  return g;
}

/** Abort signal that fires when the client goes away before the response finished. */
function clientGone(req: IncomingMessage, res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  req.on('error', () => ac.abort());
  return ac.signal;
}

/** Re-fetch attempts per item before giving up (a concurrent re-fetch may have stored other digests). */
const REFETCH_ATTEMPTS = 3;

/**
 * Encoded bytes of `digest`, re-fetching its source layer if the cache evicted it. `alsoWanted` names
 * other digests of the same layer worth restoring in the same pass (the next items of the stream).
 */
async function openContent(
  ctx: HandlerContext,
  digest: string,
  sourceDiffID: string,
  alsoWanted: () => string[] = () => [],
): Promise<{ body: Buffer | Readable; encodedSize: number }> {
  let got = await ctx.cache.open(digest);
  for (let attempt = 0; got === undefined && attempt < REFETCH_ATTEMPTS; attempt++) {
    await ctx.indexer.refetch(sourceDiffID, new Set([digest, ...alsoWanted()]));
    got = await ctx.cache.open(digest);
  }
  if (got === undefined) {
    throw new StarlightError('SL_ERR_PROXY_CONTENT_NOT_FOUND', `content ${digest} is not in layer ${sourceDiffID} or does not fit the cache (--cache-size)`, {
      details: { digest, diffID: sourceDiffID },
    });
  }
  return { body: got.body, encodedSize: got.rec.encodedSize };
}

/** Digests of upcoming items from `diffID` not in the cache, up to a quarter of the cache's bound. */
function upcoming(ctx: HandlerContext, items: ContentItem[], sources: string[], start: number, diffID: string): string[] {
  const out: string[] = [];
  let budget = ctx.cacheBytes / 4;
  for (let j = start; j < items.length && budget > 0; j++) {
    if (sources[j] !== diffID || ctx.cache.has(items[j]!.digest)) continue;
    out.push(items[j]!.digest);
    budget -= items[j]!.encodedSize;
  }
  return out;
}

/**
 * Writes items `from`.. in order, opening the next PREFETCH_ITEMS ahead of the one being written (hides
 * per-file open/read latency; memory stays bounded by PREFETCH_ITEMS small bodies or open streams).
 */
async function sendItems(
  ctx: HandlerContext,
  enc: DeltaEncoder,
  items: ContentItem[],
  sources: string[],
  from: number,
  signal: AbortSignal,
): Promise<void> {
  const opened = new Map<number, Promise<{ body: Buffer | Readable; encodedSize: number }>>();
  const openAt = (j: number): void => {
    if (j >= items.length || opened.has(j)) return;
    const src = sources[j]!;
    const pr = openContent(ctx, items[j]!.digest, src, () => upcoming(ctx, items, sources, j + 1, src));
    pr.catch(() => undefined); // awaited, and so reported, in order below
    opened.set(j, pr);
  };
  try {
    for (let i = from; i < items.length; i++) {
      if (signal.aborted) throw new StarlightError('SL_ERR_CANCELED', 'client went away');
      for (let j = i; j <= i + PREFETCH_ITEMS; j++) openAt(j);
      const pending = opened.get(i)!;
      opened.delete(i);
      // A failure to produce this item (its layer gone or corrupt in the registry) names it, so the
      // worker can fail that one file and resume after it instead of retrying it forever.
      const { body, encodedSize } = await pending.catch((err: unknown) => {
        throw withContext(err, `content item ${i} (${items[i]!.digest})`, { item: i, digest: items[i]!.digest });
      });
      try {
        if (encodedSize !== items[i]!.encodedSize) {
          throw new StarlightError('SL_ERR_INTERNAL', `content ${items[i]!.digest} changed encoded size while streaming`, {
            details: { digest: items[i]!.digest },
          });
        }
        await enc.writeItem(i, body);
      } finally {
        if (!Buffer.isBuffer(body)) body.destroy();
      }
    }
  } finally {
    for (const pr of opened.values()) pr.then((o) => !Buffer.isBuffer(o.body) && o.body.destroy(), () => undefined);
  }
}

function haveParam(url: URL): string[] {
  const raw = url.searchParams.get('have') ?? '';
  const have = raw === '' ? [] : raw.split(',');
  if (have.length > MAX_HAVE) throw badParam('have', `lists ${have.length} digests, at most ${MAX_HAVE}`);
  for (const h of have) if (!isDigest(h)) throw badParam('have', 'must be comma-separated sha256:<hex> digests', h);
  return have;
}

function fromParam(url: URL): number {
  const raw = url.searchParams.get('from');
  const from = raw === null ? 0 : Number(raw);
  if (!Number.isSafeInteger(from) || from < 0) throw badParam('from', 'must be a non-negative integer', raw ?? '');
  return from;
}

/**
 * What the worker has (docs/protocol.md `have`): a layer diffID → that layer and all its contents; an
 * image manifest digest → its chain and the contents visible in its merged tree. Digests the proxy does
 * not know are ignored: nothing can be deduplicated against them.
 */
function resolveHave(ctx: HandlerContext, have: string[]): { haveDiffIDs: Set<string>; haveDigests: Set<string> } {
  const haveDiffIDs = new Set<string>();
  const haveLayers: LayerToc[] = [];
  const haveTrees: MergedTree[] = [];
  for (const d of have) {
    const l = ctx.indexer.toc(d);
    if (l !== undefined) {
      haveDiffIDs.add(d);
      haveLayers.push(l);
      continue;
    }
    const m = ctx.store.manifest(d);
    if (m !== undefined && m.diffIDs.every((id) => ctx.store.hasLayer(id))) {
      m.diffIDs.forEach((id) => haveDiffIDs.add(id));
      haveTrees.push(mergeLayers(m.diffIDs.map((id) => ctx.indexer.toc(id)!)));
    }
  }
  return { haveDiffIDs, haveDigests: haveContent(haveLayers, haveTrees) };
}

export async function handleDelta(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const ref = resolveRef(url.searchParams.get('to'), ctx.registries);
  const platform = platformParam(url, ctx.defaultPlatform);
  const have = haveParam(url);
  const from = fromParam(url);
  const group = groupParam(url);

  const signal = clientGone(req, res);
  const img = await ctx.indexer.image(ref, platform, signal);

  const { haveDiffIDs, haveDigests } = resolveHave(ctx, have);
  const merged = mergeLayers(img.tocs);
  const p = plan({
    chain: img.tocs,
    merged,
    haveDiffIDs,
    haveDigests,
    config: img.config,
    rank: rankMap(
      ctx.priority.order({ manifestDigest: img.record.manifestDigest, repository: img.record.repository, diffIDs: img.record.diffIDs, merged }, group).files,
    ),
  });
  if (from > p.items.length) throw badParam('from', `is beyond the ${p.items.length} items of this delta`, String(from));
  const items: ContentItem[] = p.items.map((it) => {
    const c = ctx.store.content(it.digest);
    if (c === undefined) {
      throw new StarlightError('SL_ERR_INTERNAL', `content ${it.digest} (${it.path}) of ${img.ref} is not in the store`, { details: { digest: it.digest } });
    }
    return { digest: it.digest, size: c.size, encodedSize: c.encodedSize, encoding: c.encoding };
  });
  const sources = p.items.map((it) => it.sourceDiffID);
  const tocBytes = new Map<string, Uint8Array>();
  for (const l of p.layers) tocBytes.set(l.diffID, ctx.store.layer(l.diffID)!.toc);

  res.writeHead(200, { 'content-type': DELTA_MEDIA_TYPE, 'docker-content-digest': img.record.manifestDigest, 'cache-control': 'no-store' });
  const enc = new DeltaEncoder(res);
  try {
    await enc.writeHeader({
      ref: img.ref,
      platform,
      manifestDigest: img.record.manifestDigest,
      manifestMediaType: img.record.mediaType,
      manifest: img.record.manifest,
      config: img.record.config,
      diffIDs: img.record.diffIDs,
      layers: p.layers.map((l) => ({ diffID: l.diffID, toc: tocBytes.get(l.diffID)! })),
      items,
      firstItem: from,
    });
    await sendItems(ctx, enc, items, sources, from, signal);
    await enc.writeEnd();
    ctx.metrics.deltasServed++;
    ctx.logger.info('delta-served', { image: img.ref, items: items.length - from, bytes: enc.bytesWritten });
  } catch (err) {
    ctx.metrics.deltasFailed++;
    const e = withContext(err, `delta of ${img.ref}`);
    ctx.logger.warn('delta-failed', { image: img.ref, error: e });
    if (!signal.aborted && !res.destroyed) {
      await enc.writeError({ code: e.code, message: e.message, detail: e.details }).catch(() => undefined);
    }
  } finally {
    ctx.metrics.deltaBytesSent += enc.bytesWritten;
    res.end();
  }
}

export async function handleContent(ctx: HandlerContext, _req: IncomingMessage, res: ServerResponse, digest: string): Promise<void> {
  if (!isDigest(digest)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `content digest ${digest} is not sha256:<hex>`, { details: { digest } });
  ctx.metrics.contentRequests++;
  const rec = ctx.store.content(digest);
  if (rec === undefined) {
    throw new StarlightError('SL_ERR_PROXY_CONTENT_NOT_FOUND', `content ${digest} is unknown to this proxy`, { details: { digest } });
  }
  const { body, encodedSize } = await openContent(ctx, digest, rec.sourceDiffID);
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': encodedSize,
    [HTTP_HEADER_ENCODING]: rec.encoding,
    [HTTP_HEADER_RAW_SIZE]: rec.size,
    'docker-content-digest': digest,
  });
  if (Buffer.isBuffer(body)) {
    ctx.metrics.contentBytesSent += body.length;
    res.end(body);
    return;
  }
  body.on('data', (b: Buffer) => (ctx.metrics.contentBytesSent += b.length));
  await new Promise<void>((resolve) => {
    body.pipe(res);
    res.on('close', () => {
      body.destroy();
      resolve();
    });
  });
}

export async function handleNotify(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const ref = resolveRef(url.searchParams.get('ref'), ctx.registries, 'ref');
  const platform = platformParam(url, ctx.defaultPlatform);
  const img = await ctx.indexer.image(ref, platform, clientGone(req, res));
  const body = JSON.stringify({ ref: img.ref, platform, manifestDigest: img.record.manifestDigest, layers: img.record.diffIDs.length });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
