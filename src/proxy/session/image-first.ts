/**
 * The IMAGE frame of a delta (docs/protocol.md "Image first"): when the request asked `image=1`, the
 * resolved manifest, config and chain go out as soon as the registry answered for them — on first
 * contact before the layer passes end, on a warm proxy before the delta is planned. The worker checks
 * them and records the image in containerd (blobs, snapshot Prepares) meanwhile, instead of after the
 * header (docs/design-notes.md issue 10, session 10; issue 19, session 11).
 *
 * Contract: `resolving` undefined (not asked) → resolves false, nothing written. Else the frame is
 * written from whichever of `resolving` and `indexed` gives the image's record first, and it resolves
 * true (the response has started: a later failure must go out as an ERROR frame); rejects with
 * `indexed`'s error when indexing fails before the image resolved (nothing written: an HTTP error
 * can still be sent).
 *
 * Not here: indexing (indexer-service.ts), the header (session.ts).
 */
import { yieldToLoop } from '../../event-loop.js';
import type { DeltaEncoder } from '../../protocol/index.js';
import type { ImageRecord } from '../store.js';
import { imageOfRecord } from './delta-plan.js';

export async function sendImageFirst(
  resolving: Promise<ImageRecord> | undefined,
  indexed: Promise<{ record: ImageRecord }>,
  enc: DeltaEncoder,
  image: { ref: string; platform: string },
  writeHead: (manifestDigest: string) => void,
): Promise<boolean> {
  if (resolving === undefined) return false;
  const rec = await Promise.race([resolving, indexed.then((img) => img.record)]);
  writeHead(rec.manifestDigest);
  await enc.writeImage(imageOfRecord(rec, image.ref, image.platform));
  // node:http corks the socket for the first write until process.nextTick, and ticks run only once
  // the promise chain that follows (a warm image's planning, tens of ms) lets go: yield a turn so
  // the frame leaves now (in-process: 1-3 ms before the header without this, issue 19 session 11).
  await yieldToLoop();
  return true;
}
