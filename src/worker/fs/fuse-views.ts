/**
 * FuseViewManager: the ViewManager that mounts a MergedTree through the native FUSE addon.
 *
 * mount() builds the inode table (inodes.ts) with present files resolved via ContentProvider.locate,
 * mounts it (native.ts), and routes parked reads of absent content to ContentProvider.waitFor, then
 * answers them with provide(). Interrupted reads abort their wait. Unmount fails parked reads (EIO)
 * and lazily detaches. SIGINT/SIGTERM handlers unmount every view while any is mounted.
 *
 * With an fd holder (issue 13) every mounted view's connection is handed to it; a later manager
 * (the next daemon) gets them back (adoptFrom) and mount() of such a mountpoint adopts the live
 * connection instead of mounting anew. release() stops serving and keeps the views mounted for it.
 *
 * Not here: the inode encoding, the addon, fetching content (the ContentProvider does that).
 * FUSE boundary error mapping lives here and nowhere else (ERRNO_BY_KIND).
 */
import { constants as osConstants } from 'node:os';
import { stat, statfs } from 'node:fs/promises';
import { resolve } from 'node:path';
import { StarlightError, errnoName, kindOf, type Kind } from '../../errors.js';
import { nullLogger, type Logger } from '../../log.js';
import { buildInodeTable, type InodeTable } from './inodes.js';
import { detachMount, fuseMountsAt, mountInfoOfEveryNamespace, mountsUsing } from './mount-table.js';
import { PhaseTimer } from '../phases.js';
import { FuseAddonLoader, NATIVE_ERROR_CAUSES, type EventKinds, type NativeSession } from './native.js';
import type { FdHolderClient, HeldView } from './fd-holder.js';
import type { ViewCounters, ViewManager, ViewRequest } from './view.js';
import { Histogram } from '../../prometheus.js';

/** statfs f_type of FUSE mounts (linux/magic.h FUSE_SUPER_MAGIC). */
const FUSE_SUPER_MAGIC = 0x65735546;
const { EIO, EINTR, ENOENT } = osConstants.errno;

/** FUSE boundary: error kind of a failed waitFor → errno returned to the reading process. */
const ERRNO_BY_KIND: Partial<Record<Kind, number>> = {
  canceled: EINTR,
  'not-found': ENOENT,
};

export function errnoFor(err: unknown): number {
  return ERRNO_BY_KIND[kindOf(err)] ?? EIO;
}

export interface FuseViewOptions {
  /** Structured logger; default: nullLogger. */
  log?: Logger;
  /** Serving threads per view; default 4 (ops never block on data). */
  threads?: number;
  /**
   * Kernel FUSE passthrough for complete files (reads at page-cache speed, no daemon round trip);
   * default true. Falls back to daemon reads, logging `fuse-passthrough-off` once, when refused.
   */
  passthrough?: boolean;
  /** How long mount() waits for the new mount to answer a stat, in ms; default 10000. */
  mountTimeoutMs?: number;
  /** How long check() waits for statfs, in ms; default 5000. */
  checkTimeoutMs?: number;
  /** Install SIGINT/SIGTERM handlers that unmount every view (then re-raise); default true. */
  handleSignals?: boolean;
  /** Addon loader (tests may share one); default: a new FuseAddonLoader. */
  loader?: FuseAddonLoader;
  /**
   * mount() stats the new mount before resolving; default true. Only scripts/valgrind-fs.sh turns it
   * off: under valgrind a process that stats its own FUSE mount deadlocks (valgrind keeps its lock).
   */
  probeMount?: boolean;
  /** The fd holder that keeps views mounted across daemon restarts; default none (views end with the process). */
  holder?: FdHolderClient;
}

type Resolved = Required<Omit<FuseViewOptions, 'holder'>> & { holder: FdHolderClient | undefined };

function resolveOptions(o: FuseViewOptions): Resolved {
  const r: Resolved = {
    log: o.log ?? nullLogger,
    threads: o.threads ?? 4,
    passthrough: o.passthrough ?? true,
    mountTimeoutMs: o.mountTimeoutMs ?? 10_000,
    checkTimeoutMs: o.checkTimeoutMs ?? 5_000,
    handleSignals: o.handleSignals ?? true,
    loader: o.loader ?? new FuseAddonLoader(),
    probeMount: o.probeMount ?? true,
    holder: o.holder,
  };
  if (!Number.isInteger(r.threads) || r.threads < 1 || r.threads > 64) throw new StarlightError('SL_ERR_CONFIG', `threads must be 1..64, got ${r.threads}`);
  for (const k of ['mountTimeoutMs', 'checkTimeoutMs'] as const) {
    if (!(r[k] > 0)) throw new StarlightError('SL_ERR_CONFIG', `${k} must be > 0, got ${r[k]}`);
  }
  return r;
}

interface View {
  mountpoint: string;
  session: NativeSession;
  table: InodeTable;
  req: ViewRequest;
  /** Parked reads waiting in ContentProvider.waitFor, by native request id. */
  pending: Map<number, AbortController>;
  /** st_dev of the mount ("major:minor"), to recognise it in mountinfo. */
  dev: string;
}

async function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(onTimeout()), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

export class FuseViewManager implements ViewManager {
  private readonly opts: Resolved;
  private readonly views = new Map<string, View>();
  /** Native counters of views already unmounted (so totals never go down). */
  private readonly retired: Record<string, number> = {};
  private readonly blockedReadSeconds = new Histogram();
  private readonly blockedReadFailures = new Map<string, number>();
  private signalsInstalled = false;
  private passthroughOffLogged = false;
  /** Views a predecessor left mounted (fds from the holder), by mountpoint, until mount() adopts them. */
  private readonly held = new Map<string, HeldView>();
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    this.opts.log.warn('fuse-views-signal-unmount', { signal: sig, views: this.views.size });
    this.destroy();
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };

  constructor(options: FuseViewOptions = {}) {
    this.opts = resolveOptions(options);
  }

  async mount(mountpoint: string, req: ViewRequest, signal?: AbortSignal): Promise<void> {
    const abs = resolve(mountpoint);
    if (signal?.aborted) throw new StarlightError('SL_ERR_CANCELED', `mount of a view at ${abs} was canceled`, { details: { mountpoint: abs } });
    if (this.views.has(abs)) throw new StarlightError('SL_ERR_FS_MOUNTED', `a view is already mounted at ${abs}`, { details: { mountpoint: abs } });
    const isDir = await stat(abs).then((st) => st.isDirectory(), () => false);
    if (!isDir) throw new StarlightError('SL_ERR_FS_MOUNT', `cannot mount a view at ${abs}: not an existing directory`, { details: { mountpoint: abs } });
    if (this.views.has(abs)) throw new StarlightError('SL_ERR_FS_MOUNTED', `a view is already mounted at ${abs}`, { details: { mountpoint: abs } });
    const t = new PhaseTimer();
    const table = req.table ?? buildInodeTable(req.tree, (d) => req.content.locate(d));
    t.lap(req.table ? 'inode-table-prebuilt' : 'inode-table');
    const kinds = this.opts.loader.events();
    const pending = new Map<number, AbortController>();
    let view: View | undefined;
    const options = { threads: this.opts.threads, trace: req.onFirstAccess !== undefined, passthrough: this.opts.passthrough };
    const onEvent = (kind: number, reqId: number, ino: number, offset: number, size: number): void => {
      if (view !== undefined) this.onEvent(view, kinds, kind, reqId, ino, offset, size);
    };
    const session = (await this.adoptHeld(abs, options, table, onEvent)) ?? this.opts.loader.mount(abs, options, table.buffers, onEvent);
    view = { mountpoint: abs, session, table, req, pending, dev: '' };
    this.views.set(abs, view);
    this.installSignals();
    this.hold(view);
    t.lap('fuse-mount');
    if (!this.opts.probeMount) return this.reportMounted(req, t);
    try {
      const st = await withTimeout(stat(abs), this.opts.mountTimeoutMs, () => new Error('timed out'));
      if (st.ino !== 1) throw new Error(`root inode is ${st.ino}, not 1`);
      view.dev = `${Math.floor(st.dev / 256) & 0xfff}:${(st.dev & 0xff) | ((Math.floor(st.dev / 1048576) & 0xfff) << 8)}`;
      if (signal?.aborted) throw new Error('canceled');
    } catch (err) {
      await this.unmount(abs);
      if (signal?.aborted) throw new StarlightError('SL_ERR_CANCELED', `mount of a view at ${abs} was canceled`, { details: { mountpoint: abs } });
      throw new StarlightError('SL_ERR_FS_MOUNT', `the view mounted at ${abs} does not answer: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { mountpoint: abs } });
    }
    t.lap('fuse-init');
    this.opts.log.info('fuse-view-mounted', { mountpoint: abs, inodes: table.count, absent: table.absent.size, phases: t.phases });
    this.reportMounted(req, t);
  }

  private reportMounted(req: ViewRequest, t: PhaseTimer): void {
    try {
      req.onMounted?.(t.phases);
    } catch (err) {
      this.opts.log.warn('fuse-mounted-callback-failed', { err });
    }
  }

  async check(mountpoint: string): Promise<void> {
    const abs = resolve(mountpoint);
    const view = this.views.get(abs);
    const gone = (why: string, cause?: unknown): StarlightError =>
      new StarlightError('SL_ERR_FS_UNAVAILABLE', `the view at ${abs} is unavailable: ${why}`, { cause, details: { mountpoint: abs } });
    if (view === undefined) throw gone('not mounted by this worker');
    if (!view.session.alive()) throw gone('its FUSE session ended');
    let st;
    try {
      st = await withTimeout(statfs(abs), this.opts.checkTimeoutMs, () => gone(`statfs did not answer in ${this.opts.checkTimeoutMs} ms`));
    } catch (err) {
      throw err instanceof StarlightError ? err : gone('statfs failed', err);
    }
    if (st.type !== FUSE_SUPER_MAGIC) throw gone('no FUSE filesystem is mounted there');
  }

  async users(mountpoints: readonly string[]): Promise<string[][]> {
    const views = mountpoints.map((m) => ({ abs: resolve(m), view: this.views.get(resolve(m)) }));
    if (views.every(({ view }) => view === undefined)) return views.map(() => []);
    const { namespaces, denied } = await mountInfoOfEveryNamespace();
    return views.map(({ abs, view }) => {
      if (view === undefined) return [];
      // Not root: other users' processes could hold a container on this view unseen.
      if (denied.length > 0 && process.getuid?.() !== 0) return [`unknown: the mount namespaces of ${denied.length} process(es) cannot be read (not root)`];
      return namespaces.flatMap(({ pid, text }) => mountsUsing(abs, view.dev, text).map((m) => `${m.fsType} at ${m.mountPoint} (mount namespace of pid ${pid})`));
    });
  }

  async unmount(mountpoint: string): Promise<void> {
    const abs = resolve(mountpoint);
    const view = this.views.get(abs);
    if (view === undefined) return;
    this.detach(view);
    // Native unmount detaches lazily (umount2 MNT_DETACH); re-check in case it could not.
    const left = (await fuseMountsAt(abs)).filter((m) => view.dev === '' || m.dev === view.dev);
    if (left.length > 0) {
      this.opts.log.warn('fuse-view-still-mounted', { mountpoint: abs });
      await detachMount(abs, 'the view');
    }
    this.opts.log.info('fuse-view-unmounted', { mountpoint: abs });
  }

  async close(): Promise<void> {
    for (const abs of [...this.views.keys()]) await this.unmount(abs);
    this.removeSignals();
  }

  /** Synchronous abort: unmounts every view (parked reads get EIO). Idempotent. */
  destroy(): void {
    for (const view of [...this.views.values()]) this.detach(view);
    this.removeSignals();
  }

  /** Mounted mountpoints (absolute). */
  mounted(): string[] {
    return [...this.views.keys()];
  }

  /** Native counters of the view at `mountpoint` (lookups, reads, parked…), or undefined. */
  stats(mountpoint: string): ReturnType<NativeSession['stats']> | undefined {
    return this.views.get(resolve(mountpoint))?.session.stats();
  }

  counters(): ViewCounters {
    const native: Record<string, number> = { ...this.retired };
    for (const v of this.views.values()) addNative(native, v.session.stats());
    return { mounted: this.views.size, native, blockedReadSeconds: this.blockedReadSeconds, blockedReadFailures: this.blockedReadFailures };
  }

  private detach(view: View): void {
    this.views.delete(view.mountpoint);
    try {
      addNative(this.retired, view.session.stats());
    } catch {
      // a session that already failed has no counters left to keep
    }
    for (const ac of view.pending.values()) ac.abort();
    view.pending.clear();
    // The holder's fd would keep the connection alive without a server: let it go first.
    view.session.setHeld(false);
    if (this.opts.holder !== undefined) {
      try {
        this.opts.holder.del(view.mountpoint);
      } catch (err) {
        this.opts.log.warn('fuse-holder-del-failed', { mountpoint: view.mountpoint, err });
      }
    }
    view.session.unmount();
    if (this.views.size === 0) this.removeSignals();
  }

  /** Hands the view's connection to the holder (if any); a failure only costs restart survival. */
  private hold(view: View): void {
    if (this.opts.holder === undefined) return;
    try {
      this.opts.holder.put(view.mountpoint, view.session.fds());
      view.session.setHeld(true);
    } catch (err) {
      this.opts.log.warn('fuse-holder-put-failed', { mountpoint: view.mountpoint, err, hint: 'this view ends with the daemon' });
    }
  }

  /**
   * Views a predecessor left mounted (from FdHolderClient.takeAll): mount() of one of these
   * mountpoints adopts its live connection. Call before the first mount.
   */
  adoptFrom(held: Map<string, HeldView>): void {
    for (const [mp, fds] of held) this.held.set(resolve(mp), fds);
  }

  /** Mountpoints still held and not adopted yet. */
  heldMountpoints(): string[] {
    return [...this.held.keys()];
  }

  /** Unmounts every held view nobody adopted (its snapshot is gone, or nothing needed it). */
  async discardUnadopted(): Promise<void> {
    for (const [abs, fds] of [...this.held]) {
      this.held.delete(abs);
      this.opts.log.info('fuse-view-held-discarded', { mountpoint: abs });
      await this.dropHeld(abs, fds);
    }
  }

  /** Ends a held connection: closes our fds and the holder's, detaches the mount. */
  private async dropHeld(abs: string, fds: HeldView): Promise<void> {
    this.opts.holder?.closeFds(fds);
    try {
      this.opts.holder?.del(abs);
    } catch (err) {
      this.opts.log.warn('fuse-holder-del-failed', { mountpoint: abs, err });
    }
    if ((await fuseMountsAt(abs)).length > 0) await detachMount(abs, 'the held view').catch((err: unknown) => this.opts.log.warn('fuse-view-detach-failed', { mountpoint: abs, err }));
  }

  private async adoptHeld(abs: string, options: { threads: number; trace: boolean; passthrough: boolean }, table: InodeTable, onEvent: (kind: number, reqId: number, ino: number, offset: number, size: number) => void): Promise<NativeSession | undefined> {
    const fds = this.held.get(abs);
    if (fds === undefined) return undefined;
    this.held.delete(abs);
    try {
      const session = this.opts.loader.adopt(fds.devFd, fds.stateFd, abs, options, table.buffers, onEvent);
      const st = session.stats();
      this.opts.log.info('fuse-view-adopted', { mountpoint: abs, inodes: st.inodes, takeovers: st.epoch, resend: st.resend });
      if (st.resend < 0) this.opts.log.warn('fuse-resend-unsupported', { mountpoint: abs, errno: -st.resend, hint: 'Linux < 6.9: reads the previous daemon had taken but not answered stay blocked; see docs/lazy-pull.md' });
      return session;
    } catch (err) {
      // adopt took the fds; the holder's copy still keeps the dead-end connection: end it, mount anew.
      this.opts.log.warn('fuse-view-adopt-failed', { mountpoint: abs, err, hint: 'containers running on this view lose it; it is mounted anew' });
      try {
        this.opts.holder?.del(abs);
      } catch (e) {
        this.opts.log.warn('fuse-holder-del-failed', { mountpoint: abs, err: e });
      }
      for (let i = 0; i < 16 && (await fuseMountsAt(abs)).length > 0; i++) await detachMount(abs, 'the held view').catch(() => undefined);
      return undefined;
    }
  }

  /**
   * Stops serving every view but leaves it mounted and held, for the next daemon to adopt (a clean
   * stop for a restart or upgrade). Parked reads stay unanswered; the successor has them resent.
   * Without a holder this is close(). Idempotent.
   */
  async release(): Promise<void> {
    if (this.opts.holder === undefined) return this.close();
    for (const view of [...this.views.values()]) {
      this.views.delete(view.mountpoint);
      for (const ac of view.pending.values()) ac.abort();
      view.pending.clear();
      view.session.detach();
      this.opts.log.info('fuse-view-released', { mountpoint: view.mountpoint });
    }
    for (const fds of this.held.values()) this.opts.holder.closeFds(fds);
    this.held.clear();
    this.removeSignals();
  }

  private onEvent(view: View, kinds: EventKinds, kind: number, reqId: number, ino: number, offset: number, size: number): void {
    if (kind === kinds.read) this.onParkedRead(view, reqId, ino, offset, size);
    else if (kind === kinds.interrupt) view.pending.get(reqId)?.abort();
    else if (kind === kinds.passthroughOff) {
      if (this.passthroughOffLogged) return;
      this.passthroughOffLogged = true;
      this.opts.log.warn('fuse-passthrough-off', { mountpoint: view.mountpoint, errno: size, hint: 'complete files are read through the daemon; passthrough needs Linux >= 6.9, root and a content store on a non-stacked filesystem' });
    }
    else if (kind === kinds.nativeError) this.onNativeError(view, reqId, ino, size);
    else if (kind === kinds.access && view.req.onFirstAccess) {
      try {
        view.req.onFirstAccess(view.table.paths[ino] ?? '', offset);
      } catch (err) {
        this.opts.log.warn('fuse-trace-callback-failed', { mountpoint: view.mountpoint, err });
      }
    }
  }

  /** The addon failed an operation without asking JS (see NativeEventHandler): say which file and why. */
  private onNativeError(view: View, cause: number, ino: number, errno: number): void {
    this.opts.log.warn('fuse-native-error', {
      mountpoint: view.mountpoint,
      path: ino > 0 ? view.table.paths[ino] : undefined,
      ino,
      digest: ino > 0 ? view.table.digests[ino] : undefined,
      cause: NATIVE_ERROR_CAUSES[cause] ?? `unknown-${cause}`,
      errno: errno === 0 ? 'short-read' : (errnoName(errno) ?? `errno-${errno}`),
      errnoCode: errno,
    });
  }

  private onParkedRead(view: View, reqId: number, ino: number, offset: number, size: number): void {
    const digest = view.table.digests[ino];
    if (digest === undefined) {
      view.session.provide(reqId, null, EIO);
      return;
    }
    const ac = new AbortController();
    view.pending.set(reqId, ac);
    const parkedAt = performance.now();
    const waited = () => this.blockedReadSeconds.observe((performance.now() - parkedAt) / 1000);
    let waiting: Promise<string>;
    try {
      waiting = view.req.content.waitFor(digest, offset, size, ac.signal);
    } catch (err) {
      waiting = Promise.reject(err);
    }
    waiting.then(
      (path) => {
        view.pending.delete(reqId);
        waited();
        if (!view.session.provide(reqId, path)) return;
        this.promote(view, digest);
      },
      (err: unknown) => {
        view.pending.delete(reqId);
        waited();
        const cause = ac.signal.aborted ? 'interrupted' : err instanceof StarlightError ? err.code : kindOf(err);
        this.blockedReadFailures.set(cause, (this.blockedReadFailures.get(cause) ?? 0) + 1);
        if (ac.signal.aborted) return; // interrupted or unmounted: already answered natively
        this.opts.log.warn('fuse-read-failed', { mountpoint: view.mountpoint, path: view.table.paths[ino], digest, offset, size, err });
        view.session.provide(reqId, null, errnoFor(err));
      },
    );
  }

  /** Once a digest is complete, later opens/reads of every inode holding it are answered natively. */
  private promote(view: View, digest: string): void {
    const inos = view.table.absent.get(digest);
    if (inos === undefined) return;
    const path = view.req.content.locate(digest);
    if (path === null) return;
    for (const ino of inos) view.session.markPresent(ino, path);
    view.table.absent.delete(digest);
  }

  private installSignals(): void {
    if (!this.opts.handleSignals || this.signalsInstalled) return;
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
    this.signalsInstalled = true;
  }

  private removeSignals(): void {
    if (!this.signalsInstalled) return;
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    this.signalsInstalled = false;
  }
}

/** Adds numeric native counters into `into` (gauges such as parkedNow are skipped by the caller). */
function addNative(into: Record<string, number>, stats: object): void {
  for (const [k, v] of Object.entries(stats)) if (typeof v === 'number') into[k] = (into[k] ?? 0) + v;
}
