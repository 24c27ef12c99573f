/**
 * The worker's HTTP client of the proxy: opens delta streams (GET /v1/delta) and single items
 * (GET /v1/content/<digest>), asks a stream's session to send items next (POST
 * /v1/sessions/<id>/next, docs/protocol.md "Sessions"), and turns the proxy's OCI-style error bodies back into StarlightErrors
 * with the proxy's code. Connection failures become SL_ERR_PROXY_UNREACHABLE.
 *
 * Replicas (issue 15): the URL may list several proxies sharing one database ("http://a:8090,http://b:8090").
 * Requests go to one of them (the first, until it fails); a request the current replica cannot answer
 * (unreachable, or 502/503: its database is down) is retried at once on the next, which then becomes
 * current. A delta stream that dies mid-way is resumed by the receiver at the item where it stopped
 * (`from=`): its reconnect lands on the next replica, which plans the same items (a different order
 * is carried over by digest: receiver.ts acceptHeader).
 *
 * Not here: decoding frames (src/protocol), writing content (receiver.ts), retries and resume
 * (the receiver decides when to reconnect).
 */
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { StarlightError, type Code, hasCode } from '../../errors.js';
import { decodeErrorBody } from '../../http-errors.js';
import { isClosedBeforeResponse, streamGet } from './http-stream.js';
import { WarmConnection } from './warm-connection.js';
import { HTTP_HEADER_ENCODING, HTTP_HEADER_RAW_SIZE, HTTP_HEADER_SESSION, SESSION_ID_RE, ENCODINGS, type Encoding } from '../../protocol/constants.js';

export interface ProxyClientOptions {
  /** Base URL of the proxy, e.g. http://127.0.0.1:8090; or several replicas, comma-separated. */
  url: string;
  /** Bearer token (the proxy's --token-file); none by default. */
  token?: string;
  /** Time to wait for response headers of /v1/content and other short requests, in ms; default 30 000. */
  headersTimeoutMs?: number;
  /**
   * Time to wait for the response to GET /v1/delta, in ms; default 600 000. Longer than the others
   * because the proxy answers only once it has indexed a cold image (minutes for a large one).
   */
  deltaTimeoutMs?: number;
  /**
   * A response body (delta stream, content) that delivers no byte for this long is dropped as
   * stalled, in ms; default 60 000. A half-open connection (peer gone without RST, link frozen) would
   * otherwise hold a stream forever; the receiver reconnects and resumes.
   */
  bodyIdleTimeoutMs?: number;
  /**
   * Keep one connection to the proxy open ahead of the next delta stream (warm-connection.ts; plain
   * http only): a pull then pays no TCP handshake (issue 19). Default false (the daemon turns it on).
   */
  warm?: boolean;
}

export interface DeltaRequest {
  ref: string;
  /** diffIDs of layers (or manifest digests of images) the worker already holds. */
  have: string[];
  /** 'os/arch[/variant]'; the proxy's default when absent. */
  platform?: string;
  /** First item index to send (resume). */
  from?: number;
}

export interface ContentResponse {
  encoding: Encoding;
  /** Decoded size as the proxy states it. */
  size: number;
  body: Readable;
}


export interface DeltaResponse {
  /** The raw delta (decode with DeltaDecoder). */
  body: Readable;
  /** The stream's session id, when the proxy offers queue jumping. */
  session: string | undefined;
}

const DEFAULT_HEADERS_TIMEOUT_MS = 30_000;
const DEFAULT_DELTA_TIMEOUT_MS = 600_000;
const DEFAULT_BODY_IDLE_TIMEOUT_MS = 60_000;

/** The proxy URLs of a --proxy value: one URL, or replicas comma-separated (scheme defaults to http). */
export function parseProxyUrls(value: string): URL[] {
  const parts = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0) throw new StarlightError('SL_ERR_CONFIG', `--proxy ${JSON.stringify(value)} names no proxy`, { details: { proxy: value } });
  return parts.map((p) => {
    try {
      return new URL(p.includes('://') ? p : `http://${p}`);
    } catch (cause) {
      throw new StarlightError('SL_ERR_CONFIG', `--proxy ${JSON.stringify(p)} is not a URL`, { cause, details: { proxy: p } });
    }
  });
}

/** HTTP statuses after which the same request is tried on another replica (bad gateway, unavailable). */
const FAILOVER_STATUSES = new Set([502, 503]);

function failoverWorthy(err: unknown): boolean {
  if (hasCode(err, 'SL_ERR_PROXY_UNREACHABLE')) return true;
  const status = err instanceof StarlightError ? err.details.status : undefined;
  return typeof status === 'number' && FAILOVER_STATUSES.has(status);
}

export class ProxyClient {
  /** Every replica, in preference order. */
  readonly bases: readonly URL[];
  private current = 0;
  private readonly token: string | undefined;
  private readonly headersTimeoutMs: number;
  private readonly deltaTimeoutMs: number;
  private readonly bodyIdleTimeoutMs: number;
  private readonly agents: { http: http.Agent; https: https.Agent };
  private readonly warmConn: WarmConnection | undefined;

  constructor(opts: ProxyClientOptions) {
    this.bases = parseProxyUrls(opts.url);
    this.token = opts.token;
    this.headersTimeoutMs = opts.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
    this.deltaTimeoutMs = opts.deltaTimeoutMs ?? DEFAULT_DELTA_TIMEOUT_MS;
    this.bodyIdleTimeoutMs = opts.bodyIdleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS;
    this.agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
    if (opts.warm) {
      this.warmConn = new WarmConnection();
      this.warmConn.warm(this.base);
    }
  }

  /** The replica requests go to now. */
  get base(): URL {
    return this.bases[this.current]!;
  }

  /** Opens a delta stream. */
  async delta(req: DeltaRequest, signal?: AbortSignal): Promise<DeltaResponse> {
    const u = new URL('/v1/delta', this.base);
    u.searchParams.set('to', req.ref);
    if (req.have.length) u.searchParams.set('have', req.have.join(','));
    if (req.platform) u.searchParams.set('platform', req.platform);
    if (req.from) u.searchParams.set('from', String(req.from));
    // This worker reads ITEM frames (src/protocol/decoder.ts): a first-contact proxy compresses at send time.
    u.searchParams.set('deferred', '1');
    // ... and brotli-compressed TOCs in the header (docs/protocol.md "Compressed TOCs"; src/protocol/frames.ts).
    u.searchParams.set('tocs', 'br');
    // ... and the IMAGE frame (docs/protocol.md "Image first"): the proxy names the image before it
    // indexes or plans, so the caller records it in containerd meanwhile.
    if (!req.from) u.searchParams.set('image', '1');
    const what = `delta of ${req.ref}`;
    // Plain http: the body as views of the socket's reads (http-stream.ts: node:http copies every piece).
    const res = await this.withFailover<{ headers: http.IncomingHttpHeaders; body: Readable }>(u, signal, (url) =>
      url.protocol === 'http:'
        ? this.streamOnce(url, signal, what, this.deltaTimeoutMs)
        : this.requestOnce(url, 'GET', signal, what, undefined, this.deltaTimeoutMs).then((r) => ({ headers: r.headers, body: r as Readable })),
    );
    const session = res.headers[HTTP_HEADER_SESSION];
    return { body: res.body, session: typeof session === 'string' && SESSION_ID_RE.test(session) ? session : undefined };
  }

  /**
   * Asks the proxy to send `items` (indexes of the stream's header) next on the stream of `session`.
   * Resolves once the proxy accepted (204); throws the proxy's error otherwise (404: the session is
   * unknown or its stream finished).
   */
  async next(session: string, items: number[], signal?: AbortSignal): Promise<void> {
    const path = `/v1/sessions/${encodeURIComponent(session)}/next`;
    const res = await this.request(new URL(path, this.base), 'POST', signal, `POST ${path}`, Buffer.from(JSON.stringify({ items })));
    res.resume();
  }

  /** Fetches one content item, encoded as the proxy stores it. */
  async content(digest: string, signal?: AbortSignal): Promise<ContentResponse> {
    const res = await this.request(new URL(`/v1/content/${digest}`, this.base), 'GET', signal, `content ${digest}`);
    const enc = String(res.headers[HTTP_HEADER_ENCODING] ?? 'identity');
    const size = Number(res.headers[HTTP_HEADER_RAW_SIZE]);
    if (!(ENCODINGS as readonly string[]).includes(enc) || !Number.isSafeInteger(size) || size < 0) {
      res.destroy();
      throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `proxy sent content ${digest} with encoding '${enc}' and size '${res.headers[HTTP_HEADER_RAW_SIZE]}'`, {
        details: { digest },
      });
    }
    return { encoding: enc as Encoding, size, body: res };
  }

  /**
   * A JSON request to the proxy's API (POST /v1/traces, POST /v1/notify, GET /v1/traces…): resolves
   * with the parsed answer; a non-200 answer becomes the StarlightError its body describes.
   */
  async requestJson(method: 'GET' | 'POST', path: string, query: Record<string, string | undefined> = {}, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    const u = new URL(path, this.base);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) u.searchParams.set(k, v);
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const res = await this.request(u, method, signal, `${method} ${path}`, data);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    try {
      return text ? (JSON.parse(text) as unknown) : null;
    } catch (cause) {
      throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `proxy ${this.base.host} answered ${method} ${path} with non-JSON`, { cause });
    }
  }

  /** POST with a JSON body (startup traces). */
  postJson(path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    return this.requestJson('POST', path, {}, body, signal);
  }

  close(): void {
    this.warmConn?.close();
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /** Destroys `res` when no byte of its body arrives for bodyIdleTimeoutMs (see the option). */
  private dropWhenStalled(res: http.IncomingMessage, what: string): void {
    const sock = res.socket;
    if (!sock || this.bodyIdleTimeoutMs <= 0) return;
    const ms = this.bodyIdleTimeoutMs;
    const onIdle = (): void => {
      res.destroy(
        new StarlightError('SL_ERR_PROXY_UNREACHABLE', `proxy ${this.base.host}: ${what} stalled (no byte in ${ms} ms)`, { details: { proxy: this.base.host } }),
      );
    };
    sock.setTimeout(ms, onIdle);
    // A keep-alive socket goes back to the agent: its timeout must not outlive this response.
    res.once('close', () => {
      sock.setTimeout(0);
      sock.off('timeout', onIdle);
    });
  }

  /** One request at the current replica; on a failure worth it, at the next ones (each at most once). */
  private request(
    u: URL,
    method: string,
    signal: AbortSignal | undefined,
    what: string,
    body?: Buffer,
    timeoutMs = this.headersTimeoutMs,
  ): Promise<http.IncomingMessage> {
    return this.withFailover(u, signal, (url) => this.requestOnce(url, method, signal, what, body, timeoutMs));
  }

  /** `once` at the current replica (u's path and query on its base); on a failure worth it, at the next ones. */
  private async withFailover<T>(u: URL, signal: AbortSignal | undefined, once: (url: URL) => Promise<T>): Promise<T> {
    for (let tried = 1; ; tried++) {
      const base = this.current;
      try {
        return await once(new URL(u.pathname + u.search, this.bases[base]));
      } catch (err) {
        if (tried >= this.bases.length || signal?.aborted || !failoverWorthy(err)) throw err;
        // Another request may have moved on already: move only from the replica that failed here.
        if (this.current === base) this.current = (base + 1) % this.bases.length;
      }
    }
  }

  /**
   * GET of a long body over http: (http-stream.ts); the same answers and errors as requestOnce:
   * 200 resolves, another status rejects with the error its body describes.
   */
  private async streamOnce(u: URL, signal: AbortSignal | undefined, what: string, timeoutMs: number): Promise<{ headers: Record<string, string>; body: Readable }> {
    const host = u.host;
    let res;
    const get = (socket?: Socket) =>
      streamGet(u, {
        headers: this.token ? { authorization: `Bearer ${this.token}` } : {},
        signal,
        headersTimeoutMs: timeoutMs,
        idleTimeoutMs: this.bodyIdleTimeoutMs,
        onIdle: () =>
          new StarlightError('SL_ERR_PROXY_UNREACHABLE', `proxy ${host}: ${what} stalled (no byte in ${this.bodyIdleTimeoutMs} ms)`, { details: { proxy: host } }),
        ...(socket ? { socket } : {}),
      });
    try {
      const spare = this.warmConn?.take(u);
      try {
        res = await get(spare);
      } catch (err) {
        // The connection opened ahead was closed by the proxy as the request left: once more, on a new one.
        if (spare === undefined || signal?.aborted || !isClosedBeforeResponse(err)) throw err;
        res = await get();
      }
    } catch (err) {
      if (signal?.aborted) throw new StarlightError('SL_ERR_CANCELED', `${what}: canceled`, { cause: err });
      throw new StarlightError('SL_ERR_PROXY_UNREACHABLE', `proxy ${host} unreachable for ${what}: ${(err as Error).message}`, {
        cause: err,
        details: { proxy: host },
      });
    }
    if (res.status === 200) return res;
    throw await readError(res.status, res.body, what, host);
  }

  private requestOnce(
    u: URL,
    method: string,
    signal: AbortSignal | undefined,
    what: string,
    body: Buffer | undefined,
    timeoutMs: number,
  ): Promise<http.IncomingMessage> {
    const mod = u.protocol === 'https:' ? https : http;
    const host = u.host;
    const headers: Record<string, string | number> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = body.length;
    }
    return new Promise((resolve, reject) => {
      const req = mod.request(u, { method, headers, agent: u.protocol === 'https:' ? this.agents.https : this.agents.http, signal }, (res) => {
        clearTimeout(timer);
        if (res.statusCode === 200 || res.statusCode === 204) {
          this.dropWhenStalled(res, what);
          return resolve(res);
        }
        readError(res.statusCode, res, what, host).then(reject, reject);
      });
      const timer = setTimeout(() => req.destroy(new Error(`no response in ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (err) => {
        clearTimeout(timer);
        if (signal?.aborted) return reject(new StarlightError('SL_ERR_CANCELED', `${what}: canceled`, { cause: err }));
        reject(
          new StarlightError('SL_ERR_PROXY_UNREACHABLE', `proxy ${host} unreachable for ${what}: ${err.message}`, {
            cause: err,
            details: { proxy: host },
          }),
        );
      });
      req.end(body);
    });
  }
}

/** Turns a non-200 response with an OCI-style body into the StarlightError it describes. */
async function readError(status: number | undefined, res: Readable, what: string, host: string): Promise<StarlightError> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8').slice(0, 64 * 1024);
  const e = decodeErrorBody(text);
  let code: Code = e.code ?? (status !== undefined && status >= 500 ? 'SL_ERR_PROTOCOL_REMOTE' : 'SL_ERR_INVALID_ARGUMENT');
  let message = e.message ? `proxy ${host}: ${e.message}` : `proxy ${host} answered ${status} for ${what}`;
  if (!e.message && text && e.remoteCode === undefined) message += `: ${text.trim().slice(0, 200)}`;
  const detail = e.detail;
  // A 401 is the proxy refusing our token, unless the proxy says its upstream registry refused it.
  if (status === 401 && code !== 'SL_ERR_OCI_UNAUTHORIZED') code = 'SL_ERR_PROXY_UNAUTHORIZED';
  return new StarlightError(code, message, { details: { ...detail, status, proxy: host } });
}
