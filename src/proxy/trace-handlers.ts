/**
 * HTTP handlers of startup traces (docs/protocol.md "Traces"): `POST /v1/traces` (read the body up
 * to MAX_TRACE_BODY_BYTES, validate strictly, store) and `GET /v1/traces?ref=|manifest=[&group=]`
 * (the order of an image and why each file is there, for `starlight trace show`).
 *
 * Not here: routing and auth (server.ts), validation rules (src/protocol/traces.ts), merging
 * (priority.ts, priority-service.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { StarlightError } from '../errors.js';
import { mergeLayers } from '../layers/merge.js';
import { isDigest } from '../oci/digest.js';
import { readJsonBody } from '../http-body.js';
import type { ImageConfig } from '../oci/types.js';
import { MAX_TRACE_BODY_BYTES, type LearnedOrder, validateTraceUpload } from '../protocol/traces.js';
import { type HandlerContext, ensurePrediction, groupParam, platformParam, resolveRef } from './handlers.js';

function sendJson(res: ServerResponse, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

/** POST /v1/traces; `uploader` is who sent it (server.ts: token digest or peer address). */
export async function handleTracesPost(ctx: HandlerContext, req: IncomingMessage, res: ServerResponse, uploader?: string): Promise<void> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `POST /v1/traces needs content-type application/json, got ${type || 'none'}`, {
      details: { field: 'content-type' },
    });
  }
  const body = validateTraceUpload(await readJsonBody(req, MAX_TRACE_BODY_BYTES, 'trace upload'));
  const accepted = await ctx.priority.accept(body, Date.now(), uploader);
  ctx.metrics.tracesAccepted += accepted;
  ctx.logger.info('traces-accepted', {
    manifestDigest: body.manifestDigest,
    traces: accepted,
    ...(body.group !== undefined ? { group: body.group } : {}),
  });
  sendJson(res, { accepted });
}

export async function handleTracesGet(ctx: HandlerContext, _req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const group = groupParam(url);
  const manifest = url.searchParams.get('manifest');
  const refParam = url.searchParams.get('ref');
  if ((manifest === null) === (refParam === null)) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'GET /v1/traces needs exactly one of ref= or manifest=', { details: { parameter: 'ref' } });
  }
  let target;
  if (manifest !== null) {
    if (!isDigest(manifest)) {
      throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'query parameter manifest must be sha256:<hex>', { details: { parameter: 'manifest', value: manifest } });
    }
    const rec = ctx.store.manifest(manifest);
    const tocs = rec?.diffIDs.map((d) => ctx.indexer.toc(d));
    if (rec === undefined || tocs === undefined || tocs.some((t) => t === undefined)) {
      throw new StarlightError('SL_ERR_OCI_NOT_FOUND', `image ${manifest} is not indexed by this proxy; ask for it by ref= (or request a delta of it first)`, {
        details: { manifestDigest: manifest },
      });
    }
    target = { manifestDigest: manifest, repository: rec.repository, diffIDs: rec.diffIDs, merged: mergeLayers(tocs.map((t) => t!)) };
    await ctx.priority.prepare({ manifestDigest: manifest, config: JSON.parse(rec.config.toString('utf8')) as ImageConfig, merged: target.merged });
  } else {
    const ref = resolveRef(refParam, ctx.registries, 'ref');
    const ac = new AbortController();
    res.on('close', () => ac.abort());
    const img = await ctx.indexer.image(ref, platformParam(url, ctx.defaultPlatform), ac.signal);
    const rec = img.record;
    target = { manifestDigest: rec.manifestDigest, repository: rec.repository, diffIDs: rec.diffIDs, merged: mergeLayers(img.tocs) };
    await ensurePrediction(ctx, img, target.merged);
  }
  await ctx.priority.refresh();
  const learned = ctx.priority.order(target, group);
  const out: LearnedOrder = {
    manifestDigest: target.manifestDigest,
    ...(group !== undefined ? { group } : {}),
    source: learned.source,
    traces: learned.traces,
    ...(learned.priorTraces > 0 ? { priorTraces: learned.priorTraces } : {}),
    entries: learned.files.map((f) => ({
      path: f.path,
      rank: f.rank + 1,
      size: f.size,
      digest: f.digest,
      signal: f.signal ?? 'trace',
      ...(f.via !== undefined ? { via: f.via } : {}),
    })),
  };
  sendJson(res, out);
}
