/**
 * The only importer of the native FUSE addon (build/Release/starlight_fuse.node, built from native/
 * by node-gyp during `npm install`): loads it once per FuseAddonLoader and wraps it in typed calls.
 *
 * Not here: inode table building (inodes.ts), view policy (fuse-views.ts).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { BUILD_SEARCH_START, findBuildArtifact } from '../../build-artifact.js';
import { StarlightError } from '../../errors.js';
import { DIRENT_RECORD_SIZE, INODE_RECORD_SIZE, XATTR_RECORD_SIZE, type InodeTableBuffers } from './inodes.js';

/** File name of the addon under build/Release; written by node-gyp (binding.gyp target_name). */
const ADDON_FILE = 'starlight_fuse.node';
const ADDON_RELATIVE_PATH = join('build', 'Release', ADDON_FILE);

/** The one error for a missing addon build (loading it, locating the holder beside it). */
function addonNotFound(): StarlightError {
  return new StarlightError('SL_ERR_FS_ADDON', `the FUSE addon ${ADDON_RELATIVE_PATH} was not found above ${BUILD_SEARCH_START}`);
}

/** Event kinds the addon delivers to onEvent (values exported by the addon as EVENT_*). */
export interface EventKinds {
  read: number;
  interrupt: number;
  access: number;
  passthroughOff: number;
  nativeError: number;
}

/**
 * Why the addon failed an operation natively (EVENT_NATIVE_ERROR's cause; values are the addon's
 * CAUSE_* exports, checked at load): names used in logs.
 */
export const NATIVE_ERROR_CAUSES: Readonly<Record<number, string>> = Object.freeze({
  1: 'content-open', // open() of a complete file's content path failed
  2: 'content-read', // pread() of a content file failed or came back short
  3: 'passthrough-open', // the FOPEN_PASSTHROUGH open reply could not be written
  4: 'passthrough-backing', // FUSE_DEV_IOC_BACKING_OPEN refused the inode's content file
  5: 'serve', // a serving thread could not wait on / read the FUSE device
});

export interface NativeMountOptions {
  /** Source shown in /proc/mounts. Default 'starlight'. */
  fsname?: string;
  /** Type suffix: the mount shows as fuse.<subtype>. Default 'starlight'. */
  subtype?: string;
  /** Serving threads (never blocked on data). Default 4, 1..64. */
  threads?: number;
  /** Report the first access per inode (EVENT_ACCESS). Default false. */
  trace?: boolean;
  /** Kernel max_background; default 256 (design.md: the kernel default 12 stalls every read). */
  maxBackground?: number;
  /** attr/entry/negative cache timeouts in seconds; default 3600. */
  timeoutSec?: number;
  /**
   * Kernel FUSE passthrough for complete files (Linux ≥ 6.9, root): their reads never reach the
   * daemon. Default true; falls back to daemon reads (EVENT_PASSTHROUGH_OFF once) when refused.
   */
  passthrough?: boolean;
}

/**
 * onEvent(kind, reqId, ino, offset, size):
 * - read: a read of absent content is parked; answer with provide(reqId, …) exactly once.
 * - interrupt: the kernel interrupted reqId (already answered EINTR natively); abort its wait.
 * - access: first access of `ino`; `offset` is milliseconds since mount.
 * - passthroughOff: kernel passthrough is off for this session (at most once); `size` is the errno
 *   (EOPNOTSUPP: the kernel did not offer it; else why a backing file could not be registered).
 * - nativeError: the addon failed or degraded an operation natively; `reqId` is the cause (a key of
 *   NATIVE_ERROR_CAUSES), `ino` the inode (0: session-wide), `size` the errno (0: short read).
 *   Rate-limited natively: at most once per inode and cause, and a few per second per session.
 */
export type NativeEventHandler = (kind: number, reqId: number, ino: number, offset: number, size: number) => void;

export interface NativeStats {
  lookups: number;
  getattrs: number;
  readdirs: number;
  opens: number;
  reads: number;
  readBytes: number;
  parked: number;
  provided: number;
  /** Operations answered with an error natively (total; split below). */
  failed: number;
  /** Parked reads failed with the errno JS chose (provide(reqId, null, errno)). */
  failedProvider: number;
  /** Parked reads failed with EIO by unmount. */
  failedUnmount: number;
  /** Native failures by cause (every occurrence, reported or not; see NATIVE_ERROR_CAUSES). */
  failedContentOpen: number;
  failedContentRead: number;
  failedPassthroughOpen: number;
  failedBackingOpen: number;
  failedServe: number;
  /** Native failures not reported as events (rate limit). */
  nativeErrorsDropped: number;
  interrupts: number;
  /** Opens answered with FOPEN_PASSTHROUGH (their reads bypass the daemon). */
  passthroughOpens: number;
  /** 1 once the kernel accepted FUSE_PASSTHROUGH at INIT, else 0. */
  passthrough: number;
  /** errno of why passthrough is off (0: not off, or not known yet). */
  passthroughOff: number;
  parkedNow: number;
  inodes: number;
  /** 1: FUSE_NOTIFY_RESEND accepted when this session adopted a held connection; 0: not adopted; < 0: -errno. */
  resend: number;
  /** Takeovers of this connection so far (0: mounted by this session). */
  epoch: number;
}

/** A reply of the fd holder (native/holder.cc documents the protocol). */
export interface HolderReply {
  text: string;
  /** Received descriptors, owned by the caller (close or hand to adopt). */
  fds: number[];
}

/** The raw addon exports (see native/addon.cc, which lists them). */
export interface FuseAddon {
  mount(mountpoint: string, options: NativeMountOptions, table: InodeTableBuffers, onEvent: NativeEventHandler): number;
  provide(handle: number, reqId: number, path: string | null, errno?: number): boolean;
  markPresent(handle: number, ino: number, path: string): boolean;
  unmount(handle: number): void;
  alive(handle: number): boolean;
  stats(handle: number): NativeStats;
  adopt(devFd: number, stateFd: number, mountpoint: string, options: NativeMountOptions, table: InodeTableBuffers, onEvent: NativeEventHandler): number;
  detach(handle: number): void;
  setHeld(handle: number, held: boolean): void;
  viewFds(handle: number): [number, number];
  holderConnect(path: string): number;
  holderRequest(fd: number, text: string, fds: number[], timeoutMs: number): HolderReply;
  closeFd(fd: number): void;
  EVENT_READ: number;
  EVENT_INTERRUPT: number;
  EVENT_ACCESS: number;
  EVENT_PASSTHROUGH_OFF: number;
  EVENT_NATIVE_ERROR: number;
  CAUSE_CONTENT_OPEN: number;
  CAUSE_CONTENT_READ: number;
  CAUSE_PASSTHROUGH_OPEN: number;
  CAUSE_BACKING_OPEN: number;
  CAUSE_SERVE: number;
  INODE_RECORD_SIZE: number;
  DIRENT_RECORD_SIZE: number;
  XATTR_RECORD_SIZE: number;
}

/** One mounted session. Methods are cheap and synchronous; unmount() is idempotent. */
export class NativeSession {
  private closed = false;
  constructor(
    private readonly addon: FuseAddon,
    readonly handle: number,
  ) {}

  /** Answers a parked read from `path` (pread natively) or with `errno` when path is null. */
  provide(reqId: number, path: string | null, errno = 0): boolean {
    return !this.closed && this.addon.provide(this.handle, reqId, path, errno);
  }
  /** Lets later opens/reads of `ino` be answered natively from the complete file at `path`. */
  markPresent(ino: number, path: string): boolean {
    return !this.closed && this.addon.markPresent(this.handle, ino, path);
  }
  alive(): boolean {
    return !this.closed && this.addon.alive(this.handle);
  }
  stats(): NativeStats {
    if (this.closed) throw new StarlightError('SL_ERR_FS_UNAVAILABLE', `FUSE session ${this.handle} is unmounted`);
    return this.addon.stats(this.handle);
  }
  /** Fails parked reads with EIO, stops the serving threads, lazily detaches the mount. */
  unmount(): void {
    if (this.closed) return;
    this.closed = true;
    this.addon.unmount(this.handle);
  }
  /**
   * Stops serving but keeps the mount and leaves parked reads unanswered, for a successor that
   * adopts the connection from the fd holder (it asks the kernel to resend them).
   */
  detach(): void {
    if (this.closed) return;
    this.closed = true;
    this.addon.detach(this.handle);
  }
  /** held: the fd holder keeps this connection, so process exit detaches instead of unmounting. */
  setHeld(held: boolean): void {
    if (!this.closed) this.addon.setHeld(this.handle, held);
  }
  /** [device fd, state fd] to hand to the fd holder; still owned by the session. */
  fds(): [number, number] {
    if (this.closed) throw new StarlightError('SL_ERR_FS_UNAVAILABLE', `FUSE session ${this.handle} is unmounted`);
    return this.addon.viewFds(this.handle);
  }
}

/** Loads the addon lazily (so importing this module never fails) and mounts sessions. */
export class FuseAddonLoader {
  private addon: FuseAddon | undefined;

  /** Absolute path of the addon: the first build/Release/starlight_fuse.node above this module. */
  static locate(): string | null {
    return findBuildArtifact(ADDON_FILE);
  }

  load(): FuseAddon {
    if (this.addon) return this.addon;
    const path = FuseAddonLoader.locate();
    if (path === null) throw addonNotFound();
    let addon: FuseAddon;
    try {
      addon = createRequire(import.meta.url)(path) as FuseAddon;
    } catch (err) {
      throw new StarlightError('SL_ERR_FS_ADDON', `cannot load the FUSE addon ${path}`, { cause: err, details: { path } });
    }
    if (addon.INODE_RECORD_SIZE !== INODE_RECORD_SIZE || addon.DIRENT_RECORD_SIZE !== DIRENT_RECORD_SIZE || addon.XATTR_RECORD_SIZE !== XATTR_RECORD_SIZE) {
      throw new StarlightError('SL_ERR_FS_ADDON', `the FUSE addon ${path} uses another inode table layout; rebuild it (npm install)`, { details: { path } });
    }
    const causes = [addon.CAUSE_CONTENT_OPEN, addon.CAUSE_CONTENT_READ, addon.CAUSE_PASSTHROUGH_OPEN, addon.CAUSE_BACKING_OPEN, addon.CAUSE_SERVE];
    if (addon.EVENT_NATIVE_ERROR === undefined || addon.adopt === undefined || causes.some((c, i) => c !== i + 1)) {
      throw new StarlightError('SL_ERR_FS_ADDON', `the FUSE addon ${path} is older than this code (no native error events or takeover); rebuild it (npm install)`, { details: { path } });
    }
    this.addon = addon;
    return addon;
  }

  events(): EventKinds {
    const a = this.load();
    return { read: a.EVENT_READ, interrupt: a.EVENT_INTERRUPT, access: a.EVENT_ACCESS, passthroughOff: a.EVENT_PASSTHROUGH_OFF, nativeError: a.EVENT_NATIVE_ERROR };
  }

  /** Mounts synchronously (the kernel mount; the session threads answer from then on). */
  mount(mountpoint: string, options: NativeMountOptions, table: InodeTableBuffers, onEvent: NativeEventHandler): NativeSession {
    const addon = this.load();
    let handle: number;
    try {
      handle = addon.mount(mountpoint, options, table, onEvent);
    } catch (err) {
      const code = err instanceof TypeError || err instanceof RangeError ? 'SL_ERR_INVALID_ARGUMENT' : 'SL_ERR_FS_MOUNT';
      throw new StarlightError(code, `cannot mount a view at ${mountpoint}: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { mountpoint } });
    }
    return new NativeSession(addon, handle);
  }

  /**
   * Serves a live connection a predecessor mounted at `mountpoint` (fds from the fd holder; both
   * are taken, also on failure). The table must be the one the predecessor served (same tree).
   */
  adopt(devFd: number, stateFd: number, mountpoint: string, options: NativeMountOptions, table: InodeTableBuffers, onEvent: NativeEventHandler): NativeSession {
    const addon = this.load();
    let handle: number;
    try {
      handle = addon.adopt(devFd, stateFd, mountpoint, options, table, onEvent);
    } catch (err) {
      const code = err instanceof TypeError || err instanceof RangeError ? 'SL_ERR_INVALID_ARGUMENT' : 'SL_ERR_FS_MOUNT';
      throw new StarlightError(code, `cannot adopt the held view at ${mountpoint}: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { mountpoint } });
    }
    return new NativeSession(addon, handle);
  }

  /** Path of the fd holder executable built beside the addon (build/Release/starlight-fuse-holder). */
  holderPath(): string {
    const addon = FuseAddonLoader.locate();
    if (addon === null) throw addonNotFound();
    return join(dirname(addon), 'starlight-fuse-holder');
  }
}
