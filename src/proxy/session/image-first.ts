/**
 * The IMAGE frame of a first-contact delta (docs/protocol.md "Image first"): when the request asked
 * `image=1` and this proxy is indexing the image for it, the resolved manifest, config and chain go out
 * as soon as the registry answered for them, before the layer passes end. The worker checks them and
 * records the image in containerd (blobs, snapshots) while the proxy indexes, instead of after the
 * header (docs/design-notes.md issue 10, session 10).
 *
 * Contract: resolves true once the frame was written (the response has started: a later failure must
 * go out as an ERROR frame), false when there was nothing to send (no run in flight, or the run ended
 * before the image resolved — its outcome is the caller's `indexed`); rejects with `indexed`'s error
 * when indexing fails before the image resolved (nothing written: an HTTP error can still be sent).
 *
 * Not here: indexing (indexer-service.ts), the header (session.ts).
 */
import type { DeltaEncoder } from '../../protocol/index.js';
import type { ImageRecord } from '../store.js';
import { imageOfRecord } from './delta-plan.js';

export async function sendImageFirst(
  resolving: Promise<ImageRecord> | undefined,
  indexed: Promise<unknown>,
  enc: DeltaEncoder,
  image: { ref: string; platform: string },
  writeHead: (manifestDigest: string) => void,
): Promise<boolean> {
  if (resolving === undefined) return false;
  const rec = await Promise.race([resolving, indexed.then(() => undefined)]);
  if (rec === undefined) return false;
  writeHead(rec.manifestDigest);
  await enc.writeImage(imageOfRecord(rec, image.ref, image.platform));
  return true;
}
