/**
 * A lazy pull: one delta request announcing the layers this worker has, the header's TOCs stored,
 * the chain merged into the tree a view shows, and the stream left running in the background.
 * Shared by `starlight mount` and the snapshotter daemon.
 *
 * Not here: mounting (fs/), containerd records (snapshotter/ and the daemon).
 */
import { StarlightError } from '../errors.js';
import { mergeLayers } from '../image/merge.js';
import type { LayerToc, MergedTree } from '../image/toc.js';
import { nullLogger, type Logger } from '../log.js';
import type { DeltaHeader } from '../protocol/types.js';
import type { LayerStore } from './layer-store.js';
import { PhaseTimer, type Phases } from './phases.js';
import type { ContentTracker } from './stream/content-tracker.js';
import type { ProxyClient } from './stream/proxy-client.js';
import { DeltaReceiver } from './stream/receiver.js';

export interface PulledImage {
  header: DeltaHeader;
  tocs: LayerToc[];
  tree: MergedTree;
  /** The running stream; `done` settles when every item is present. */
  receiver: DeltaReceiver;
  /** have (layers announced), header (request → header in, incl. decode), tocs (stored), merge; ms. */
  phases: Phases;
}

export interface PullerOptions {
  client: ProxyClient;
  tracker: ContentTracker;
  layers: LayerStore;
  log?: Logger;
}

export class Puller {
  private readonly log: Logger;

  constructor(private readonly opts: PullerOptions) {
    this.log = opts.log ?? nullLogger;
  }

  /**
   * Resolves once the header is in and the tree is built; content keeps streaming. A fresh pull fails
   * at once if the proxy cannot be reached; a `resume` (an image the worker already shows, after a
   * restart) keeps trying until the header comes or `signal` aborts.
   */
  async pull(ref: string, platform?: string, opts: { resume?: boolean; signal?: AbortSignal } = {}): Promise<PulledImage> {
    const { client, tracker, layers } = this.opts;
    const t = new PhaseTimer();
    const have = await layers.completeLayers();
    t.lap('have');
    const receiver = new DeltaReceiver({ client, tracker, request: { ref, have, platform }, log: this.log, retryBeforeHeader: opts.resume });
    const onAbort = (): void => receiver.close();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) receiver.close();
    let header: DeltaHeader;
    try {
      header = await receiver.header;
    } catch (err) {
      receiver.close();
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    t.lap('header');
    await Promise.all(header.layers.map((l) => layers.putToc(l.diffID, l.toc)));
    const tocs = await this.chainTocs(header);
    t.lap('tocs');
    const tree = mergeLayers(tocs);
    t.lap('merge');
    // A layer is marked complete only once its content is durable (cas/store.ts "Durability").
    receiver.done.then(
      () => tracker.store.sync().then(() => layers.markComplete(header.diffIDs)),
      () => {},
    ).catch((err: unknown) => this.log.error('layer-complete-failed', { ref, err }));
    this.log.info('image-pull-started', { ref, manifest: header.manifestDigest, items: header.items.length, have: have.length });
    return { header, tocs, tree, receiver, phases: t.phases };
  }

  /** TOCs of the whole chain: from this header, or stored by an earlier pull. */
  async chainTocs(header: DeltaHeader): Promise<LayerToc[]> {
    const tocs: LayerToc[] = [];
    for (const d of header.diffIDs) {
      const toc = await this.opts.layers.toc(d);
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
