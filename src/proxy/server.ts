/**
 * The proxy's HTTP(S) server: routing, bearer-token check, TLS, and the one error mapping
 * (http-errors.ts). Also the wiring of store, cache, indexer and registry client (`startProxy`), and
 * graceful close (stop accepting, let streams finish up to a deadline, then destroy; close the store).
 *
 * Routes: GET /v1/delta, GET /v1/content/<digest>, POST /v1/notify, POST|GET /v1/traces,
 * POST /v1/sessions/<id>/next, GET /healthz, GET /metrics.
 * /healthz and /metrics need no token (they reveal no image data). Not here: request logic (handlers.ts).
 */
import { timingSafeEqual } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { StarlightError } from '../errors.js';
import { type Logger, nullLogger } from '../log.js';
import { RegistryClient } from '../oci/client.js';
import { isLoopback } from '../oci/reference.js';
import { ContentCache } from './content-cache.js';
import { type HandlerContext, handleContent, handleDelta, handleNotify } from './handlers.js';
import { sendError } from './http-errors.js';
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
import { SessionRegistry } from './session/registry.js';
import { StagingArea } from './staging.js';

/** Default ProxyOptions.stagingBytes (4 GiB). */
export const DEFAULT_STAGING_BYTES = 4 * 1024 ** 3;

/** ms that close() lets running streams finish before destroying their sockets. */
export const CLOSE_GRACE_MS = 5000;

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
  /** Accepted bearer tokens; empty/undefined: no auth. */
  tokens?: string[];
  /** PEM cert and key: serve HTTPS. */
  tls?: { cert: Buffer; key: Buffer };
  /** Platform for requests that name none (default linux/amd64). */
  defaultPlatform?: string;
  logger?: Logger;
  /** Registry client options override (tests). */
  client?: RegistryClient;
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
export function registryHost(v: string): { host: string; insecure: boolean } {
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

export async function startProxy(o: ProxyOptions): Promise<RunningProxy> {
  const logger = (o.logger ?? nullLogger).child({ component: 'proxy' });
  mkdirSync(o.dataDir, { recursive: true });
  const regs = o.registries.map(registryHost);
  if (regs.length === 0) throw new StarlightError('SL_ERR_CONFIG', 'at least one --registry is required');
  const store = new MetadataStore(join(o.dataDir, STORE_FILE));
  let shared: PgSharedStore | undefined;
  try {
    shared = o.db !== undefined ? await PgSharedStore.open(o.db) : undefined;
  } catch (err) {
    store.close();
    throw err;
  }
  let cache: ContentCache | undefined;
  const metrics = new ProxyMetrics(() => ({ cacheBytes: cache?.storedBytes ?? 0 }));
  cache = new ContentCache({ dir: o.dataDir, maxBytes: o.cacheBytes, store, counters: metrics.cache });
  const replicas =
    shared === undefined
      ? undefined
      : new ReplicaSync({ shared, store, cache, logger, peerToken: o.tokens?.[0], onPeerFetch: () => void metrics.peerContentFetches++ });
  const client = o.client ?? new RegistryClient({ insecureHosts: regs.filter((r) => r.insecure).map((r) => r.host), logger });
  const stagingBytes = o.stagingBytes ?? DEFAULT_STAGING_BYTES;
  const staging = stagingBytes > 0 ? new StagingArea(join(o.dataDir, 'staging'), stagingBytes) : undefined;
  const priority = new PriorityService(store, regs[0]!.host, new StartupService({ cache, store, staging, logger }), replicas);
  const indexer = new IndexerService({ client, store, cache, metrics, logger, staging, indexConcurrency: o.indexConcurrency, replicas });
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
  };
  const tokens = (o.tokens ?? []).map((t) => Buffer.from(t));

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
    if (!authorized(req, tokens)) {
      throw new StarlightError('SL_ERR_PROXY_UNAUTHORIZED', `missing or wrong bearer token for ${path}`, { details: { path } });
    }
    if (path === '/v1/delta' && req.method === 'GET') return handleDelta(ctx, req, res, url);
    if (path.startsWith('/v1/content/') && req.method === 'GET') return handleContent(ctx, req, res, decodeURIComponent(path.slice(12)));
    if (path === '/v1/notify' && req.method === 'POST') return handleNotify(ctx, req, res, url);
    if (path.startsWith(`${SESSIONS_ROUTE}/`) && path.endsWith('/next') && req.method === 'POST') {
      return handleSessionNext(sessions, req, res, decodeURIComponent(path.slice(SESSIONS_ROUTE.length + 1, -'/next'.length)));
    }
    if (path === TRACES_ROUTE && req.method === 'POST') return handleTracesPost(ctx, req, res);
    if (path === TRACES_ROUTE && req.method === 'GET') return handleTracesGet(ctx, req, res, url);
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `no route ${req.method ?? '?'} ${path}`, { details: { path } });
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    route(req, res).catch((err: unknown) => {
      logger.debug('request-failed', { path: req.url, error: err });
      sendError(res, err);
    });
  };
  const server: Server = o.tls ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, onRequest) : createHttpServer(onRequest);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(new StarlightError('SL_ERR_CONFIG', `cannot listen on ${o.host}:${o.port}: ${err.message}`, { cause: err, details: { listen: `${o.host}:${o.port}` } })),
    );
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${o.tls ? 'https' : 'http'}://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`;
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
      await indexer.close(CLOSE_GRACE_MS);
      cache?.close();
      replicas?.stop();
      await shared?.close();
      store.close();
      logger.info('proxy-closed', {});
    })());
  return { url, port, metrics, close };
}
