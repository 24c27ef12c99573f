/**
 * The one mapping from registry HTTP outcomes to StarlightErrors: status codes (with the OCI error
 * body `{errors:[{code,message,detail}]}` folded into the message) and transport failures.
 *
 * Every message names the registry, the subject (image, blob, repository) and the status, so a user
 * can act without a debugger. Not here: deciding whether to retry (http.ts).
 */
import { StarlightError } from '../errors.js';

/** What a request was about, for messages and `details`. */
export interface ErrorContext {
  /** Registry host as in the reference, e.g. '127.0.0.1:5000'. */
  registry: string;
  /** Human subject, e.g. 'image 127.0.0.1:5000/x:1' or 'blob sha256:… of image …'. */
  subject: string;
  /** Extra structured fields (image, digest, repository). */
  details?: Record<string, unknown>;
}

/** Longest OCI error summary kept in a message, characters. */
const MAX_SUMMARY = 300;

interface OciErrorBody {
  errors?: { code?: string; message?: string; detail?: unknown }[];
}

/** 'manifest unknown; …' from an OCI error body, else '' (non-JSON bodies are not echoed). */
function summarizeErrorBody(body: Buffer | undefined): string {
  if (!body || body.length === 0) return '';
  let doc: OciErrorBody;
  try {
    doc = JSON.parse(body.toString('utf8')) as OciErrorBody;
  } catch {
    return '';
  }
  if (!Array.isArray(doc?.errors)) return '';
  const parts = doc.errors.map((e) => {
    const text = e.message || (e.code ?? '').toLowerCase().replace(/_/g, ' ');
    return text || 'unknown error';
  });
  const s = parts.join('; ');
  return s.length > MAX_SUMMARY ? `${s.slice(0, MAX_SUMMARY)}…` : s;
}

/** Maps a non-success status to the error the caller throws. */
export function statusError(status: number, method: string, ctx: ErrorContext, body?: Buffer): StarlightError {
  const summary = summarizeErrorBody(body);
  const details = { ...ctx.details, registry: ctx.registry, status, method };
  const why = summary ? ` (${summary})` : '';
  switch (status) {
    case 404:
      return new StarlightError('SL_ERR_OCI_NOT_FOUND', `${ctx.subject} not found${summary ? why : ' (HTTP 404)'}`, { details });
    case 401:
      return new StarlightError(
        'SL_ERR_OCI_UNAUTHORIZED',
        `registry ${ctx.registry} refused ${ctx.subject}: HTTP 401 unauthorized${why}; log in or pass credentials`,
        { details },
      );
    case 403:
      return new StarlightError('SL_ERR_OCI_DENIED', `registry ${ctx.registry} denied access to ${ctx.subject}: HTTP 403${why}`, {
        details,
      });
    default:
      return new StarlightError('SL_ERR_OCI_REGISTRY', `registry ${ctx.registry} answered HTTP ${status} to ${method} ${ctx.subject}${why}`, {
        details,
      });
  }
}

/** A connection-level failure (refused, reset, DNS, TLS, timeout) → SL_ERR_OCI_UNREACHABLE. */
export function unreachableError(ctx: ErrorContext, cause: unknown, timeoutMs?: number): StarlightError {
  let reason: string;
  if (timeoutMs !== undefined) {
    reason = `no answer within ${timeoutMs} ms`;
  } else {
    const root = rootCause(cause) as NodeJS.ErrnoException;
    reason = root.message === 'bad port' ? 'port refused by fetch (WHATWG bad-port list); serve the registry on another port' : root.syscall && root.code ? `${root.syscall} ${root.code}` : root.code ?? root.message ?? String(cause);
  }
  return new StarlightError('SL_ERR_OCI_UNREACHABLE', `registry ${ctx.registry} unreachable: ${reason} (while fetching ${ctx.subject})`, {
    cause,
    details: { ...ctx.details, registry: ctx.registry },
  });
}

/** The innermost `cause` of an error chain (fetch wraps socket errors in TypeError('fetch failed')). */
export function rootCause(err: unknown): Error {
  let e: unknown = err;
  for (let i = 0; i < 8 && e instanceof Error && e.cause instanceof Error; i++) e = e.cause;
  return e instanceof Error ? e : new Error(String(e));
}
