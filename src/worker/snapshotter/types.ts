/**
 * The containerd snapshotter contract, as TypeScript: Snapshotter, Cleaner and their data types.
 *
 * Vocabulary (exactly containerd's, snapshots/snapshotter.go):
 * - key: the name of an active or view snapshot (a "transaction"); opaque to us. containerd's
 *   metadata layer passes `<namespace>/<id>/<user key>` to a proxy snapshotter, never the user's key.
 * - name: the name of a committed snapshot (the result of `commit(name, key)`); for image layers
 *   containerd uses the layer's chain ID.
 * - parent: the name of a committed snapshot; '' means "no parent" (an empty base).
 * Keys and names share one namespace: a committed name can be used wherever a key is expected.
 *
 * Lifecycle: `prepare(key, parent)` → active snapshot, mounted rw by the caller; `commit(name, key)`
 * turns it into an immutable committed snapshot and the key disappears; `view(key, parent)` → a
 * read-only view of parent that can never be committed; `remove(key)` deletes any snapshot without
 * children. Committed snapshots are only ever parents: they have no mounts of their own.
 *
 * Not here: the implementation (snapshotter.ts), the gRPC wire form (grpc-service.ts).
 */

/**
 * A wall-clock time in nanoseconds since the Unix epoch. containerd keeps Go's time.Time at ns
 * precision end to end; a Date (ms) would make an Updated read as earlier than the call (issue 17).
 */
export type EpochNanos = bigint;

/** containerd's snapshot kinds (the Kind enum of snapshots.proto minus UNKNOWN). */
export type SnapshotKind = 'view' | 'active' | 'committed';

/** Snapshot metadata, as containerd's snapshots.Info. */
export interface Info {
  /** The key (active/view) or name (committed). */
  name: string;
  /** The parent's name, '' if none. */
  parent: string;
  kind: SnapshotKind;
  created: EpochNanos;
  updated: EpochNanos;
  /** Labels as stored; containerd only forwards `containerd.io/snapshot/*` and `containerd.io/snapshot.ref`. */
  labels: Record<string, string>;
}

/** Resources taken by one snapshot's own layer (not its parents). */
export interface Usage {
  /** Bytes on disk (allocated blocks), as containerd's fs.DiskUsage. */
  size: number;
  /** Number of inodes. */
  inodes: number;
}

/** One mount(2) call, as containerd's types.Mount; the caller performs it. */
export interface Mount {
  /** 'bind' or 'overlay'. */
  type: string;
  source: string;
  /** Only set by callers that mount several things; we leave it ''. */
  target?: string;
  /** fstab-style options: `ro`, `rbind`, `lowerdir=…`, `upperdir=…`, `workdir=…`. */
  options: string[];
}

/** Options of prepare/view/commit (containerd's snapshots.Opt, restricted to what crosses the API). */
export interface SnapshotOpts {
  labels?: Record<string, string>;
}

/** Called by walk for each snapshot; a rejection stops the walk and is returned by walk. */
export type WalkFn = (info: Info) => void | Promise<void>;

export interface Snapshotter {
  /**
   * Info of the snapshot named `key` (any kind). Cheap (one metadata read).
   * Errors: not-found.
   */
  stat(key: string): Promise<Info>;

  /**
   * Updates the mutable fields of snapshot `info.name` and returns the result. Only labels are
   * mutable: `fieldpaths` may be 'labels' (replace all) or 'labels.<key>' (set or, with no value in
   * info.labels, delete one label); empty means "replace all labels". `updated` is set to now.
   * Errors: not-found; invalid-argument for any other field path (name, parent, kind, created).
   */
  update(info: Pick<Info, 'name' | 'labels'>, fieldpaths?: string[]): Promise<Info>;

  /**
   * Disk usage of the snapshot's own layer. For active snapshots this walks the upper dir now and
   * may be slow on large layers; committed snapshots return the value recorded at commit; views
   * and remote (lazily provided) snapshots take no space of their own and report 0.
   * Errors: not-found.
   */
  usage(key: string): Promise<Usage>;

  /**
   * The mounts of an active or view snapshot (again), e.g. after a restart of the caller. For
   * snapshots above lazily provided layers, checks every time that the lazy view is alive.
   * Errors: not-found; failed-precondition for a committed snapshot; unavailable if a lazy view
   * below is gone.
   */
  mounts(key: string): Promise<Mount[]>;

  /**
   * Creates an active snapshot `key` on top of committed `parent` ('' = empty) and returns the
   * mounts that give a writable tree of parent's content. The caller mounts them, writes, and later
   * commits or removes the key.
   * Remote layers: with a `containerd.io/snapshot.ref` label (the target chain ID) and a layer the
   * RemoteLayerResolver can provide lazily, no active snapshot is made; instead a committed snapshot
   * named by that label is created and the call fails with already-exists, which containerd reads as
   * "this layer is already unpacked" (it then finds the committed snapshot by Walk).
   * Errors: already-exists (key taken, or remote layer provided); not-found (parent);
   * invalid-argument (parent is not committed, empty key).
   */
  prepare(key: string, parent: string, opts?: SnapshotOpts): Promise<Mount[]>;

  /**
   * Like prepare, but read-only and never committable: a view of `parent`'s content.
   * Errors: as prepare (without the remote-layer case).
   */
  view(key: string, parent: string, opts?: SnapshotOpts): Promise<Mount[]>;

  /**
   * Turns active snapshot `key` into committed snapshot `name` (same content, same parent); `key`
   * stops existing. Labels are replaced by opts.labels, not inherited. Records the disk usage.
   * Errors: not-found (key); already-exists (name); failed-precondition (key is a view or committed).
   */
  commit(name: string, key: string, opts?: SnapshotOpts): Promise<void>;

  /**
   * Removes snapshot `key` of any kind and its directories. The caller must have unmounted it.
   * Errors: not-found; failed-precondition if other snapshots have it as parent.
   */
  remove(key: string): Promise<void>;

  /**
   * Calls fn for every snapshot matching any of `filters` (containerd filter syntax, e.g.
   * `labels."containerd.io/snapshot.ref"==sha256:…,parent==sha256:…`; within one filter commas
   * AND, across filters OR; none = all). Order is unspecified.
   * Errors: invalid-argument for an unparsable filter; whatever fn rejects with.
   */
  walk(fn: WalkFn, filters?: string[]): Promise<void>;

  /**
   * Releases resources: unmounts lazy views this snapshotter mounted, closes the metadata store.
   * Idempotent; every other method fails with failed-precondition afterwards.
   */
  close(): Promise<void>;
}

/** Optional: garbage-collects directories not referenced by metadata (containerd's snapshots.Cleaner). */
export interface Cleaner {
  /** Removes leftover directories (crashed creates, async removes). Idempotent; safe while serving. */
  cleanup(): Promise<void>;
}

/** Type guard used by the gRPC adapter to find the optional Cleaner (like containerd's type assertion). */
export function isCleaner(s: unknown): s is Cleaner {
  return typeof (s as Partial<Cleaner> | null)?.cleanup === 'function';
}
