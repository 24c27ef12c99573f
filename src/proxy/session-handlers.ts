/**
 * HTTP handler of `POST /v1/sessions/<id>/next` (docs/protocol.md "Sessions"): body
 * `{"items":[index, …]}` (0..MAX_SESSION_BUMP_ITEMS indices into the session's header item table) →
 * 204, and the session sends those items next. 404 unknown or finished session, 400 bad body or an
 * index out of range.
 *
 * Not here: routing and auth (server.ts), queue rules (session/send-queue.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { StarlightError } from '../errors.js';
import { MAX_SESSION_BODY_BYTES, MAX_SESSION_BUMP_ITEMS, SESSION_ID_RE } from '../protocol/index.js';
import type { SessionRegistry } from './session/registry.js';
import type { ProxyMetrics } from './metrics.js';
import { readJsonBody } from '../http-body.js';

function bad(message: string, field: string): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `POST /v1/sessions/<id>/next: ${message}`, { details: { field } });
}

export async function handleSessionNext(sessions: SessionRegistry, metrics: ProxyMetrics, req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
  const session = SESSION_ID_RE.test(id) ? sessions.get(id) : undefined;
  if (session === undefined) {
    req.resume();
    throw new StarlightError('SL_ERR_PROXY_SESSION_NOT_FOUND', `delta session ${id.slice(0, 64)} is unknown or finished`, { details: { session: id.slice(0, 64) } });
  }
  const json = await readJsonBody(req, MAX_SESSION_BODY_BYTES, 'POST /v1/sessions/<id>/next');
  const items = (json as { items?: unknown } | null)?.items;
  if (!Array.isArray(items)) throw bad('body must be {"items":[<item index>, …]}', 'items');
  if (items.length > MAX_SESSION_BUMP_ITEMS) throw bad(`lists ${items.length} items, at most ${MAX_SESSION_BUMP_ITEMS}`, 'items');
  const n = session.itemCount;
  items.forEach((i: unknown, k) => {
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= n) throw bad(`items[${k}] must be an item index in 0..${n - 1}`, `items[${k}]`);
  });
  session.bump(items as number[]);
  // An empty list bumps nothing: a worker opening its control connection early (not a queue jump).
  if (items.length > 0) {
    metrics.sessionBumps++;
    metrics.sessionBumpItems += items.length;
  }
  res.writeHead(204).end();
}
