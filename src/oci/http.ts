/**
 * One registry HTTP exchange with auth, timeout and retry, on Node's built-in fetch (undici).
 *
 * Policy: only GET/HEAD are retried, on connection errors, timeouts, 429 and 5xx, with exponential
 * backoff (jittered, honouring Retry-After), and only until a body byte reaches the caller: a
 * buffered read retries the whole exchange, a streamed one never retries once it returned. A 401 is
 * answered once via the Authenticator (it does not count as a retry). A caller's abort is never retried.
 *
 * Not here: URLs and media types (client.ts), status → error mapping (http-errors.ts).
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { StarlightError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Authenticator } from './auth.js';
import { type ErrorContext, rootCause, statusError, unreachableError } from './http-errors.js';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface HttpSettings {
  retries: number;
  retryBaseMs: number;
  timeoutMs: number;
  userAgent: string;
  logger: Logger;
}

export interface HttpRequest {
  method: Method;
  url: string;
  headers?: Record<string, string>;
  /** A Buffer, or a factory for a fresh stream (uploads are never retried, but a 401 re-sends once). */
  body?: Buffer | (() => Readable);
  /** Statuses that count as success; anything else becomes an error. */
  expect: readonly number[];
  /** Token scope, e.g. 'repository:x/y:pull'. */
  scope: string;
  ctx: ErrorContext;
  signal?: AbortSignal;
  /** Skip the Authenticator (requests to token servers). */
  noAuth?: boolean;
}

/** Longest backoff between two attempts, ms (also caps Retry-After). */
const MAX_BACKOFF_MS = 10_000;
/** Error bodies are read up to this many bytes for the message; the rest is discarded. */
const MAX_ERROR_BODY = 64 * 1024;

type Attempt<T> = { done: T } | { retry: StarlightError; afterMs?: number };

export class RegistryHttp {
  constructor(
    private readonly settings: HttpSettings,
    private readonly auth: Authenticator,
  ) {}

  /** Sends and returns the response with its body unread (the caller streams it; no retry after). */
  send(req: HttpRequest): Promise<Response> {
    return this.run(req, false, async (res) => res);
  }

  /** Sends and reads the whole body; a failure while reading is retried like a failed connect. */
  sendBuffered(req: HttpRequest): Promise<{ res: Response; body: Buffer }> {
    return this.run(req, true, async (res) => ({ res, body: Buffer.from(await res.arrayBuffer()) }));
  }

  /** A plain GET for token servers: no auth, retried like any GET, body buffered. */
  async getToken(url: string, headers: Record<string, string>, ctx: ErrorContext): Promise<{ status: number; body: Buffer }> {
    const { res, body } = await this.sendBuffered({
      method: 'GET',
      url,
      headers,
      expect: [200, 401, 403],
      scope: '',
      ctx,
      noAuth: true,
    });
    return { status: res.status, body };
  }

  private async run<T>(req: HttpRequest, buffered: boolean, consume: (res: Response) => Promise<T>): Promise<T> {
    const idempotent = req.method === 'GET' || req.method === 'HEAD';
    const noAuth = req.noAuth === true;
    let challenged = false;
    for (let attempt = 0; ; attempt++) {
      const a = await this.attempt(req, buffered, noAuth, consume, () => {
        if (challenged) return false;
        challenged = true;
        return true;
      });
      if ('done' in a) return a.done;
      if (!idempotent || attempt >= this.settings.retries) throw a.retry;
      const backoff = Math.min(MAX_BACKOFF_MS, this.settings.retryBaseMs * 2 ** attempt * (0.5 + Math.random() / 2));
      const wait = Math.min(MAX_BACKOFF_MS, a.afterMs ?? backoff);
      this.settings.logger.debug('oci-request-retry', {
        registry: req.ctx.registry,
        method: req.method,
        url: req.url,
        attempt: attempt + 1,
        waitMs: Math.round(wait),
        error: a.retry,
      });
      try {
        await sleep(wait, undefined, { signal: req.signal });
      } catch (err) {
        throw canceled(req, err);
      }
    }
  }

  private async attempt<T>(
    req: HttpRequest,
    buffered: boolean,
    noAuth: boolean,
    consume: (res: Response) => Promise<T>,
    mayChallenge: () => boolean,
  ): Promise<Attempt<T>> {
    if (req.signal?.aborted) throw canceled(req, req.signal.reason);
    const authorization = noAuth ? undefined : await this.auth.authorize(req.ctx.registry, req.scope);
    const timer = new AbortController();
    const signal = req.signal ? AbortSignal.any([req.signal, timer.signal]) : timer.signal;
    const timeout = setTimeout(() => timer.abort(), this.settings.timeoutMs);
    try {
      const headers: Record<string, string> = { 'user-agent': this.settings.userAgent, ...req.headers };
      if (authorization) headers.authorization = authorization;
      const init: RequestInit & { duplex?: 'half' } = { method: req.method, headers, signal, redirect: 'follow' };
      if (Buffer.isBuffer(req.body)) init.body = req.body as Uint8Array as Uint8Array<ArrayBuffer>; // undici sends any view
      else if (req.body) {
        init.body = req.body() as unknown as ReadableStream;
        init.duplex = 'half';
      }
      const res = await fetch(req.url, init);
      if (res.status === 401 && !noAuth && mayChallenge()) {
        const body = await readCapped(res);
        if (this.auth.onChallenge(req.ctx.registry, res.headers.get('www-authenticate'), req.scope, authorization)) {
          return this.attempt(req, buffered, noAuth, consume, () => false);
        }
        throw statusError(401, req.method, req.ctx, body);
      }
      if (!req.expect.includes(res.status)) {
        const body = await readCapped(res);
        const err = statusError(res.status, req.method, req.ctx, body);
        if (res.status === 429 || res.status >= 500) return { retry: err, afterMs: retryAfterMs(res) };
        throw err;
      }
      if (!buffered) clearTimeout(timeout);
      return { done: await consume(res) };
    } catch (err) {
      if (err instanceof StarlightError) throw err;
      if (req.signal?.aborted) throw canceled(req, err);
      if (timer.signal.aborted) return { retry: unreachableError(req.ctx, err, this.settings.timeoutMs) };
      // fetch refuses the WHATWG "bad ports" (6000, 10080…) outright; retrying cannot help.
      if (rootCause(err).message === 'bad port') throw unreachableError(req.ctx, err);
      return { retry: unreachableError(req.ctx, err) };
    } finally {
      clearTimeout(timeout);
    }
  }
}

function canceled(req: HttpRequest, cause: unknown): StarlightError {
  return new StarlightError('SL_ERR_CANCELED', `${req.method} ${req.ctx.subject} on registry ${req.ctx.registry} was aborted`, {
    cause,
    details: { ...req.ctx.details, registry: req.ctx.registry },
  });
}

async function readCapped(res: Response): Promise<Buffer | undefined> {
  if (!res.body) return undefined;
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>)) {
      const b = chunk as Buffer;
      if (n < MAX_ERROR_BODY) chunks.push(b);
      n += b.length;
    }
  } catch {
    // An error body cut short still yields the status; the partial text is enough for a message.
  }
  return Buffer.concat(chunks).subarray(0, MAX_ERROR_BODY);
}

/** Retry-After in ms (delta-seconds or HTTP date), or undefined. */
function retryAfterMs(res: Response): number | undefined {
  const v = res.headers.get('retry-after');
  if (!v) return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

/** Converts a fetch body to a Node stream (empty stream for bodiless responses). */
export function bodyStream(res: Response): Readable {
  if (!res.body) return Readable.from([]);
  return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
}
