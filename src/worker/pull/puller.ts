/**
 * A lazy pull: one delta request announcing the layers this worker has, the header's TOCs stored,
 * the chain merged into the tree a view shows, and the stream left running in the background.
 * Shared by `starlight mount` and the snapshotter daemon.
 *
 * Not here: mounting (fs/), containerd records (snapshotter/ and the daemon).
 */
import { StarlightError } from '../../errors.js';
import { mergeLayers, mergeLayersSliced, mergeOntoSliced } from '../../layers/merge.js';
import { decodeToc } from '../../layers/toc-codec.js';
import { yieldToLoop } from '../../event-loop.js';
import type { LayerToc, MergedTree } from '../../layers/toc.js';
import { nullLogger, type Logger } from '../../log.js';
import type { DeltaHeader, DeltaImage } from '../../protocol/types.js';
import type { LayerStore } from './layer-store.js';
import { checkHeaderImage, checkHeaderItems } from './header-check.js';
import { PhaseTimer, type Phases } from '../phases.js';
import type { ContentTracker } from '../stream/content-tracker.js';
import type { ProxyClient } from '../stream/proxy-client.js';
import { DeltaReceiver } from '../stream/receiver.js';

export interface PulledImage {
  header: DeltaHeader;
  tocs: LayerToc[];
  tree: MergedTree;
  /** The running stream; `done` settles when every item is present. */
  receiver: DeltaReceiver;
  /**
   * The header's TOCs on disk: written while the caller goes on (issue 19); await it before
   * recording anything that needs them after a restart. Its failure is also logged here.
   */
  stored: Promise<void>;
  /**
   * Settles after the stream completed and its content and TOCs were made durable and its layers
   * marked complete; rejects if the stream failed (`receiver.done`'s error) or the flush did (logged
   * here). Await it before recording anything that claims the image's content is there.
   */
  durable: Promise<void>;
  /** have (layers announced), header (request → header in, incl. decode), tocs (stored), merge or merge-onto; ms. */
  phases: Phases;
}

/** A header checked against its image: the chain's TOCs, and the header's TOCs being written. */
interface Accepted {
  tocs: LayerToc[];
  stored: Promise<void>;
}

export interface PullOptions {
  /** Keep trying until the header comes (an image the worker already shows, after a restart). */
  resume?: boolean;
  signal?: AbortSignal;
  /**
   * Called once, as soon as the image's manifest, config and diffIDs are checked against the image
   * asked for (checkHeaderImage): from the IMAGE frame while the proxy indexes or plans (docs/protocol.md
   * "Image first"), else from the header, before its TOCs are checked and the chain merged. The
   * caller may start recording the image (containerd's blobs and snapshots, issue 19) while that
   * runs. Must not throw. The pull may still fail after it (an indexing error, a bad TOC, a bad
   * item): the caller undoes what it started then.
   */
  onImageChecked?: (image: DeltaImage) => void;
  /**
   * The stream's completion is made durable (the syncfs before the layers are marked complete) only
   * after this settles: the caller's own writes for the pull (its image record) go first, so that
   * flush covers them and they do not share the disk with it.
   */
  durableAfter?: Promise<unknown>;
}

export interface PullerOptions {
  client: ProxyClient;
  tracker: ContentTracker;
  layers: LayerStore;
  log?: Logger;
  /** See DEFAULT_LOWER_TREES_DELAY_MS; ms; < 0: lower trees are not kept. */
  lowerTreesDelayMs?: number;
}

/** Merged trees kept (weakly) for later merges of longer chains; oldest dropped past this. */
const MERGED_TREES_KEPT = 32;
/** Trees of lower parts of pulled chains kept (strongly, keepLowerTrees); oldest dropped past this. */
const LOWER_TREES_KEPT = 8;
/** Longest slice of those background merges, ms: they must not hold a starting container's parked reads. */
const LOWER_TREES_SLICE_MS = 5;
/** Longest slice of a pull's merge onto a kept tree, ms: containerd's calls into our snapshotter wait for it. */
const ONTO_SLICE_MS = 5;
/**
 * How long after an image's pull its lower trees are merged, ms: after the first container's start
 * (the merge holds the event loop for tens of ms), before a typical update. Not tied to the stream's
 * end: a large image streams for longer than the time to its update in the bench (issue 19).
 */
export const DEFAULT_LOWER_TREES_DELAY_MS = 3_000;

export class Puller {
  private readonly log: Logger;
  /**
   * Trees this puller merged, by chain (diffIDs): an update's chain (v1's layers + new ones) is
   * merged onto v1's tree instead of from every TOC (issue 19). Weak: the images keep their trees.
   */
  private readonly merged = new Map<string, WeakRef<MergedTree>>();
  /**
   * Trees of the lower parts of chains pulled here (first 1..n−1 layers), by chain: an update that
   * keeps an image's base layers and replaces the layers above them (python-web and redis v2 =
   * base + new package and app layers) is merged onto its base's tree (issue 19). Strong: no view
   * shows them.
   */
  private readonly lower = new Map<string, MergedTree>();

  constructor(private readonly opts: PullerOptions) {
    this.log = opts.log ?? nullLogger;
  }

  /**
   * Resolves once the header is in and the tree is built; content keeps streaming. A fresh pull fails
   * at once if the proxy cannot be reached; a `resume` (an image the worker already shows, after a
   * restart) keeps trying until the header comes or `signal` aborts.
   */
  async pull(ref: string, platform?: string, opts: PullOptions = {}): Promise<PulledImage> {
    const { client, tracker, layers } = this.opts;
    const t = new PhaseTimer();
    const have = await layers.completeLayers();
    t.lap('have');
    // Checked once, before any item of the header is taken in (the receiver awaits it): a header
    // that does not match the image stores nothing, and large files' chunk digests are known before
    // their first bytes arrive (content-tracker.ts).
    let accepted: Promise<Accepted> | undefined;
    // The manifest digest of an image checked from the IMAGE frame: the header must name the same one.
    let announced: string | undefined;
    const accept = (h: DeltaHeader): Promise<Accepted> => (accepted ??= this.accept(h, ref, announced, opts.onImageChecked));
    const receiver = new DeltaReceiver({
      client,
      tracker,
      request: { ref, have, platform },
      log: this.log,
      retryBeforeHeader: opts.resume,
      beforeItems: (h) => accept(h).then(() => undefined),
      onImage: (im) => {
        checkHeaderImage(im, ref);
        // Acted on once: a connection retried before the header (a resume) gets the frame again.
        if (announced !== undefined) return;
        announced = im.manifestDigest;
        opts.onImageChecked?.(im);
      },
    });
    const onAbort = (): void => receiver.close();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) receiver.close();
    let header: DeltaHeader;
    let tocs: LayerToc[];
    let stored: Promise<void>;
    try {
      header = await receiver.header;
      t.lap('header');
      ({ tocs, stored } = await accept(header));
    } catch (err) {
      receiver.close();
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (opts.onImageChecked) await yieldToLoop(); // see accept(): containerd's chain moves on
    t.lap('tocs');
    let merged: { tree: MergedTree; onto: boolean };
    try {
      merged = await this.merge(tocs);
    } catch (err) {
      receiver.close(); // a chain that does not merge (SL_ERR_IMAGE_BAD_TAR) streams nothing more
      throw err;
    }
    const { tree, onto } = merged;
    // 'merge-onto': onto an earlier merge of a lower part of the chain (an update of an image).
    t.lap(onto ? 'merge-onto' : 'merge');
    stored.catch((err: unknown) => this.log.error('toc-store-failed', { ref, err }));
    // A layer is marked complete only once its content and its TOC file are durable: the TOCs
    // written first, then the content's sync and the layer store's flush, both started after that
    // (one syncfs when they share a file system, lazy-pull.ts). Started together, the content's
    // syncfs could finish before a TOC file was written, and a power cut leave a marker naming a
    // TOC that is empty (layer-store.ts, docs/design-notes.md "Durable state"). In the background:
    // the pull does not wait for it (issue 19).
    const durable = receiver.done.then(async () => {
      try {
        await stored;
        await opts.durableAfter?.catch(() => undefined);
        await Promise.all([tracker.store.sync(), layers.flush()]);
        await layers.markComplete(header.diffIDs);
      } catch (err) {
        this.log.error('layer-complete-failed', { ref, err });
        throw err;
      }
    });
    durable.catch(() => undefined); // a failed stream is the caller's to report (receiver.done)
    const delay = this.opts.lowerTreesDelayMs ?? DEFAULT_LOWER_TREES_DELAY_MS;
    if (delay >= 0 && tocs.length > 1) setTimeout(() => void this.keepLowerTrees(tocs, ref), delay).unref();
    this.log.info('image-pull-started', { ref, manifest: header.manifestDigest, items: header.items.length, have: have.length });
    return { header, tocs, tree, receiver, stored, durable, phases: t.phases };
  }

  /**
   * The chain's merged tree: onto the longest prefix of the chain merged before (onto, in slices: an
   * update's containerd calls wait for this loop meanwhile, issue 19), or from scratch (at once: a
   * fresh pull's stream would take the loop between slices, session 8).
   */
  private async merge(tocs: LayerToc[]): Promise<{ tree: MergedTree; onto: boolean }> {
    const ids = tocs.map((toc) => toc.diffID);
    let tree: MergedTree | undefined;
    for (let k = ids.length; k > 0 && !tree; k--) {
      const key = ids.slice(0, k).join(' ');
      let base = this.merged.get(key)?.deref();
      if (!base) {
        this.merged.delete(key);
        base = this.lower.get(key);
        if (!base) continue;
      }
      tree = k === ids.length ? base : await mergeOntoSliced(base, tocs.slice(k), ONTO_SLICE_MS);
    }
    const onto = tree !== undefined;
    tree ??= mergeLayers(tocs);
    const key = ids.join(' ');
    this.merged.delete(key); // re-inserted as the newest
    this.merged.set(key, new WeakRef(tree));
    for (const old of this.merged.keys()) {
      if (this.merged.size <= MERGED_TREES_KEPT) break;
      this.merged.delete(old);
    }
    return { tree, onto };
  }

  /**
   * Merges and keeps the trees of the lower parts of `tocs`' chain (its first 1..n−1 layers; each
   * onto the one below it), for later pulls of chains that share them. Background work, run a while
   * after the pull (DEFAULT_LOWER_TREES_DELAY_MS).
   */
  private async keepLowerTrees(tocs: LayerToc[], ref: string): Promise<void> {
    const started = performance.now();
    let below: MergedTree | undefined;
    try {
      for (let k = 1; k < tocs.length; k++) {
        const key = tocs.slice(0, k).map((toc) => toc.diffID).join(' ');
        const tree =
          this.lower.get(key) ??
          this.merged.get(key)?.deref() ??
          (below && (await mergeOntoSliced(below, [tocs[k - 1]!], LOWER_TREES_SLICE_MS))) ??
          (await mergeLayersSliced(tocs.slice(0, k), LOWER_TREES_SLICE_MS));
        this.lower.delete(key); // re-inserted as the newest
        this.lower.set(key, tree);
        below = tree;
      }
    } catch (err) {
      // The whole chain merged, so its lower parts do too; a failure here only costs later merges time.
      this.log.warn('lower-trees-failed', { ref, err });
      return;
    }
    for (const old of this.lower.keys()) {
      if (this.lower.size <= LOWER_TREES_KEPT) break;
      this.lower.delete(old);
    }
    this.log.info('lower-trees-kept', { ref, layers: tocs.length - 1, ms: Math.round(performance.now() - started) });
  }

  /**
   * Checks `header` against the image asked for (and the IMAGE frame's, `announced`), starts storing
   * its TOCs, registers chunk digests; the chain's TOCs.
   */
  private async accept(header: DeltaHeader, ref: string, announced: string | undefined, onImageChecked?: (image: DeltaImage) => void): Promise<Accepted> {
    checkHeaderImage(header, ref);
    // What the caller started (containerd's calls, issue 19; from the IMAGE frame or now) needs this
    // loop at every step (each answer sends the next Prepare; containerd calls back into our
    // snapshotter for each new layer): the synchronous steps below yield a turn between them.
    const turn = onImageChecked ? yieldToLoop : async (): Promise<void> => {};
    if (announced !== undefined) {
      if (header.manifestDigest !== announced) {
        throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `delta of ${ref}: the header names ${header.manifestDigest}, its IMAGE frame ${announced}`, {
          details: { ref, manifestDigest: header.manifestDigest, announced },
        });
      }
    } else if (onImageChecked) {
      onImageChecked(header);
      await turn();
    }
    // Items are checked against the chain before any TOC of this header is stored (and reused).
    const decoded: LayerToc[] = [];
    for (const l of header.layers) {
      decoded.push(decodeToc(l.toc));
      await turn();
    }
    const sent = new Map(header.layers.map((l, i) => [l.diffID, decoded[i]!]));
    checkHeaderItems(header, await this.chainTocs(header, sent), ref);
    await turn();
    // Each TOC is known at once; the files are written while the pull goes on (`stored`).
    const writes: Promise<void>[] = [];
    for (const [i, l] of header.layers.entries()) {
      const w = this.opts.layers.addToc(l.diffID, l.toc, decoded[i]).written;
      w.catch(() => undefined); // reported through `stored` (a later TOC may throw before that exists)
      writes.push(w);
    }
    const stored = Promise.all(writes).then(() => undefined);
    stored.catch(() => undefined); // reported through PulledImage.stored
    const tocs = await this.chainTocs(header);
    const { tracker } = this.opts;
    for (const toc of tocs) {
      for (const e of toc.entries) {
        if (e.type !== 'reg' || e.digest === undefined) continue;
        tracker.expectSize(e.digest, e.size);
        if (e.chunks !== undefined) tracker.addChunkDigests(e.digest, e.chunks);
      }
    }
    return { tocs, stored };
  }

  /** TOCs of the whole chain: from `sent` (decoded, not yet stored), stored from this header, or by an earlier pull. */
  async chainTocs(header: DeltaHeader, sent?: ReadonlyMap<string, LayerToc>): Promise<LayerToc[]> {
    const tocs: LayerToc[] = [];
    for (const d of header.diffIDs) {
      const toc = sent?.get(d) ?? (await this.opts.layers.toc(d));
      if (toc === undefined) {
        throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `delta of ${header.ref} omits the TOC of layer ${d}, which this worker does not have`, {
          details: { ref: header.ref, diffID: d },
        });
      }
      tocs.push(toc);
    }
    return tocs;
  }
}
