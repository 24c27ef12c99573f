/**
 * Client of the daemon's API (server.ts) for the CLI: one HTTP request per call on the unix socket;
 * the daemon's error bodies become StarlightErrors with the daemon's code again.
 *
 * Not here: printing (src/cli/).
 */
import http from 'node:http';
import { createConnection } from 'node:net';
import { StarlightError } from '../../errors.js';
import type { PullRequest, PullResult } from '../images/service.js';
import type { ReportResult } from '../trace/spool.js';
import type { DaemonStatus, TraceRequest, TraceStatus } from './server.js';

/** Longest a pull may take to return (header in, containerd records written), ms. */
const PULL_TIMEOUT_MS = 10 * 60_000;
const STATUS_TIMEOUT_MS = 30_000;
/** Longest an upload round of `starlight report` may take, ms. */
const REPORT_TIMEOUT_MS = 5 * 60_000;

export class DaemonClient {
  constructor(readonly socket: string) {}

  private request<T>(method: string, path: string, body: unknown, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      // Own connection, no Agent: the Agent computes a TLS server name with net.isIP, whose first
      // call compiles a regexp for ~20 ms of the CLI's start-up (issue 19).
      const socketPath = this.socket;
      const req = http.request({ createConnection: () => createConnection({ path: socketPath }), method, path, headers: { 'content-type': 'application/json' }, timeout: timeoutMs }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch (cause) {
            return reject(new StarlightError('SL_ERR_DAEMON_UNREACHABLE', `daemon at ${this.socket} answered HTTP ${res.statusCode} with a non-JSON body`, { cause }));
          }
          if (res.statusCode === 200) return resolve(parsed as T);
          // Loaded only for an error answer (a pull's start-up pays for every module, issue 19).
          import('../../http-errors.js').then(({ decodeErrorBody }) => {
            const e = decodeErrorBody(text);
            reject(new StarlightError(e.code ?? 'SL_ERR_INTERNAL', e.message ?? `daemon answered HTTP ${res.statusCode}`, { details: e.detail }));
          }, reject);
        });
      });
      req.on('timeout', () => req.destroy(new StarlightError('SL_ERR_DAEMON_UNREACHABLE', `daemon at ${this.socket} did not answer ${path} within ${timeoutMs} ms`)));
      req.on('error', (err) =>
        reject(err instanceof StarlightError ? err : new StarlightError('SL_ERR_DAEMON_UNREACHABLE', `cannot reach the daemon at ${this.socket}: ${err.message}`, { cause: err, details: { socket: this.socket } })),
      );
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  pull(req: PullRequest): Promise<PullResult> {
    return this.request('POST', '/v1/pull', req, PULL_TIMEOUT_MS);
  }

  status(): Promise<DaemonStatus> {
    return this.request('GET', '/v1/status', undefined, STATUS_TIMEOUT_MS);
  }

  /** `trace on|off` with a request; the current state without. */
  trace(req?: TraceRequest): Promise<TraceStatus> {
    return req === undefined ? this.request('GET', '/v1/trace', undefined, STATUS_TIMEOUT_MS) : this.request('POST', '/v1/trace', req, STATUS_TIMEOUT_MS);
  }

  report(): Promise<ReportResult> {
    return this.request('POST', '/v1/report', {}, REPORT_TIMEOUT_MS);
  }
}
