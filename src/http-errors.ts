/**
 * The HTTP boundary's ONE error codec, both directions, for both of Starlight's HTTP APIs (the proxy's
 * and the worker daemon's): StarlightError → status + body `{errors:[{code,message,detail}]}` (the OCI
 * distribution error shape) on the server side, and that body back into the StarlightError on the
 * client side. Servers throw StarlightErrors; only this module translates.
 *
 * Not here: errors after a delta header went out (an ERROR frame, src/protocol/frames.ts), registry
 * answers to us (src/oci/http-errors.ts), gRPC (src/worker/snapshotter/grpc-errors.ts).
 */
import type { ServerResponse } from 'node:http';
import { type Code, type Kind, StarlightError, isCode, kindOf } from './errors.js';

const STATUS_BY_KIND: Record<Kind, number> = {
  'not-found': 404,
  'already-exists': 409,
  'invalid-argument': 400,
  'failed-precondition': 412,
  unavailable: 503,
  'data-loss': 502,
  'resource-exhausted': 503,
  canceled: 499,
  unimplemented: 501,
  unauthenticated: 401,
  'permission-denied': 403,
  internal: 500,
};

/** Codes whose HTTP status is more specific than their kind's (the same table, one level finer). */
const STATUS_BY_CODE: Partial<Record<Code, number>> = {
  /** RFC 9110 §15.6.3 Bad Gateway: the upstream registry failed, not this server. */
  SL_ERR_OCI_UNREACHABLE: 502,
  SL_ERR_OCI_REGISTRY: 502,
  /** RFC 9110 §15.5.14 Content Too Large: workers must not retry the same body. */
  SL_ERR_BODY_TOO_LARGE: 413,
  /** The shared database is down: a transient condition, the same request succeeds once it is back. */
  SL_ERR_PROXY_DB_UNAVAILABLE: 503,
  /** RFC 4918 §11.5 Insufficient Storage. */
  SL_ERR_DISK_FULL: 507,
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

/** Answers `err` (status, JSON body; a 401 names the realm). After headers went out, drops the connection. */
export function sendError(res: ServerResponse, err: unknown, realm = 'starlight'): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const status = statusOf(err);
  const body = JSON.stringify(errorBody(err));
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  // Only a refused token of ours is a challenge to the client; an upstream registry's 401 is not.
  if (status === 401 && !(err instanceof StarlightError && err.code === 'SL_ERR_OCI_UNAUTHORIZED')) headers['www-authenticate'] = `Bearer realm="${realm}"`;
  res.writeHead(status, headers);
  res.end(body);
}

/** What the client side read from an error answer. */
export interface DecodedError {
  /** The sender's code when it is one of ours, else undefined (caller picks a fallback). */
  code: Code | undefined;
  /** The sender's code as sent (kept in details when it is not ours). */
  remoteCode: string | undefined;
  message: string | undefined;
  detail: Record<string, unknown>;
}

/** Reads an error body (as errorBody() writes it). A non-JSON or foreign body decodes to all-undefined. */
export function decodeErrorBody(text: string): DecodedError {
  try {
    const doc = JSON.parse(text) as { errors?: { code?: unknown; message?: unknown; detail?: unknown }[] };
    const e = Array.isArray(doc?.errors) ? doc.errors[0] : undefined;
    const remoteCode = typeof e?.code === 'string' ? e.code : undefined;
    const detail = e?.detail && typeof e.detail === 'object' && !Array.isArray(e.detail) ? (e.detail as Record<string, unknown>) : {};
    return { code: isCode(remoteCode) ? remoteCode : undefined, remoteCode, message: typeof e?.message === 'string' ? e.message : undefined, detail };
  } catch {
    return { code: undefined, remoteCode: undefined, message: undefined, detail: {} };
  }
}
