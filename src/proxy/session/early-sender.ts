/**
 * The early part of a first-contact delta (docs/protocol.md "Early items"): while the image is being
 * indexed, EARLY frames carry whole contents of its EarlyFeed (best rank first, each once), until the
 * image's layer passes end (the feed closes) or the caller stops it (`stop`: the plan is ready, or
 * failed); the header then leaves out what was delivered (withoutDelivered).
 *
 * Not here: choosing or holding the contents (../early-items.ts), the header and items (session.ts).
 */
import type { DeltaEncoder, DeltaHeader } from '../../protocol/index.js';
import type { EarlyFeed } from '../early-items.js';
import type { HeaderFirst } from './header-first.js';

/**
 * Sends `feed`'s contents as EARLY frames until `stop` aborts or the feed is drained, adding each
 * digest sent to `delivered`. `start()` is called before the first frame (the HTTP response head).
 * Never rejects: a consumer gone away ends it (the caller notices on its own writes).
 */
export async function sendEarly(
  feed: EarlyFeed,
  enc: DeltaEncoder,
  delivered: Set<string>,
  stop: AbortSignal,
  start: () => void,
  gate?: HeaderFirst,
): Promise<void> {
  try {
    for (;;) {
      const c = await feed.next(delivered, stop);
      if (c === undefined) return;
      const { encoding, data } = await c.encoded();
      // Other streams' headers first (header-first.ts); and no frame once the plan is ready.
      if (gate?.pending === true) await gate.clear();
      if (stop.aborted) return;
      start();
      await enc.writeEarly(c.digest, encoding, c.size, data);
      delivered.add(c.digest);
    }
  } catch {
    return;
  }
}

/**
 * `header` and `sources` without the items whose digest is in `delivered` (sent early), the deferred
 * list re-indexed; firstItem must be 0 (early items are only sent by a stream from its start).
 */
export function withoutDelivered(header: DeltaHeader, sources: string[], delivered: ReadonlySet<string>): { header: DeltaHeader; sources: string[] } {
  if (delivered.size === 0) return { header, sources };
  const newIndex = new Int32Array(header.items.length).fill(-1);
  const items: DeltaHeader['items'] = [];
  const kept: string[] = [];
  header.items.forEach((it, i) => {
    if (delivered.has(it.digest)) return;
    newIndex[i] = items.length;
    items.push(it);
    kept.push(sources[i]!);
  });
  const out: DeltaHeader = { ...header, items };
  if (header.deferred !== undefined) {
    const deferred = header.deferred.map((i) => newIndex[i]!).filter((i) => i >= 0);
    if (deferred.length > 0) out.deferred = deferred;
    else delete out.deferred;
  }
  return { header: out, sources: kept };
}
