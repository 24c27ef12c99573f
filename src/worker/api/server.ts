/**
 * The worker daemon's own API: JSON over HTTP on a unix socket (default `<root>/daemon.sock`),
 * used by `starlight pull` and `starlight status`. Routing only; the work is the handlers'.
 *
 *   POST /v1/pull    {ref, namespace?, platform?} → PullResult (once containerd has the image;
 *                    content keeps streaming)
 *   GET  /v1/status  → DaemonStatus
 *   GET  /v1/trace   → TraceStatus;  POST /v1/trace {on, group?} → TraceStatus (`starlight trace on|off`)
 *   POST /v1/report  → ReportResult (uploads recorded startup traces to the proxy)
 *
 * Errors: HTTP status and body `{errors:[{code,message,detail}]}` from the HTTP boundary's one codec
 * (src/http-errors.ts).
 *
 * Not here: what a pull does (images/service.ts), the CLI (src/cli/pull.ts, status.ts).
 */
import http from 'node:http';
import { lstat, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StarlightError } from '../../errors.js';
import { readJsonBody } from '../../http-body.js';
import { sendError } from '../../http-errors.js';
import type { Logger } from '../../log.js';
import type { ImageStatus, PullRequest, PullResult } from '../images/service.js';
import type { PhaseRecord } from '../phases.js';
import type { TraceState } from '../trace/recorder.js';
import { bindSocketPrivately } from '../safe-socket.js';
import type { ReportResult } from '../trace/spool.js';

/** Socket mode: root and the admin group, like the snapshotter socket. */
const SOCKET_MODE = 0o660;
/** Largest request body accepted, bytes. */
const MAX_BODY = 64 * 1024;

export interface DaemonStatus {
  images: ImageStatus[];
  /** Remote ids whose views were built since start. */
  views: string[];
  /** FUSE mounts under the daemon's root (mountpoints). */
  mounts: string[];
  /** The last pulls' and view mounts' phase timings, oldest first (issue 19). */
  timings: PhaseRecord[];
  /**
   * FUSE operations served by every view since start (lookups, getattrs, readdirs, opens, reads…;
   * native counters), absent without views. The bench diffs it around a container start (issue 19).
   */
  fuseOps?: Record<string, number>;
}

/** Tracing state of the daemon (`starlight trace status`). */
export interface TraceStatus extends TraceState {
  /** 'auto': finished traces are uploaded automatically; 'manual': by `starlight report`. */
  upload: 'auto' | 'manual';
  /** Traces on disk waiting for an upload. */
  pending: number;
}

export interface TraceRequest {
  on: boolean;
  group?: string;
}

export interface ApiHandlers {
  pull(req: PullRequest): Promise<PullResult>;
  status(): Promise<DaemonStatus>;
  trace(req: TraceRequest | undefined): Promise<TraceStatus>;
  report(): Promise<ReportResult>;
}

/** Group names: what the proxy accepts as a label (docs/protocol.md "Traces"). */
const GROUP_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface ApiServer {
  readonly socket: string;
  close(): Promise<void>;
}

async function jsonBody<T>(req: http.IncomingMessage, what: string): Promise<Partial<T>> {
  const v = await readJsonBody(req, MAX_BODY, what);
  if (typeof v !== 'object' || v === null) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${what} body is not a JSON object`);
  return v as Partial<T>;
}

async function route(h: ApiHandlers, req: http.IncomingMessage): Promise<unknown> {
  if (req.method === 'GET' && req.url === '/v1/trace') return h.trace(undefined);
  if (req.method === 'POST' && req.url === '/v1/trace') {
    const body = await jsonBody<TraceRequest>(req, 'trace request');
    if (typeof body.on !== 'boolean') throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'trace request needs "on": true or false');
    if (body.group !== undefined && (typeof body.group !== 'string' || !GROUP_RE.test(body.group))) {
      throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `trace group must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit; got ${JSON.stringify(body.group)}`);
    }
    return h.trace({ on: body.on, ...(body.group ? { group: body.group } : {}) });
  }
  if (req.method === 'POST' && req.url === '/v1/report') return h.report();
  if (req.method === 'POST' && req.url === '/v1/pull') {
    const body = await jsonBody<PullRequest>(req, 'pull request');
    if (typeof body.ref !== 'string' || body.ref === '') throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'pull request needs a non-empty "ref"');
    const pr: PullRequest = { ref: body.ref };
    if (typeof body.namespace === 'string' && body.namespace !== '') pr.namespace = body.namespace;
    if (typeof body.platform === 'string' && body.platform !== '') pr.platform = body.platform;
    return h.pull(pr);
  }
  if (req.method === 'GET' && req.url === '/v1/status') return h.status();
  throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `no such API route: ${req.method} ${req.url}`);
}

export async function serveApi(h: ApiHandlers, socket: string, log: Logger): Promise<ApiServer> {
  await mkdir(dirname(socket), { recursive: true, mode: 0o711 });
  const st = await lstat(socket).catch(() => undefined);
  if (st && !st.isSocket()) throw new StarlightError('SL_ERR_CONFIG', `${socket} exists and is not a socket; choose another --api-socket`, { details: { socket } });
  await rm(socket, { force: true });
  const server = http.createServer((req, res) => {
    route(h, req).then(
      (out) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(out));
      },
      (err: unknown) => {
        const e = err instanceof StarlightError ? err : new StarlightError('SL_ERR_INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
        log.warn('api-request-failed', { method: req.method, url: req.url, err: e });
        sendError(res, e, 'starlight-daemon');
      },
    );
  });
  await bindSocketPrivately(socket, SOCKET_MODE, (tmp) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new StarlightError('SL_ERR_CONFIG', `cannot listen on ${socket}: ${err.message}`, { cause: err })));
      server.listen(tmp, resolve);
    }),
  );
  let closing: Promise<void> | undefined;
  return {
    socket,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(() => rm(socket, { force: true }));
      return closing;
    },
  };
}
