/**
 * The proxy's HTTP(S) server: routing, bearer-token check, TLS, and the one error mapping
 * (src/http-errors.ts). Also the wiring of store, cache, indexer and registry client (`startProxy`), and
 * graceful close (stop accepting, let streams finish up to a deadline, then destroy; close the store).
 *
 * Routes: GET /v1/delta, GET /v1/content/<digest>, POST /v1/notify, POST|GET /v1/traces,
 * POST /v1/sessions/<id>/next, GET /healthz, GET /metrics.
 * /healthz and /metrics need no token (they reveal no image data). Not here: request logic (handlers.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { StarlightError } from '../errors.js';
import { nativeGzip } from '../layers/decompress.js';
import type { LayerLimits } from '../layers/limits.js';
import { type Logger, nullLogger } from '../log.js';
import type { CredentialProvider } from '../oci/auth.js';
import { RegistryClient } from '../oci/client.js';
import { isLoopback } from '../oci/reference.js';
import { ContentCache } from './content-cache.js';
import { type HandlerContext, handleContent, handleDelta, handleNotify } from './handlers.js';
import { sendError } from '../http-errors.js';
import { setSocketOption } from '../socket-options.js';
import { IndexerService } from './indexer-service.js';
import { ProxyMetrics } from './metrics.js';
import { MetadataStore, STORE_FILE } from './store.js';
import { PgSharedStore } from './pg-store.js';
import { ReplicaSync } from './replica-sync.js';
import { PriorityService } from './priority-service.js';
import { StartupService } from './startup-service.js';
import { handleTracesGet, handleTracesPost } from './trace-handlers.js';
import { TRACES_ROUTE } from '../protocol/traces.js';
import { SESSIONS_ROUTE } from '../protocol/constants.js';
import { handleSessionNext } from './session-handlers.js';
import { HeaderFirst } from './session/header-first.js';
import { SessionRegistry } from './session/registry.js';
import { PlanCache } from './session/plan-cache.js';
import { TocWire } from './session/toc-wire.js';
import { DEFAULT_FRAMED_RUN_BYTES, FramedRunStore } from './session/framed-runs.js';
import { StagingArea } from './staging.js';
import { Semaphore } from './semaphore.js';
import { DEFAULT_GC_INTERVAL_S, DEFAULT_GC_MIN_AGE_MS, collectGarbage, startPeriodicGc } from './gc.js';

/** Default ProxyOptions.stagingBytes (4 GiB). */
const DEFAULT_STAGING_BYTES = 4 * 1024 ** 3;

/** ms that close() lets running streams finish before destroying their sockets. */
const CLOSE_GRACE_MS = 5000;
/*
 * Request header and whole-request deadlines are Node's defaults, set explicitly so they stay: 60 s
 * and 300 s (slowloris). Shorter values (30 s / 120 s) made Node's periodic connection check answer
 * 408 to a keep-alive client of a long test run under load (proxy-first-contact), so they stay.
 */
const HEADERS_TIMEOUT_MS = 60_000;
const REQUEST_TIMEOUT_MS = 300_000;
/** An idle keep-alive connection is closed after this, ms (Node's default). */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/**
 * A socket with no byte moving either way for this long is closed, ms: a client that stops reading a
 * stream (or a half-open peer) cannot pin it and its buffers forever. Generous because a first
 * request legitimately waits, silent, while a large image is indexed.
 */
const SOCKET_IDLE_TIMEOUT_MS = 10 * 60_000;
/**
 * TCP_NOTSENT_LOWAT of every connection, bytes: the kernel takes more of a stream only while less
 * than this is unsent, so the rest waits in the sender's queue, where a blocked read's file can still
 * jump ahead of it (issue 11). Without it Linux autotunes the send buffer to about two congestion
 * windows: megabytes of already-ordered frames in front of every bump on a WAN link.
 */
const SEND_QUEUE_LOWAT_BYTES = 128 * 1024;
/** Trace uploads read and stored at once; more wait (up to MAX_QUEUED_TRACE_UPLOADS, then 503). */
export const MAX_CONCURRENT_TRACE_UPLOADS = 2;
/** Trace uploads waiting for a slot before new ones are refused with SL_ERR_PROXY_BUSY. */
export const MAX_QUEUED_TRACE_UPLOADS = 16;
/** Default ProxyOptions.maxConnections. */
export const DEFAULT_MAX_CONNECTIONS = 1024;

export interface ProxyOptions {
  /** Upstream registries as URLs (http://127.0.0.1:5000) or host[:port]; the first is the default. */
  registries: string[];
  /** Listen host and port (port 0: any free port). */
  host: string;
  port: number;
  /** Data dir: metadata store and content cache. */
  dataDir: string;
  /** Content cache bound, encoded bytes. */
  cacheBytes: number;
  /** Bound on raw contents staged until encoded (first pulls), bytes; 0 = encode inline. Default 4 GiB. */
  stagingBytes?: number;
  /** Layer passes at once. Default DEFAULT_INDEX_CONCURRENCY. */
  indexConcurrency?: number;
  /** Bounds on reading one layer (src/layers/limits.ts); unset ones take the defaults. */
  layerLimits?: Partial<LayerLimits>;
  /** Client connections at once; more are refused at accept. Default DEFAULT_MAX_CONNECTIONS. */
  maxConnections?: number;
  /** Socket idle timeout, ms (tests shorten it). Default SOCKET_IDLE_TIMEOUT_MS. */
  socketIdleMs?: number;
  /** Unreferenced layers indexed longer ago than this are collected (gc.ts). Default DEFAULT_GC_MIN_AGE_MS. */
  gcMinAgeMs?: number;
  /** Metadata GC runs at start and then every this many ms (--gc-interval); 0: at start only. Default DEFAULT_GC_INTERVAL_S. */
  gcIntervalMs?: number;
  /** Accepted bearer tokens; empty/undefined: no auth. */
  tokens?: string[];
  /**
   * Tokens that may upload traces (POST /v1/traces), the 'trace' scope of the token file. Undefined:
   * the same as `tokens`. With tokens configured, an upload needs one of these.
   */
  traceTokens?: string[];
  /** PEM cert and key: serve HTTPS. */
  tls?: { cert: Buffer; key: Buffer };
  /** Platform for requests that name none (default linux/amd64). */
  defaultPlatform?: string;
  logger?: Logger;
  /** Registry client options override (tests). */
  client?: RegistryClient;
  /** Upstream credentials per registry host (--registry-auth); default: the docker config (auth.ts). */
  credentials?: CredentialProvider;
  /** postgres://… shared by replicas (issue 15); undefined: this proxy's own SQLite store only. */
  db?: string;
  /** URL other replicas reach this one at (peer content fills); default: the listen URL. */
  advertiseUrl?: string;
}

export interface RunningProxy {
  url: string;
  port: number;
  metrics: ProxyMetrics;
  close(): Promise<void>;
}

/** host[:port] of a --registry value; `insecure` if the URL says http on a non-loopback host. */
function registryHost(v: string): { host: string; insecure: boolean } {
  const withScheme = /^[a-z]+:\/\//i.test(v) ? v : `https://${v}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch (err) {
    throw new StarlightError('SL_ERR_CONFIG', `--registry ${v} is not a URL or host[:port]`, { cause: err, details: { registry: v } });
  }
  return { host: u.host, insecure: u.protocol === 'http:' && !isLoopback(u.host) };
}

function authorized(req: IncomingMessage, tokens: Buffer[]): boolean {
  if (tokens.length === 0) return true;
  const h = req.headers.authorization ?? '';
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  if (m === null) return false;
  const got = Buffer.from(m[1]!);
  return tokens.some((t) => t.length === got.length && timingSafeEqual(t, got));
}

/**
 * Who sent a request, for bounding what one party may store (traces): a digest of its bearer token
 * when it sent one, else its peer address. Never a claim from the body.
 */
function requester(req: IncomingMessage): string {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (m !== null) return `token:${createHash('sha256').update(m[1]!).digest('hex').slice(0, 16)}`;
  return `addr:${req.socket.remoteAddress ?? '?'}`;
}

export async function startProxy(o: ProxyOptions): Promise<RunningProxy> {
  const logger = (o.logger ?? nullLogger).child({ component: 'proxy' });
  try {
    mkdirSync(o.dataDir, { recursive: true });
  } catch (err) {
    throw new StarlightError('SL_ERR_CONFIG', `--data ${o.dataDir} cannot be used as a directory: ${(err as Error).message}`, { cause: err, details: { option: 'data', value: o.dataDir } });
  }
  const regs = o.registries.map(registryHost);
  if (regs.length === 0) throw new StarlightError('SL_ERR_CONFIG', 'at least one --registry is required');
  const store = new MetadataStore(join(o.dataDir, STORE_FILE));
  const gcMinAgeMs = o.gcMinAgeMs ?? DEFAULT_GC_MIN_AGE_MS;
  const collected = collectGarbage(store, Date.now(), gcMinAgeMs, logger);
  let shared: PgSharedStore | undefined;
  try {
    shared = o.db !== undefined ? await PgSharedStore.open(o.db) : undefined;
  } catch (err) {
    store.close();
    throw err;
  }
  let cache: ContentCache | undefined;
  /** Trace uploads being read/stored at once (each may hold a 16 MiB body). */
  const uploads = new Semaphore(MAX_CONCURRENT_TRACE_UPLOADS);
  const metrics: ProxyMetrics = new ProxyMetrics(() => ({
    cacheBytes: cache?.storedBytes ?? 0,
    traceUploadsRunning: uploads.active,
    traceUploadsWaiting: uploads.waiting,
    // Read at render time, after `indexer` below is constructed.
    indexing: indexer.indexing,
    encodesPending: indexer.encodesPending,
  }));
  cache = new ContentCache({ dir: o.dataDir, maxBytes: o.cacheBytes, store, counters: metrics.cache });
  for (const d of collected.removedCached) rmSync(cache.pathOf(d), { force: true });
  const replicas =
    shared === undefined
      ? undefined
      : new ReplicaSync({ shared, store, cache, logger, peerToken: o.tokens?.[0], onPeerFetch: () => void metrics.peerContentFetches++ });
  const client = o.client ?? new RegistryClient({ insecureHosts: regs.filter((r) => r.insecure).map((r) => r.host), logger, credentials: o.credentials });
  const stagingBytes = o.stagingBytes ?? DEFAULT_STAGING_BYTES;
  const staging = stagingBytes > 0 ? new StagingArea(join(o.dataDir, 'staging'), stagingBytes) : undefined;
  const priority = new PriorityService(store, regs[0]!.host, new StartupService({ cache, store, staging, logger }), replicas);
  const tocWire = new TocWire();
  const indexer: IndexerService = new IndexerService({
    client, store, cache, metrics, logger, staging, indexConcurrency: o.indexConcurrency, layerLimits: o.layerLimits, replicas,
    onLayerIndexed: (diffID, toc) => tocWire.warm(diffID, toc),
  });
  const gcIntervalMs = o.gcIntervalMs ?? DEFAULT_GC_INTERVAL_S * 1000;
  const gc =
    gcIntervalMs > 0
      ? startPeriodicGc({
          store,
          intervalMs: gcIntervalMs,
          minAgeMs: gcMinAgeMs,
          logger,
          onCollected: (r) => {
            for (const d of r.removedCached) cache.forget(d);
            indexer.forgetLayers(r.removedLayers);
          },
        })
      : undefined;
  const sessions = new SessionRegistry();
  const ctx: HandlerContext = {
    store,
    cache,
    indexer,
    priority,
    metrics,
    logger,
    registries: regs.map((r) => r.host),
    defaultPlatform: o.defaultPlatform ?? 'linux/amd64',
    cacheBytes: o.cacheBytes,
    staging,
    sessions,
    // Shared frames copy bytes of the memory tier: at most a quarter of --cache-size on top of it.
    plans: new PlanCache(new FramedRunStore(Math.min(DEFAULT_FRAMED_RUN_BYTES, Math.floor(o.cacheBytes / 4))), tocWire),
    headerFirst: new HeaderFirst(),
  };
  const tokens = (o.tokens ?? []).map((t) => Buffer.from(t));
  const traceTokens = (o.traceTokens ?? o.tokens ?? []).map((t) => Buffer.from(t));
  /** Auth is on as soon as any token is configured; a route then needs a token of its own scope. */
  const authOn = tokens.length + traceTokens.length > 0;
  const allowed = (req: IncomingMessage, scope: Buffer[]): boolean => !authOn || (scope.length > 0 && authorized(req, scope));

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const path = url.pathname;
    if (path === '/healthz' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/metrics' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
      return;
    }
    if (path === TRACES_ROUTE && req.method === 'POST') {
      if (!allowed(req, traceTokens)) {
        throw new StarlightError('SL_ERR_PROXY_UNAUTHORIZED', `uploading traces needs a bearer token with the 'trace' scope`, { details: { path, scope: 'trace' } });
      }
      if (uploads.waiting >= MAX_QUEUED_TRACE_UPLOADS) {
        throw new StarlightError('SL_ERR_PROXY_BUSY', `too many trace uploads at once (${MAX_CONCURRENT_TRACE_UPLOADS} running, ${uploads.waiting} waiting); retry later`, { details: { path } });
      }
      return uploads.run(() => handleTracesPost(ctx, req, res, requester(req)));
    }
    if (!allowed(req, tokens)) {
      throw new StarlightError('SL_ERR_PROXY_UNAUTHORIZED', `missing or wrong bearer token for ${path}`, { details: { path } });
    }
    if (path === '/v1/delta' && req.method === 'GET') return handleDelta(ctx, req, res, url);
    if (path.startsWith('/v1/content/') && req.method === 'GET') return handleContent(ctx, req, res, decodeURIComponent(path.slice(12)));
    if (path === '/v1/notify' && req.method === 'POST') return handleNotify(ctx, req, res, url);
    if (path.startsWith(`${SESSIONS_ROUTE}/`) && path.endsWith('/next') && req.method === 'POST') {
      return handleSessionNext(sessions, metrics, req, res, decodeURIComponent(path.slice(SESSIONS_ROUTE.length + 1, -'/next'.length)));
    }
    if (path === TRACES_ROUTE && req.method === 'GET') return handleTracesGet(ctx, req, res, url);
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `no route ${req.method ?? '?'} ${path}`, { details: { path } });
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    route(req, res).catch((err: unknown) => {
      logger.debug('request-failed', { path: req.url, error: err });
      sendError(res, err, 'starlight-proxy');
    });
  };
  const limits = { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS };
  const server: Server = o.tls ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key, ...limits }, onRequest) : createHttpServer(limits, onRequest);
  server.maxConnections = o.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  let lowatMissing = false;
  server.on('connection', (socket: Socket) => {
    if (setSocketOption(socket, 'TCP_NOTSENT_LOWAT', SEND_QUEUE_LOWAT_BYTES) || lowatMissing) return;
    lowatMissing = true;
    logger.warn('proxy-send-lowat-not-set', { hint: 'build/Release/starlight_net.node missing (npm install): on-demand reads may wait behind megabytes of kernel send buffer' });
  });
  // 'timeout' fires after socketIdleMs without a byte in or out; the default handler would keep it open.
  server.setTimeout(o.socketIdleMs ?? SOCKET_IDLE_TIMEOUT_MS, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(new StarlightError('SL_ERR_CONFIG', `cannot listen on ${o.host}:${o.port}: ${err.message}`, { cause: err, details: { listen: `${o.host}:${o.port}` } })),
    );
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${o.tls ? 'https' : 'http'}://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`;
  if (!nativeGzip) logger.warn('proxy-native-inflate-missing', { hint: 'build/Release/starlight_inflate.node missing (libisal-dev, then npm install): layers are inflated and hashed by node:zlib on the main thread, a slower first contact' });
  logger.info('proxy-listening', { url, registries: ctx.registries, ...(shared !== undefined ? { db: shared.where } : {}) });
  await replicas?.start(o.advertiseUrl ?? url);

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      const done = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await done;
      clearTimeout(timer);
      gc?.stop();
      await indexer.close(CLOSE_GRACE_MS);
      cache?.close();
      replicas?.stop();
      await shared?.close();
      store.close();
      logger.info('proxy-closed', {});
    })());
  return { url, port, metrics, close };
}
