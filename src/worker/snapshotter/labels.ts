/**
 * Snapshot label names the snapshotter reads or writes, and the one parser that turns a label map
 * into typed remote-layer hints. Nothing else in the snapshotter reads raw label maps.
 *
 * Only labels prefixed `containerd.io/snapshot/` or exactly `containerd.io/snapshot.ref` reach a
 * proxy snapshotter (containerd snapshots/snapshotter.go FilterInheritedLabels), so every label we
 * need at Prepare time uses that prefix.
 */

/** Written by containerd's unpacker on Prepare: the chain ID the caller will commit the layer as. */
export const LABEL_SNAPSHOT_REF = 'containerd.io/snapshot.ref';

/** The prefix containerd forwards to snapshotters. */
export const LABEL_SNAPSHOT_PREFIX = 'containerd.io/snapshot/';

/**
 * Written by us on committed snapshots whose content a RemoteLayerResolver provides lazily; the value
 * is the resolver's remote id. Read back by mounts() (to use the lazy view) and at start (restore).
 */
export const LABEL_REMOTE = 'containerd.io/snapshot/remote';

/** Written by Starlight's puller on Prepare: the view id the worker daemon assigned to the image. */
export const LABEL_STARLIGHT_VIEW = 'containerd.io/snapshot/starlight.view';

/** Written by containerd's CRI plugin (with snapshot_annotations on) on Prepare. */
const LABEL_CRI_IMAGE_REF = 'containerd.io/snapshot/cri.image-ref';
/** CRI: digest of the compressed layer blob being unpacked. */
const LABEL_CRI_LAYER_DIGEST = 'containerd.io/snapshot/cri.layer-digest';
/** CRI: comma-separated digests of this and the following layers of the image (bounded length). */
const LABEL_CRI_IMAGE_LAYERS = 'containerd.io/snapshot/cri.image-layers';
/** CRI: digest of the image manifest. */
const LABEL_CRI_MANIFEST_DIGEST = 'containerd.io/snapshot/cri.manifest-digest';

/** What a Prepare's labels say about a layer that might be provided lazily. */
export interface RemoteHints {
  /** The chain ID the layer will be committed as (LABEL_SNAPSHOT_REF). */
  chainId: string;
  /** Starlight puller's view id, if the pull went through our daemon. */
  view?: string;
  /** CRI hints, if the pull came from the kubelet through CRI. */
  imageRef?: string;
  layerDigest?: string;
  manifestDigest?: string;
  /** This layer and the ones above it, bottom-up, as listed by CRI. */
  imageLayers?: string[];
}

/**
 * Remote hints of a Prepare, or null when the call cannot be for a lazily provided layer: no
 * snapshot.ref target, or neither our view label nor a CRI layer digest.
 */
export function parseRemoteHints(labels: Record<string, string>): RemoteHints | null {
  const chainId = labels[LABEL_SNAPSHOT_REF];
  if (!chainId) return null;
  const view = labels[LABEL_STARLIGHT_VIEW] || undefined;
  const layerDigest = labels[LABEL_CRI_LAYER_DIGEST] || undefined;
  if (view === undefined && layerDigest === undefined) return null;
  const hints: RemoteHints = { chainId };
  if (view !== undefined) hints.view = view;
  if (layerDigest !== undefined) hints.layerDigest = layerDigest;
  const imageRef = labels[LABEL_CRI_IMAGE_REF];
  if (imageRef) hints.imageRef = imageRef;
  const manifest = labels[LABEL_CRI_MANIFEST_DIGEST];
  if (manifest) hints.manifestDigest = manifest;
  const layers = labels[LABEL_CRI_IMAGE_LAYERS];
  if (layers) hints.imageLayers = layers.split(',').filter((s) => s.length > 0);
  return hints;
}

/** The remote id of a committed snapshot provided lazily, or null for a local one. */
export function remoteIdOf(labels: Record<string, string>): string | null {
  const v = labels[LABEL_REMOTE];
  return v ? v : null;
}
