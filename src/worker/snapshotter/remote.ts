/**
 * The seam through which the snapshotter learns that a layer can be provided lazily (a "remote
 * snapshot", in stargz's words) and obtains the view to mount for it. Implemented by the worker
 * daemon over the stream receiver and the CAS; the snapshotter never sees frames, TOCs or FUSE.
 *
 * Model: Starlight mounts ONE flattened view per layer chain (docs/design.md "One flattened view per
 * layer chain"), so a remote snapshot's view shows its own layer AND all of its ancestors. The
 * snapshotter therefore puts only the topmost remote snapshot of a chain into an overlay's lowerdir
 * (mounts.ts) and mounts that snapshot's view at its `fs` dir on first use.
 *
 * Not here: mounting (ViewManager, src/worker/fs/view.ts), label parsing (labels.ts).
 */
import type { ViewRequest } from '../fs/view.js';
import type { RemoteHints } from './labels.js';

export interface RemoteLayerRequest {
  /** The Prepare key (opaque, `<ns>/<id>/<key>` when from containerd). */
  key: string;
  /** The parent snapshot name, '' for the bottom layer. */
  parent: string;
  /**
   * The parent's remote id if the parent is itself a remote snapshot, null if the parent is a local
   * (unpacked) snapshot, undefined if there is no parent. A resolver must answer null when it cannot
   * show the whole chain in one view (e.g. a local parent it knows nothing about).
   */
  parentRemoteId: string | null | undefined;
  /** Parsed from the Prepare labels. */
  hints: RemoteHints;
  /** All Prepare labels (already filtered by containerd), for resolvers that need more. */
  labels: Readonly<Record<string, string>>;
}

export interface RemoteLayer {
  /**
   * The resolver's id for the chain ending at this layer (e.g. `<view id>/<layer index>`); stored in
   * the `containerd.io/snapshot/remote` label and passed back to viewRequest(). Non-empty.
   */
  remoteId: string;
  /** Extra labels to put on the committed snapshot; only `containerd.io/snapshot/` keys are kept. */
  labels?: Record<string, string>;
}

export interface RemoteLayerResolver {
  /**
   * Can the layer of this Prepare be provided lazily? Resolves with its remote id, or null to let
   * the caller unpack it normally. Must not block on content: a resolver that has the layer's TOC
   * (or will have it with the stream's header) answers yes. Rejections other than 'canceled' are
   * logged by the snapshotter and treated as null (unpacking normally always works).
   */
  resolve(req: RemoteLayerRequest, signal?: AbortSignal): Promise<RemoteLayer | null>;
  /**
   * What to mount for the chain ending at `remoteId` (its merged tree and content source). Called
   * once per mount (first Mounts after Prepare or after a daemon restart).
   * Rejects 'not-found' if the id is unknown (e.g. state lost), 'unavailable' if it cannot be served.
   * `chainId`: the snapshot's chain ID when its name is one (a committed layer): a resolver may serve
   * the same chain from another image when the one that prepared the snapshot is gone (a snapshot
   * prepared by a pull that then failed, found by the next pull of the same layers as already-exists).
   */
  viewRequest(remoteId: string, opts?: { chainId?: string; signal?: AbortSignal }): Promise<ViewRequest>;
  /**
   * Optional (issue 12). Plain directories, complete and immutable, whose overlay (first on top, as
   * in lowerdir) is exactly the tree of `remoteId`'s view, or undefined. When defined, NEW mounts
   * put them into lowerdir instead of the lazy view (same tree, no FUSE): the image has
   * "graduated". Non-empty. Cheap (no I/O beyond a stat); must not throw.
   */
  materialised?(remoteId: string): readonly string[] | undefined;
  /**
   * Optional. The view of `remoteId` was mounted (viewRequest's request is live from now on).
   * Called once per mount, right after ViewManager.mount resolved. Must not throw.
   */
  viewMounted?(remoteId: string): void;
  /**
   * Optional. The first Mounts() of active snapshot `key` whose lower view is `remoteId` (in this
   * process): the moment a container on that view starts (containerd asks Mounts at task create).
   * Must not throw.
   */
  activeMounted?(remoteId: string, key: string): void;
  /**
   * Optional. Called after a remote snapshot was removed and on Cleanup, with the remote ids that
   * remaining snapshots still carry: the resolver may free what no remaining view needs (content,
   * image records). Rejections are logged by the snapshotter; Remove still succeeds.
   * May resolve with `retryAfterMs`: something unused was kept only for now (e.g. an image within its
   * pull grace period); the snapshotter calls release again after that long with the then-live ids,
   * so an image removed right after its pull is still freed without another Remove.
   */
  release?(liveRemoteIds: ReadonlySet<string>): Promise<void | { retryAfterMs?: number }>;
}
