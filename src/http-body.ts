/**
 * The one way Starlight's HTTP servers (the proxy's and the worker daemon's) read a request body:
 * bounded, refused by its declared length before any byte is read, never buffered past the limit.
 *
 * Not here: what the body means (each handler validates its own).
 */
import type { IncomingMessage } from 'node:http';
import { StarlightError } from './errors.js';

function tooLarge(bytes: number | undefined, limit: number): StarlightError {
  return new StarlightError('SL_ERR_BODY_TOO_LARGE', `request body${bytes !== undefined ? ` of ${bytes} bytes` : ''} exceeds ${limit} bytes`, {
    details: { limit, ...(bytes !== undefined ? { bytes } : {}) },
  });
}

/** Reads the whole request body; SL_ERR_BODY_TOO_LARGE (HTTP 413) past `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge(Number(declared), limit);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const b of req as AsyncIterable<Buffer>) {
    n += b.length;
    if (n > limit) throw tooLarge(undefined, limit);
    parts.push(b);
  }
  return Buffer.concat(parts, n);
}

/** Reads a JSON body (≤ `limit` bytes); SL_ERR_INVALID_ARGUMENT naming `what` if it does not parse. */
export async function readJsonBody(req: IncomingMessage, limit: number, what: string): Promise<unknown> {
  const raw = await readBody(req, limit);
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (cause) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${what}: body is not valid JSON`, { cause, details: { field: 'body' } });
  }
}
