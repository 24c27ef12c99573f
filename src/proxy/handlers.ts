/**
 * The proxy's request handlers, an HTTP adapter: parse and validate parameters, call the indexer, hand
 * a delta to its session (session/), write the response. Errors before a delta header → thrown
 * (server.ts maps them with src/http-errors.ts); errors after it → an ERROR frame (the session writes it),
 * so the worker can tell a failure from a truncation.
 *
 * Not here: routing, auth, TLS (server.ts); planning (session/delta-plan.ts, planner.ts); sending
 * (session/session.ts); traces (trace-handlers.ts); session bumps (session-handlers.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { StarlightError, withContext } from '../errors.js';
import type { MergedTree } from '../layers/toc.js';
import type { Logger } from '../log.js';
import { formatPlatform, parsePlatform } from '../oci/platform.js';
import { isDigest } from '../oci/digest.js';
import { type Reference, formatReference, parseReference } from '../oci/reference.js';
import { DELTA_MEDIA_TYPE, DeltaEncoder, HTTP_HEADER_ENCODING, HTTP_HEADER_RAW_SIZE, HTTP_HEADER_SESSION, TRACE_GROUP_RE } from '../protocol/index.js';
import type { ContentCache } from './content-cache.js';
import type { IndexedImage, IndexerService } from './indexer-service.js';
import { predictTargetOf } from './startup-service.js';
import type { ProxyMetrics } from './metrics.js';
import type { MetadataStore } from './store.js';
import type { LearnedFiles, PriorityService } from './priority-service.js';
import { type DeltaRequest, orderOf, preferPrediction } from './session/delta-plan.js';
import type { PlanCache } from './session/plan-cache.js';
import { announce, openDeferred } from './session/item-source.js';
import type { HeaderFirst } from './session/header-first.js';
import type { SessionRegistry } from './session/registry.js';
import { DeltaSession, SEND_AHEAD_BYTES } from './session/session.js';
import { sendImageFirst } from './session/image-first.js';
import type { StagingArea } from './staging.js';
/** Max tokens in `have` (bounds request work). */
const MAX_HAVE = 1024;

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
  /** Raw contents of freshly indexed layers (sent 'identity' until encoded). */
  staging?: StagingArea;
  /** Live delta sessions (POST /v1/sessions/<id>/next). */
  sessions: SessionRegistry;
  /** Delta plans reused across requests while their inputs are unchanged. */
  plans: PlanCache;
  /** Headers of all delta streams before their content (optional). */
  headerFirst?: HeaderFirst;
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

/** A 0/1 query flag (`deferred`, `image`): absent, empty or 0 → false, 1 → true, else 400. */
function flagParam(url: URL, name: string): boolean {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '' || raw === '0') return false;
  if (raw === '1') return true;
  throw badParam(name, 'must be 0 or 1', raw);
}

/** `tocs=br`: the header's TOCs go brotli-compressed (docs/protocol.md "Compressed TOCs"); absent/identity: as encoded. */
function tocsParam(url: URL): 'br' | undefined {
  const raw = url.searchParams.get('tocs');
  if (raw === null || raw === '' || raw === 'identity') return undefined;
  if (raw === 'br') return 'br';
  throw badParam('tocs', 'must be br or identity', raw);
}

/**
 * The image's startup prediction (startup-service.ts), computed once per image right after indexing so
 * that its first delta is already planned with it: from the staged raw contents on first contact (a
 * few positioned reads per ELF file), from the cache afterwards. Warm: one map lookup.
 */
export async function ensurePrediction(ctx: Pick<HandlerContext, 'priority'>, img: IndexedImage, merged?: MergedTree): Promise<void> {
  if (!ctx.priority.prepared(img.record.manifestDigest)) await ctx.priority.prepare(predictTargetOf(img, merged));
}

/** A delta request's image once indexed, and its plan (planForRequest). */
interface PlannedDelta {
  img: IndexedImage;
  /** The chain's merged tree (memoized per image): the plan's and the prediction's. */
  merged: MergedTree;
  planned: Awaited<ReturnType<PlanCache['plan']>>;
  /** The order the plan used (the prediction, once it lands, re-orders the stream: preferPrediction). */
  plannedOrder: LearnedFiles;
  /** First contact: the startup prediction is not computed yet. */
  predict: boolean;
  /** performance.now() when the image was indexed, and when planning started. */
  tIndexed: number;
  tPlanning: number;
}

/** Waits for the image's index, then plans the request's delta (memoized: plan-cache.ts). */
async function planForRequest(ctx: HandlerContext, indexed: Promise<IndexedImage>, req: DeltaRequest): Promise<PlannedDelta> {
  const img = await indexed;
  const tIndexed = performance.now();
  // One merge (memoized per image) serves the prediction (first request only) and the plan.
  const merged = await ctx.plans.mergedOf(img);
  // First contact: the header does not wait for the startup prediction (0.2–0.5 s of fact reads after
  // the last layer pass, docs/design-notes.md issue 10); it re-orders the stream when it lands.
  const predict = !ctx.priority.prepared(img.record.manifestDigest);
  await ctx.priority.refresh();
  const tPlanning = performance.now();
  const plannedOrder = orderOf(ctx, img, merged, req.group);
  const planned = await ctx.plans.plan(ctx, img, req);
  return { img, merged, planned, plannedOrder, predict, tIndexed, tPlanning };
}

export async function handleDelta(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  // Background encoding waits while this delta is indexed and planned (its header is on the critical
  // path); the session takes the hold over if it encodes deferred items itself.
  const planning = ctx.indexer.holdEncoding();
  try {
    await serveDelta(ctx, req, res, url, planning);
  } finally {
    planning();
  }
}

/** handleDelta; `planning` releases its hold on background encoding (once the stream started). */
async function serveDelta(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, url: URL, planning: () => void): Promise<void> {
  const ref = resolveRef(url.searchParams.get('to'), ctx.registries);
  const platform = platformParam(url, ctx.defaultPlatform);
  const have = haveParam(url);
  const from = fromParam(url);
  const group = groupParam(url);

  const deferred = flagParam(url, 'deferred');
  const tocs = tocsParam(url);
  // `early` (retired early items, docs/protocol.md) is ignored: an older worker may still send early=1.
  const imageFirst = flagParam(url, 'image') && from === 0;

  const signal = clientGone(req, res);
  const t0 = performance.now();
  const indexed = ctx.indexer.image(ref, platform, signal);
  const sessionId = ctx.sessions.newId();
  const enc = new DeltaEncoder(res, { maxBuffered: SEND_AHEAD_BYTES });
  const writeHead = (manifestDigest: string): void => {
    if (res.headersSent) return;
    res.writeHead(200, {
      'content-type': DELTA_MEDIA_TYPE,
      'docker-content-digest': manifestDigest,
      'cache-control': 'no-store',
      [HTTP_HEADER_SESSION]: sessionId,
    });
  };
  // image=1: the image goes out first, while its layers are indexed or its delta is planned.
  const resolving = imageFirst ? (ctx.indexer.resolution(ref, platform) ?? indexed.then((img) => img.record)) : undefined;
  await sendImageFirst(resolving, indexed, enc, { ref: formatReference(ref), platform }, writeHead);
  let p: PlannedDelta;
  try {
    p = await planForRequest(ctx, indexed, { have, from, group, deferred, ...(tocs ? { tocs } : {}) });
  } catch (err) {
    if (!enc.started) throw err;
    // The response is under way (IMAGE frame): the failure goes out as an ERROR frame naming image and layer.
    const e = withContext(err, `delta of ${formatReference(ref)}`, { image: formatReference(ref) });
    ctx.metrics.deltasFailed++;
    ctx.logger.warn('delta-failed', { image: formatReference(ref), error: e });
    await enc.writeError({ code: e.code, message: e.message, detail: e.details }).catch(() => undefined);
    res.end();
    return;
  }
  const { img, merged, planned, plannedOrder, predict, tIndexed, tPlanning } = p;
  const { header, headerBytes, sources, runs } = planned;
  const session = new DeltaSession({
    id: sessionId,
    header,
    headerBytes,
    sources,
    deps: ctx,
    encoder: enc,
    refetchBudget: ctx.cacheBytes / 4,
    holdEncoding: () => ctx.indexer.holdEncoding(),
    headerFirst: ctx.headerFirst,
    runs,
  });
  ctx.sessions.add(session);
  // The worker reads the header, TOCs and snapshots while the prediction runs; the link's first item
  // bytes are the predicted files. It starts once the header has left: run during planning, its
  // slices delayed the header, and after it they held the header's bytes in the response buffer
  // (docs/design-notes.md issue 10, session 10).
  const reordered = predict
    ? preferPrediction(ctx, session, { img, merged, group, header, planned: plannedOrder, after: session.headerSent, predict: () => ensurePrediction(ctx, img, merged), since: tIndexed })
    : undefined;
  writeHead(img.record.manifestDigest);
  ctx.logger.info('delta-planned', { image: img.ref, items: header.items.length, indexSeconds: (tPlanning - t0) / 1000, planSeconds: (performance.now() - tPlanning) / 1000, predictSeconds: (tPlanning - tIndexed) / 1000 });
  try {
    const running = session.run(signal);
    // Background encoding keeps waiting for the prediction (it reads the staged contents).
    if (reordered === undefined) planning();
    else void reordered.finally(planning);
    const failed = await running;
    if (failed === undefined) {
      ctx.metrics.deltasServed++;
      ctx.logger.info('delta-served', { image: img.ref, items: header.items.length - from, bytes: enc.bytesWritten });
    } else {
      ctx.metrics.deltasFailed++;
      ctx.logger.warn('delta-failed', { image: img.ref, error: failed });
    }
  } finally {
    ctx.sessions.remove(session);
    ctx.metrics.deltaBytesSent += enc.bytesWritten;
    res.end();
  }
}

/**
 * The encoded bytes of one content: from the cache (re-fetched if evicted), or raw from the staging
 * area while a fresh layer's contents are being encoded. A digest the proxy does not know yet while it
 * is indexing waits for that indexing (a header may name it before its layer's row is visible here).
 * A content served from its layer (too large for the cache) honours one `Range: bytes=` range (206);
 * other contents ignore Range and answer whole (200).
 */
export async function handleContent(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, digest: string): Promise<void> {
  if (!isDigest(digest)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `content digest ${digest} is not sha256:<hex>`, { details: { digest } });
  ctx.metrics.contentRequests++;
  let rec = ctx.store.content(digest);
  while (rec === undefined && ctx.indexer.busy) {
    await ctx.indexer.idle();
    rec = ctx.store.content(digest);
  }
  if (rec === undefined) {
    throw new StarlightError('SL_ERR_PROXY_CONTENT_NOT_FOUND', `content ${digest} is unknown to this proxy`, { details: { digest } });
  }
  const fromLayer = ctx.cache.servedFromLayer(rec.size) && !ctx.cache.has(digest);
  const range = fromLayer ? byteRange(req.headers.range, rec.size) : undefined;
  if (range === 'unsatisfiable') {
    res.writeHead(416, { 'content-range': `bytes */${rec.size}`, 'content-length': 0 });
    res.end();
    return;
  }
  if (range !== undefined) {
    const body = await ctx.indexer.openFromLayer(rec.sourceDiffID, digest, range);
    res.writeHead(206, {
      'content-type': 'application/octet-stream',
      'content-length': range.end - range.start,
      'content-range': `bytes ${range.start}-${range.end - 1}/${rec.size}`,
      [HTTP_HEADER_ENCODING]: 'identity',
      [HTTP_HEADER_RAW_SIZE]: rec.size,
      'docker-content-digest': digest,
    });
    return sendBody(ctx, res, body);
  }
  // The response names its encoding, so it is chosen now (a staged content is encoded at send time).
  const item = announce(ctx, digest, 'requested content');
  const { body, encoding, encodedSize } = await openDeferred(ctx, item, rec.sourceDiffID);
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': encodedSize,
    [HTTP_HEADER_ENCODING]: encoding,
    [HTTP_HEADER_RAW_SIZE]: item.size,
    'docker-content-digest': digest,
    ...(fromLayer ? { 'accept-ranges': 'bytes' } : {}),
  });
  return sendBody(ctx, res, body);
}

async function sendBody(ctx: HandlerContext, res: ServerResponse, body: Buffer | Readable): Promise<void> {
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

/**
 * The one range of a `Range: bytes=a-b` / `bytes=a-` / `bytes=-n` header as [start, end) within
 * `size`; undefined (answer whole) without a header or for forms not served (several ranges, other
 * units); 'unsatisfiable' for a range starting at or past the end.
 */
function byteRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (m === null || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Number(m[2]);
    return n === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
  if (start >= size || end <= start) return 'unsatisfiable';
  return { start, end };
}

/** Indexes an image ahead of time and waits until its contents are encoded and cached (the next pull is warm). */
export async function handleNotify(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const ref = resolveRef(url.searchParams.get('ref'), ctx.registries, 'ref');
  const platform = platformParam(url, ctx.defaultPlatform);
  const img = await ctx.indexer.image(ref, platform, clientGone(req, res));
  await ctx.indexer.settled(img.record.diffIDs);
  await ensurePrediction(ctx, img);
  const body = JSON.stringify({ ref: img.ref, platform, manifestDigest: img.record.manifestDigest, layers: img.record.diffIDs.length });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
