/**
 * Checks a delta header against what the worker asked for before anything of it is stored or shown
 * (issue 14): the manifest bytes hash to the manifest digest, the config bytes hash to the manifest's config descriptor, the config's rootfs.diff_ids
 * are the header's chain and the manifest has one layer per diffID, and every content item the
 * header announces is a regular file of one of the chain's TOCs with that size. A header failing any
 * of these is refused with SL_ERR_IMAGE_MISMATCH naming what differs (a proxy bug or tampering in
 * transit; use TLS to the proxy).
 *
 * What this cannot catch: a reference pinned to an index digest (the header carries the platform
 * manifest, not the index it was chosen from); a TOC changed consistently with the content it names (the worker has no
 * layer tar to check a TOC against). Transport integrity (TLS) covers that; see docs/faults.md.
 *
 * Not here: per-item digests (the content store verifies every item before it is served).
 */
import { createHash } from 'node:crypto';
import { StarlightError } from '../../errors.js';
import type { LayerToc } from '../../layers/toc.js';
import type { DeltaHeader, DeltaImage } from '../../protocol/types.js';

const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

function mismatch(ref: string, what: string, details: Record<string, unknown> = {}): StarlightError {
  return new StarlightError('SL_ERR_IMAGE_MISMATCH', `delta header for ${ref}: ${what}`, { details: { ref, ...details } });
}

function json(bytes: Uint8Array, ref: string, what: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8'));
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through: not JSON
  }
  throw mismatch(ref, `its ${what} is not a JSON object`);
}

/**
 * Checks manifest, config and chain of `h` (a header, or the IMAGE frame before it), received for a
 * request of `requestedRef`. Throws SL_ERR_IMAGE_MISMATCH on the first difference.
 */
export function checkHeaderImage(h: DeltaImage, requestedRef: string): void {
  const ref = requestedRef;
  const md = sha256(h.manifest);
  if (md !== h.manifestDigest) throw mismatch(ref, `manifest bytes hash to ${md}, not to the announced ${h.manifestDigest}`, { manifestDigest: h.manifestDigest, actual: md });
  const manifest = json(h.manifest, ref, 'manifest');
  const cfg = manifest.config as { digest?: unknown } | undefined;
  const cd = sha256(h.config);
  if (typeof cfg?.digest !== 'string' || cfg.digest !== cd) {
    throw mismatch(ref, `config bytes hash to ${cd}, the manifest names ${String(cfg?.digest)}`, { configDigest: cfg?.digest, actual: cd });
  }
  const layers = manifest.layers;
  if (!Array.isArray(layers) || layers.length !== h.diffIDs.length) {
    throw mismatch(ref, `the manifest has ${Array.isArray(layers) ? layers.length : 'no'} layers for ${h.diffIDs.length} diffIDs`);
  }
  const rootfs = json(h.config, ref, 'config').rootfs as { diff_ids?: unknown } | undefined;
  const ids = rootfs?.diff_ids;
  if (!Array.isArray(ids) || ids.length !== h.diffIDs.length || ids.some((d, i) => d !== h.diffIDs[i])) {
    throw mismatch(ref, `the config's rootfs.diff_ids differ from the header's chain`, { diffIDs: h.diffIDs });
  }
}

/**
 * Checks that every content item of `h` is a regular file of `tocs` (the chain, lowest first) with
 * the item's size. Throws SL_ERR_IMAGE_MISMATCH naming the first item that is not.
 */
export function checkHeaderItems(h: DeltaHeader, tocs: readonly LayerToc[], requestedRef: string): void {
  const sizes = new Map<string, number>();
  for (const toc of tocs) for (const e of toc.entries) if (e.type === 'reg' && e.digest !== undefined) sizes.set(e.digest, e.size);
  for (const it of h.items) {
    const size = sizes.get(it.digest);
    if (size === undefined) throw mismatch(requestedRef, `item ${it.digest} is in no TOC of the chain`, { digest: it.digest });
    if (size !== it.size) throw mismatch(requestedRef, `item ${it.digest} announced with ${it.size} bytes, its TOC says ${size}`, { digest: it.digest, size: it.size, tocSize: size });
  }
}
