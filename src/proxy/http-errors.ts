/**
 * The proxy's ONE error → HTTP mapping: error kind (or, for a few codes, the code) → status, body `{errors:[{code,message,detail}]}`
 * (the OCI distribution error shape). Handlers throw StarlightErrors; only this table translates.
 *
 * Not here: errors after a delta header went out (those become an ERROR frame, see handlers.ts).
 */
import type { ServerResponse } from 'node:http';
import { type Code, type Kind, StarlightError, kindOf } from '../errors.js';

export const STATUS_BY_KIND: Record<Kind, number> = {
  'not-found': 404,
  'already-exists': 409,
  'invalid-argument': 400,
  'failed-precondition': 412,
  unavailable: 502,
  'data-loss': 502,
  'resource-exhausted': 503,
  canceled: 499,
  unimplemented: 501,
  unauthenticated: 401,
  'permission-denied': 403,
  internal: 500,
};

/** Codes whose HTTP status is more specific than their kind's (the same table, one level finer). */
export const STATUS_BY_CODE: Partial<Record<Code, number>> = {
  /** RFC 9110 §15.5.14 Content Too Large: workers must not retry the same body. */
  SL_ERR_PROXY_BODY_TOO_LARGE: 413,
  /** The shared database is down: a transient condition, the same request succeeds once it is back. */
  SL_ERR_PROXY_DB_UNAVAILABLE: 503,
};

/** HTTP status of an error: its code's, else its kind's. */
export function statusOf(err: unknown): number {
  const byCode = err instanceof StarlightError ? STATUS_BY_CODE[err.code] : undefined;
  return byCode ?? STATUS_BY_KIND[kindOf(err)];
}

export interface ErrorBody {
  errors: { code: string; message: string; detail: Record<string, unknown> }[];
}

export function errorBody(err: unknown): ErrorBody {
  const e = err instanceof StarlightError ? err : undefined;
  return {
    errors: [
      {
        code: e?.code ?? (kindOf(err) === 'canceled' ? 'SL_ERR_CANCELED' : 'SL_ERR_INTERNAL'),
        message: err instanceof Error ? err.message : String(err),
        detail: e?.details ?? {},
      },
    ],
  };
}

export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const status = statusOf(err);
  const body = JSON.stringify(errorBody(err));
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (status === 401) headers['www-authenticate'] = 'Bearer realm="starlight-proxy"';
  res.writeHead(status, headers);
  res.end(body);
}
