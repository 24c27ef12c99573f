/**
 * One HTTP/1.1 GET over a plain TCP socket whose response body is handed on as views of the
 * socket's read buffers: the delta stream's transport (proxy-client.ts uses it for http: proxies).
 *
 * Why not node:http: its parser copies every piece of a response body into a new Buffer
 * (node_http_parser.cc on_body → Buffer::Copy), once per chunk of the chunked encoding; for a 60 MiB
 * delta that copy, its fresh pages and the IncomingMessage stream around it were the largest single
 * entry of the worker's main thread while it ingests (docs/design-notes.md "Ingest", session 6).
 * Here the body costs a scan of the chunk-size lines and one Buffer view per piece.
 *
 * What it does: sends `GET path` with `Connection: close` (a delta stream is long-lived: no reuse),
 * reads the status line and headers (≤ MAX_HEAD_BYTES), then the body framed by chunked encoding,
 * Content-Length, or the connection's end. `body` is a Readable (backpressure pauses the socket);
 * it errors when the connection ends before the framing says the body is complete, or when no byte
 * arrives for `idleTimeoutMs` (body errors are SL_ERR_PROXY_UNREACHABLE, or `onIdle()`'s; errors before
 * the head are plain, for the caller to map). 1xx answers are skipped. No TLS (https goes through node:https), no
 * redirects, no compression: the proxy sends none of them.
 *
 * Not here: which requests use it, error bodies and replicas (proxy-client.ts).
 */
import { connect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { StarlightError } from '../../errors.js';

export interface StreamResponse {
  status: number;
  /** Header names lower-cased; a repeated header keeps its last value. */
  headers: Record<string, string>;
  body: Readable;
}

export interface StreamRequestOptions {
  /** Extra request headers (authorization…). */
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Longest wait for the status line and headers, ms. */
  headersTimeoutMs: number;
  /** A body that delivers no byte for this long fails with `onIdle()`'s error, ms (0: never). */
  idleTimeoutMs: number;
  /** The error a stalled body fails with. */
  onIdle: () => Error;
  /**
   * A connected, unused socket to `url`'s host to send the request on (warm-connection.ts), instead
   * of dialling one; the request owns it from here.
   */
  socket?: Socket;
}

/** Largest status line + headers accepted. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Longest chunk-size line (size, extensions) or trailer line accepted. */
const MAX_LINE_BYTES = 4096;
const CR = 13;
const LF = 10;

const CLOSED_BEFORE_RESPONSE = Symbol('closedBeforeResponse');

/**
 * Whether streamGet failed because the connection ended or broke before any byte of an answer came
 * (not a timeout, not an abort): on a connection opened ahead (warm-connection.ts), the proxy may have
 * closed it just as the request left, and the request can be sent again on a new one.
 */
export function isClosedBeforeResponse(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[CLOSED_BEFORE_RESPONSE] === true;
}

/** An error of the transport (the caller maps it to its typed error). */
function httpError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ERR_HTTP_STREAM' });
}

/** The body's framing state. */
type Phase = 'size' | 'data' | 'data-end' | 'trailer' | 'length' | 'until-close' | 'done';

/**
 * Chunked / length-delimited body parser: pieces of body bytes out (views of the input), framing
 * removed. Throws on malformed framing.
 */
class BodyFramer {
  private phase: Phase;
  /** Body bytes left: of the current chunk ('data'), or of the whole body ('length'). */
  private left = 0;
  /** Bytes of the line being read ('size', 'trailer', 'data-end'). */
  private line = '';

  constructor(headers: Record<string, string>) {
    const te = headers['transfer-encoding'];
    if (te !== undefined && /(^|,)\s*chunked\s*$/i.test(te)) this.phase = 'size';
    else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (!/^\d+$/.test(headers['content-length'].trim()) || !Number.isSafeInteger(n)) throw httpError(`bad content-length '${headers['content-length']}'`);
      this.left = n;
      this.phase = n === 0 ? 'done' : 'length';
    } else this.phase = 'until-close';
  }

  get done(): boolean {
    return this.phase === 'done';
  }

  /** Whether the connection's end is the body's end. */
  get endsAtClose(): boolean {
    return this.phase === 'until-close';
  }

  /** Feeds socket bytes; calls `out` with each piece of body. Returns how many bytes it consumed. */
  feed(b: Buffer, out: (piece: Buffer) => void): number {
    let i = 0;
    const n = b.length;
    while (i < n) {
      switch (this.phase) {
        case 'until-close':
          out(i === 0 ? b : b.subarray(i));
          return n;
        case 'length':
        case 'data': {
          const k = Math.min(this.left, n - i);
          out(i === 0 && k === n ? b : b.subarray(i, i + k));
          i += k;
          this.left -= k;
          if (this.left === 0) this.phase = this.phase === 'length' ? 'done' : 'data-end';
          break;
        }
        case 'size':
        case 'data-end':
        case 'trailer': {
          const lf = b.indexOf(LF, i);
          const end = lf < 0 ? n : lf;
          this.line += b.toString('latin1', i, end);
          if (this.line.length > MAX_LINE_BYTES) throw httpError('chunked body: line too long');
          if (lf < 0) return n;
          i = lf + 1;
          const line = this.line.charCodeAt(this.line.length - 1) === CR ? this.line.slice(0, -1) : this.line;
          this.line = '';
          this.endOfLine(line);
          break;
        }
        case 'done':
          return i;
      }
    }
    return n;
  }

  private endOfLine(line: string): void {
    if (this.phase === 'data-end') {
      if (line !== '') throw httpError('chunked body: chunk data not followed by CRLF');
      this.phase = 'size';
      return;
    }
    if (this.phase === 'trailer') {
      if (line === '') this.phase = 'done';
      return;
    }
    const m = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(line);
    if (m === null) throw httpError(`chunked body: bad chunk size line '${line.slice(0, 40)}'`);
    this.left = parseInt(m[1]!, 16);
    this.phase = this.left === 0 ? 'trailer' : 'data';
  }
}

/** The response head: status, headers, and where the body starts in `buf`. */
function parseHead(buf: Buffer, end: number): { status: number; headers: Record<string, string> } {
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]!);
  if (m === null) throw httpError(`bad status line '${lines[0]!.slice(0, 60)}'`);
  const headers: Record<string, string> = {};
  for (let k = 1; k < lines.length; k++) {
    const l = lines[k]!;
    const c = l.indexOf(':');
    if (c <= 0) throw httpError(`bad header line '${l.slice(0, 60)}'`);
    headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: Number(m[1]), headers };
}

/** The body of a response: fed by the socket's 'data' handler, paused by backpressure. */
class BodyStream extends Readable {
  constructor(private readonly socket: Socket) {
    super({ highWaterMark: 1024 * 1024 });
  }

  override _read(): void {
    if (this.socket.isPaused()) this.socket.resume();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

/**
 * Sends `GET url` and resolves once the response head arrived (any status; the caller reads an
 * error body from `body`). Rejects with the transport's error (connection refused or reset, bad
 * head, headers timeout) or the signal's reason.
 */
export function streamGet(url: URL, opts: StreamRequestOptions): Promise<StreamResponse> {
  return new Promise<StreamResponse>((resolve, reject) => {
    const { signal } = opts;
    if (signal?.aborted) {
      opts.socket?.destroy();
      return reject(signal.reason ?? httpError('aborted'));
    }
    const socket = opts.socket ?? connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) });
    socket.setNoDelay(true);
    let head: Buffer[] = [];
    let headBytes = 0;
    let body: BodyStream | undefined;
    let framer: BodyFramer | undefined;
    let settled = false;
    /** The body's end was pushed. */
    let ended = false;
    const fail = (err: Error): void => {
      clearTimeout(timer);
      if (!settled) {
        settled = true;
        body = undefined; // never handed out: nobody would hear its error
        socket.destroy();
        reject(err);
      } else if (body !== undefined && !ended) {
        // Mid-body: the receiver reconnects and resumes on SL_ERR_PROXY_UNREACHABLE (a stall's error is already typed).
        body.destroy(
          err instanceof StarlightError
            ? err
            : new StarlightError('SL_ERR_PROXY_UNREACHABLE', `proxy ${url.host}: response body of ${url.pathname} failed: ${err.message}`, {
                cause: err,
                details: { proxy: url.host },
              }),
        );
      }
      else socket.destroy();
    };
    const timer = setTimeout(() => fail(httpError(`no response in ${opts.headersTimeoutMs} ms`)), opts.headersTimeoutMs);
    const onAbort = (): void => fail(httpError('aborted'));
    signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };

    const push = (piece: Buffer): void => {
      if (!body!.push(piece)) socket.pause();
    };
    const onBody = (b: Buffer): void => {
      framer!.feed(b, push);
      // Bytes after the body on a Connection: close response are not ours to read: dropped.
      if (framer!.done) finish();
    };
    const finish = (): void => {
      if (ended || body!.destroyed) return;
      ended = true;
      cleanup();
      socket.setTimeout(0);
      socket.removeListener('data', onSocketData);
      body!.push(null);
      // The whole body is read (maybe buffered in `body`): the socket is done, also if it is paused.
      socket.destroy();
    };
    const onHead = (b: Buffer): void => {
      head.push(b);
      headBytes += b.length;
      const all = head.length === 1 ? b : Buffer.concat(head, headBytes);
      head = [all];
      const end = all.indexOf('\r\n\r\n', Math.max(0, headBytes - b.length - 3), 'latin1');
      if (end < 0) {
        if (headBytes > MAX_HEAD_BYTES) throw httpError(`response head larger than ${MAX_HEAD_BYTES} bytes`);
        return;
      }
      const { status, headers } = parseHead(all, end);
      const rest = all.subarray(end + 4);
      head = [];
      headBytes = 0;
      if (status >= 100 && status < 200) {
        if (rest.length > 0) onHead(rest); // an interim answer: the real head follows
        return;
      }
      framer = new BodyFramer(headers);
      body = new BodyStream(socket);
      // The bytes that came with the head, before resolving: bad framing there rejects the request
      // (an error emitted by a body nobody listens to yet would be an uncaught exception).
      if (framer.done) finish();
      else if (rest.length > 0) onBody(rest);
      clearTimeout(timer);
      settled = true;
      if (opts.idleTimeoutMs > 0 && !ended) {
        socket.setTimeout(opts.idleTimeoutMs, () => body!.destroy(opts.onIdle()));
      }
      resolve({ status, headers, body });
    };
    const onData = (b: Buffer): void => {
      try {
        if (framer === undefined) onHead(b);
        else onBody(b);
      } catch (err) {
        fail(err as Error);
      }
    };
    /** A byte of the answer came (a failure before that, on a taken spare, is worth a retry). */
    let answered = false;
    /** The connection ended or failed before any byte of an answer: marked for isClosedBeforeResponse. */
    const closedEarly = (err: Error): Error => (answered ? err : Object.assign(err, { [CLOSED_BEFORE_RESPONSE]: true }));
    const onSocketData = (b: Buffer): void => {
      answered = true;
      onData(b);
    };
    socket.on('data', onSocketData);
    socket.once('end', () => {
      if (!settled) fail(closedEarly(httpError('the connection closed before a response')));
      else if (framer?.endsAtClose === true) finish();
      else if (!ended) fail(httpError('the connection closed before the response ended'));
    });
    socket.once('error', (err) => fail(closedEarly(err)));
    socket.once('close', () => {
      cleanup();
      if (!settled) fail(closedEarly(httpError('the connection closed before a response')));
      else if (framer?.endsAtClose === true) finish();
      else if (!ended) fail(httpError('the connection closed before the response ended'));
    });
    const headers = Object.entries(opts.headers ?? {})
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    socket.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n${headers}\r\n`, 'latin1');
  });
}
