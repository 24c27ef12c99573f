/**
 * The seam between the snapshotter and the filesystem (like stargz's FileSystem{Mount,Check,Unmount}).
 * The snapshotter never sees frames, FUSE or the addon; the fs never sees containerd.
 */
import type { MergedTree } from '../../layers/toc.js';
import type { Histogram } from '../../prometheus.js';
import type { InodeTable } from './inodes.js';

/**
 * Where file contents come from. Implemented by the worker's stream receiver over the CAS; the view
 * asks it for bytes and serves them, it never fetches by itself.
 */
export interface ContentProvider {
  /**
   * Path of a complete, digest-verified file holding `digest`'s content, or null if not (yet) present.
   * Cheap (no I/O beyond a map lookup); called when a view is built and on every open.
   */
  locate(digest: string): string | null;
  /**
   * Resolves with the path of a file from which bytes [offset, offset+length) of `digest` can be
   * pread (the complete, digest-verified CAS file: never bytes not yet verified) once it is there. Asks for the content out of order if it is far down the stream. Rejects with a
   * StarlightError: 'data-loss' (digest mismatch), 'unavailable' (deadline passed, source gone),
   * 'canceled' (signal). Never resolves with a path whose bytes in that range are not final.
   */
  waitFor(digest: string, offset: number, length: number, signal?: AbortSignal): Promise<string>;
}

export interface ViewRequest {
  /** The flattened chain to show. */
  tree: MergedTree;
  content: ContentProvider;
  /**
   * The tree's inode table, built ahead of the mount (a pull builds it while containerd is asked,
   * issue 19); mount() builds one when absent. Content absent when it was built is served through
   * `content.waitFor` (and promoted), so an early table is correct, only less often passed through.
   */
  table?: InodeTable;
  /** Called once per inode on its first lookup/open/read (startup traces); optional and cheap. */
  onFirstAccess?: (path: string, sinceMountMs: number) => void;
  /** Called once when the mount answers, with where its time went (ms: inode table, FUSE mount, probe). */
  onMounted?: (phases: Record<string, number>) => void;
}

export interface ViewManager {
  /**
   * Mounts `req.tree` read-only at `mountpoint` (an existing empty directory). Resolves when the mount
   * answers. Fails with 'already-exists' if something is mounted there by this manager.
   */
  mount(mountpoint: string, req: ViewRequest, signal?: AbortSignal): Promise<void>;
  /** Resolves if the mount at `mountpoint` is alive; rejects 'unavailable' if gone or broken. */
  check(mountpoint: string): Promise<void>;
  /**
   * Optional (issue 12): what still uses each view at `mountpoints` through the kernel — binds of it
   * and overlays with it as a lower layer, in any mount namespace (a container's rootfs) — one line
   * each for logs, in the order asked; [] when nothing does or nothing is mounted there by this
   * manager. When that cannot be told, one line saying why (never [] then). One call reads every
   * namespace's mount table once, whatever the number of views.
   */
  users?(mountpoints: readonly string[]): Promise<string[][]>;
  /** Unmounts (lazily if busy); parked reads fail with EIO. Idempotent. */
  unmount(mountpoint: string): Promise<void>;
  /** Unmounts everything this manager mounted. Idempotent. */
  close(): Promise<void>;
  /** Optional: counters for the daemon's metrics (issue 16); monotonic over the manager's life. */
  counters?(): ViewCounters;
}

export interface ViewCounters {
  /** Mounted views now. */
  mounted: number;
  /** Native FUSE counters summed over every view, unmounted ones included (field → total). */
  native: Record<string, number>;
  /** Reads parked for absent content: how long each waited, seconds. */
  blockedReadSeconds: Histogram;
  /** Parked reads answered with an error, by cause (StarlightError code, e.g. SL_ERR_CONTENT_DEADLINE). */
  blockedReadFailures: Map<string, number>;
}
