/**
 * StarlightSnapshotter: containerd's overlay snapshotter semantics (metadata in SQLite, one
 * directory per snapshot, overlay mounts) plus lazily provided "remote" layers.
 *
 * Remote layers (design; the puller/FUSE side plugs in through RemoteLayerResolver + ViewManager):
 * Prepare with a `containerd.io/snapshot.ref` target and remote hints (labels.ts) asks the resolver;
 * if it can provide the layer, a committed snapshot named by the target is created with label
 * `containerd.io/snapshot/remote=<remote id>` and Prepare fails with already-exists, as stargz does
 * (snapshot/snapshot.go:242–280); containerd then finds it with Walk. The view of the chain is
 * mounted at that snapshot's `fs` dir on first use and checked on every Mounts (stargz :603, :708).
 *
 * Not here: the contract (types.ts), mount options (mounts.ts), SQL (metastore.ts), wire (grpc-*.ts).
 */
import { rm, readdir, stat } from 'node:fs/promises';
import { existsSync, lchownSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { StarlightError, kindOf, withContext } from '../../errors.js';
import { isDigest } from '../../oci/digest.js';
import { nullLogger, type Logger } from '../../log.js';
import type { ViewManager } from '../fs/view.js';
import { matchesAny, parseFilters } from './filters.js';
import { LABEL_REMOTE, LABEL_SNAPSHOT_PREFIX, parseRemoteHints, remoteIdOf } from './labels.js';
import { Layout, NEW_DIR_PREFIX, REMOVED_DIR_PREFIX, diskUsage } from './layout.js';
import { MetaStore, rowToInfo, type SnapshotRow } from './metastore.js';
import { unmountAllUnder } from '../fs/mount-table.js';
import { snapshotMounts, type MountParent, type OverlayOptions } from './mounts.js';
import type { RemoteLayerResolver } from './remote.js';
import type { Cleaner, Info, Mount, SnapshotKind, SnapshotOpts, Snapshotter, Usage, WalkFn } from './types.js';

export type { Cleaner, Info, Mount, SnapshotKind, SnapshotOpts, Snapshotter, Usage, WalkFn } from './types.js';

/** Present when the kernel's overlayfs has the `index` feature (containerd overlay supportsIndex). */
const OVERLAY_INDEX_PARAM = '/sys/module/overlay/parameters/index';
/**
 * How long the lazy view of a graduated chain stays mounted after the last mounts that named it
 * (issue 12), ms. containerd mounts what Prepare/Mounts answered a moment later; a minute covers it.
 */
export const DEFAULT_VIEW_IDLE_MS = 60_000;
/** Longest pause between two looks for idle views, ms. */
const VIEW_IDLE_CHECK_MAX_MS = 30_000;

export interface StarlightSnapshotterOptions {
  /** Directory for metadata.db and snapshots/ (created 0700). Required. */
  root: string;
  /** Provides layers lazily. Default: none (every layer is unpacked by containerd). */
  resolver?: RemoteLayerResolver;
  /** Mounts lazy views; required when `resolver` is set. */
  views?: ViewManager;
  /** Mount points the stale-mount cleanup at open must leave alone (views held for adoption). */
  keepMounts?: ReadonlySet<string>;
  /** Default: nullLogger. */
  log?: Logger;
  /** Overlay options; default: detected like containerd (index=off if supported, no userxattr). */
  overlay?: Partial<OverlayOptions>;
  /** A graduated chain's view is unmounted once unused for this long, ms (> 0). Default DEFAULT_VIEW_IDLE_MS. */
  viewIdleMs?: number;
}

interface ResolvedOptions {
  root: string;
  resolver: RemoteLayerResolver | undefined;
  views: ViewManager | undefined;
  log: Logger;
  overlay: OverlayOptions;
  viewIdleMs: number;
}

/** Validation and defaults in one place. */
function resolveSnapshotterOptions(o: StarlightSnapshotterOptions): ResolvedOptions {
  if (typeof o.root !== 'string' || !o.root.startsWith('/')) {
    throw new StarlightError('SL_ERR_CONFIG', `snapshotter root must be an absolute path, got ${JSON.stringify(o.root)}`, { details: { root: o.root } });
  }
  if (o.resolver && !o.views) {
    throw new StarlightError('SL_ERR_CONFIG', 'a remote-layer resolver needs a ViewManager (options.views) to mount its views');
  }
  const viewIdleMs = o.viewIdleMs ?? DEFAULT_VIEW_IDLE_MS;
  if (!(viewIdleMs > 0)) throw new StarlightError('SL_ERR_CONFIG', `viewIdleMs must be a positive number of ms, got ${o.viewIdleMs}`);
  return {
    root: o.root.replace(/\/+$/, '') || '/',
    resolver: o.resolver,
    views: o.views,
    log: o.log ?? nullLogger,
    overlay: { indexOff: o.overlay?.indexOff ?? existsSync(OVERLAY_INDEX_PARAM), userxattr: o.overlay?.userxattr ?? false },
    viewIdleMs,
  };
}

export class StarlightSnapshotter implements Snapshotter, Cleaner {
  private readonly layout: Layout;
  private closed = false;
  /** Remote snapshot id → its view mount (in flight or done). */
  private readonly views = new Map<number, Promise<void>>();
  /** `new-*` dirs of creates in flight, which cleanup must not remove. */
  private readonly inflight = new Set<string>();
  /** Active snapshot ids whose first Mounts() was reported (RemoteLayerResolver.activeMounted). */
  private readonly started = new Set<number>();
  /** A later release() the resolver asked for (RemoteLayerResolver.release's retryAfterMs). */
  private releaseTimer: NodeJS.Timeout | undefined;
  /** Remote snapshot id → when mounts naming its view were last answered (ensureView), ms. */
  private readonly viewUsedAt = new Map<number, number>();
  /** Views last found in use, with their users as logged (logged again when they change). */
  private readonly viewsInUse = new Map<number, string>();
  private readonly idleTimer: NodeJS.Timeout | undefined;
  private dropping = false;

  private constructor(
    private readonly opts: ResolvedOptions,
    private readonly store: MetaStore,
  ) {
    this.layout = new Layout(opts.root);
    if (opts.resolver?.materialised && opts.views?.users) {
      const every = Math.min(VIEW_IDLE_CHECK_MAX_MS, Math.max(250, opts.viewIdleMs / 2));
      this.idleTimer = setInterval(() => void this.dropIdleViews(), every);
      this.idleTimer.unref();
    }
  }

  /** Creates the root if needed, opens the metadata and force-unmounts leftovers of a previous run. */
  static async open(options: StarlightSnapshotterOptions): Promise<StarlightSnapshotter> {
    const opts = resolveSnapshotterOptions(options);
    const layout = new Layout(opts.root);
    await layout.init();
    const left = await unmountAllUnder(layout.snapshotsDir, options.keepMounts);
    if (left.unmounted.length > 0) opts.log.info('snapshotter-stale-mounts-unmounted', { paths: left.unmounted });
    for (const f of left.failed) opts.log.warn('snapshotter-stale-unmount-failed', f);
    return new StarlightSnapshotter(opts, new MetaStore(layout.dbPath));
  }

  private live(): void {
    if (this.closed) throw new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', `snapshotter at ${this.opts.root} is closed`);
  }

  private static mountParents(parents: SnapshotRow[]): MountParent[] {
    return parents.map((p) => ({ id: p.id, remote: remoteIdOf(p.labels) !== null }));
  }

  /** The topmost remote snapshot among `parents` (nearest first): the one whose view is used. */
  private static topRemote(parents: SnapshotRow[]): SnapshotRow | undefined {
    return parents.find((p) => remoteIdOf(p.labels) !== null);
  }

  async stat(key: string): Promise<Info> {
    this.live();
    return rowToInfo(this.store.mustGet(key));
  }

  async update(info: Pick<Info, 'name' | 'labels'>, fieldpaths: string[] = []): Promise<Info> {
    this.live();
    return this.store.transaction(() => {
      const before = this.store.mustGet(info.name);
      const after = this.store.updateLabels(info.name, info.labels ?? {}, fieldpaths);
      // The remote label is ours: containerd's metadata may send a label set without it.
      const remote = before.labels[LABEL_REMOTE];
      if (remote !== undefined && after.labels[LABEL_REMOTE] !== remote) {
        return rowToInfo(this.store.updateLabels(info.name, { [LABEL_REMOTE]: remote }, [`labels.${LABEL_REMOTE}`]));
      }
      return rowToInfo(after);
    });
  }

  async usage(key: string): Promise<Usage> {
    this.live();
    const row = this.store.mustGet(key);
    if (row.kind === 'active') return diskUsage(this.layout.fsDir(row.id));
    return { size: row.size, inodes: row.inodes };
  }

  async mounts(key: string): Promise<Mount[]> {
    this.live();
    const row = this.store.mustGet(key);
    if (row.kind === 'committed') {
      throw new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', `snapshot ${JSON.stringify(key)} is committed; only active and view snapshots have mounts`, { details: { key } });
    }
    const mounts = await this.mountsOf(row);
    if (row.kind === 'active' && !this.started.has(row.id)) this.noteStart(row);
    return mounts;
  }

  /** Tells the resolver that a container on a lazy view starts (first Mounts of an active). */
  private noteStart(row: SnapshotRow): void {
    this.started.add(row.id);
    const top = StarlightSnapshotter.topRemote(this.store.parents(row));
    const remoteId = top ? remoteIdOf(top.labels) : null;
    if (remoteId === null) return;
    try {
      this.opts.resolver?.activeMounted?.(remoteId, row.key);
    } catch (err) {
      this.opts.log.warn('remote-active-hook-failed', { key: row.key, err });
    }
  }

  /** Mounts of an active/view row, after making sure the lazy view below it (if any) is alive. */
  private async mountsOf(row: SnapshotRow): Promise<Mount[]> {
    const parents = this.store.parents(row);
    const top = StarlightSnapshotter.topRemote(parents);
    // A graduated chain (issue 12) needs no view: its plain tree goes into lowerdir.
    const graduated = top ? this.materialised(top) : undefined;
    if (top && !graduated) await this.ensureView(top);
    return this.pureMounts(row, parents, graduated);
  }

  /** The resolver's plain layer dirs (top first) for remote snapshot `r`'s tree, if it graduated. */
  private materialised(r: SnapshotRow): readonly string[] | undefined {
    const remoteId = remoteIdOf(r.labels);
    if (remoteId === null) return undefined;
    try {
      return this.opts.resolver?.materialised?.(remoteId);
    } catch (err) {
      this.opts.log.warn('remote-materialised-failed', { remoteId, err });
      return undefined;
    }
  }

  private pureMounts(row: SnapshotRow, parents: SnapshotRow[], graduated?: readonly string[]): Mount[] {
    const mp = StarlightSnapshotter.mountParents(parents);
    if (graduated) {
      const top = mp.find((p) => p.remote);
      if (top) top.dirs = graduated;
    }
    return snapshotMounts({ id: row.id, kind: row.kind, parents: mp }, this.layout, this.opts.overlay);
  }

  /** Lazy views mounted or being mounted (issue 12: content is relocated only while there are none). */
  mountedViews(): number {
    return this.views.size;
  }

  /** Mounts the view of remote snapshot `r` at its fs dir once, then checks it (every call). */
  private async ensureView(r: SnapshotRow): Promise<void> {
    const remoteId = remoteIdOf(r.labels);
    const { resolver, views } = this.opts;
    const mountpoint = this.layout.fsDir(r.id);
    const unavailable = (why: string, cause?: unknown) =>
      new StarlightError('SL_ERR_SNAPSHOT_UNAVAILABLE', `lazy view of snapshot ${JSON.stringify(r.key)} at ${mountpoint} is not available: ${why}`, {
        cause,
        details: { name: r.key, remoteId, mountpoint },
      });
    if (!remoteId || !resolver || !views) throw unavailable('this snapshotter has no remote-layer resolver');
    this.viewUsedAt.set(r.id, Date.now());
    let mounting = this.views.get(r.id);
    if (!mounting) {
      mounting = (async () => {
        // A committed layer's snapshot is named by its chain ID (containerd's unpacker, CRI).
        const chainId = isDigest(r.key) ? r.key : undefined;
        const req = await resolver.viewRequest(remoteId, chainId ? { chainId } : undefined);
        await views.mount(mountpoint, req);
        this.opts.log.info('remote-view-mounted', { name: r.key, remoteId, mountpoint });
        try {
          resolver.viewMounted?.(remoteId);
        } catch (err) {
          this.opts.log.warn('remote-view-hook-failed', { remoteId, err });
        }
      })();
      this.views.set(r.id, mounting);
      mounting.catch(() => this.views.delete(r.id));
    }
    try {
      await mounting;
      await views.check(mountpoint);
    } catch (err) {
      if (kindOf(err) === 'canceled') throw err;
      throw unavailable(err instanceof Error ? err.message : String(err), err);
    }
  }

  /**
   * Starts mounting the lazy view of committed remote snapshot `key` now, ahead of the first
   * container on it (`starlight pull` calls this once containerd has the image): the Prepare/Mounts
   * of `ctr run` then find it mounted or join the mount in flight. Never throws; a failure is logged
   * and the next Mounts tries again (ensureView).
   */
  warmView(key: string): void {
    if (this.closed || !this.opts.resolver) return;
    const failed = (err: unknown): void => this.opts.log.warn('remote-view-warm-failed', { key, err });
    try {
      // Called from a timer (images/service.ts): a throw here (the metadata store) would be uncaught.
      const row = this.store.get(key);
      if (!row || row.kind !== 'committed' || remoteIdOf(row.labels) === null || this.materialised(row)) return;
      this.ensureView(row).catch(failed);
    } catch (err) {
      failed(err);
    }
  }

  async prepare(key: string, parent: string, opts: SnapshotOpts = {}): Promise<Mount[]> {
    this.live();
    const labels = opts.labels ?? {};
    if (this.opts.resolver) await this.tryRemote(key, parent, labels);
    return this.create('active', key, parent, labels);
  }

  async view(key: string, parent: string, opts: SnapshotOpts = {}): Promise<Mount[]> {
    this.live();
    return this.create('view', key, parent, opts.labels ?? {});
  }

  /**
   * If the resolver provides this layer lazily: creates the committed remote snapshot and throws
   * already-exists. Returns normally when the layer must be unpacked the ordinary way.
   */
  private async tryRemote(key: string, parent: string, labels: Record<string, string>): Promise<void> {
    const hints = parseRemoteHints(labels);
    if (!hints || this.store.get(key)) return;
    const p = parent === '' ? undefined : this.store.get(parent);
    if (parent !== '' && (!p || p.kind !== 'committed')) return; // create() reports the error
    const existing = this.store.get(hints.chainId);
    if (existing) {
      if (existing.kind === 'committed' && existing.parent === parent) throw this.remoteExists(key, hints.chainId);
      return;
    }
    let remote;
    try {
      remote = await this.opts.resolver!.resolve({
        key,
        parent,
        parentRemoteId: p === undefined ? undefined : remoteIdOf(p.labels),
        hints,
        labels,
      });
    } catch (err) {
      if (kindOf(err) === 'canceled') throw err;
      this.opts.log.warn('remote-layer-resolve-failed', { key, chainId: hints.chainId, err });
      return;
    }
    if (!remote) return;
    const extra = Object.fromEntries(Object.entries(remote.labels ?? {}).filter(([k]) => k.startsWith(LABEL_SNAPSHOT_PREFIX)));
    await this.create('committed', hints.chainId, parent, { ...labels, ...extra, [LABEL_REMOTE]: remote.remoteId });
    this.opts.log.info('remote-snapshot-prepared', { key, name: hints.chainId, parent, remoteId: remote.remoteId });
    throw this.remoteExists(key, hints.chainId);
  }

  private remoteExists(key: string, target: string): StarlightError {
    return new StarlightError('SL_ERR_SNAPSHOT_EXISTS', `target snapshot ${JSON.stringify(target)} already exists (provided lazily)`, {
      details: { key, target, remote: true },
    });
  }

  /** containerd overlay createSnapshot: build dirs in new-*, insert + rename in one transaction. */
  private async create(kind: SnapshotKind, key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    const td = this.layout.makeTemp(kind === 'active');
    this.inflight.add(td);
    try {
      const parentRow = parent === '' ? undefined : this.store.get(parent);
      const chain = parentRow ? [parentRow, ...this.store.parents(parentRow)] : [];
      const top = kind === 'committed' ? undefined : StarlightSnapshotter.topRemote(chain);
      // Fail before creating anything when the lazy view below is gone (unavailable). A graduated
      // chain needs no view (issue 12).
      const graduated = top ? this.materialised(top) : undefined;
      if (top && !graduated) await this.ensureView(top);
      // Upper dir owned like the parent's root (containerd overlay does the same). Async stat: the
      // parent may be a lazy view served by this process (docs/design.md "Things that bite").
      // Not for a committed snapshot: only tryRemote creates one, and its fs dir is never an upper
      // dir, only its view's mountpoint (the view's root shows the image's owner) — nothing sees that
      // dir's owner. So a remote Prepare waits for no I/O at all (issue 19: the stat's thread-pool
      // wait and loop turn were paid once per new layer in containerd's Prepare chain).
      const owner = parentRow && kind !== 'committed' ? await stat(parentRow === top && graduated ? graduated[0]! : this.layout.fsDir(parentRow.id)).catch(() => undefined) : undefined;
      const row = this.store.transaction(() => {
        const r = this.store.create(kind, key, parent, labels);
        if (owner && r.parentId === parentRow!.id) lchownSync(join(td, 'fs'), owner.uid, owner.gid);
        renameSync(td, this.layout.dir(r.id));
        return r;
      });
      if (kind === 'committed') return [];
      return this.pureMounts(row, row.parentId === null ? [] : chain, graduated);
    } catch (err) {
      await rm(td, { recursive: true, force: true });
      throw withContext(err, `${kind === 'view' ? 'view' : 'prepare'} snapshot ${JSON.stringify(key)}`, { key, parent });
    } finally {
      this.inflight.delete(td);
    }
  }

  async commit(name: string, key: string, opts: SnapshotOpts = {}): Promise<void> {
    this.live();
    const row = this.store.mustGet(key);
    if (row.kind !== 'active') {
      throw new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', `snapshot ${JSON.stringify(key)} is not active (it is ${row.kind}); only active snapshots can be committed`, { details: { key, kind: row.kind } });
    }
    const usage = await diskUsage(this.layout.fsDir(row.id));
    this.store.transaction(() => this.store.commit(key, name, usage, opts.labels ?? {}));
  }

  async remove(key: string): Promise<void> {
    this.live();
    // Checked before unmounting a view so that a refused remove leaves the view in place.
    const row = this.store.removable(key);
    const mounted = this.views.get(row.id);
    if (mounted) {
      this.views.delete(row.id);
      await mounted.catch(() => undefined);
      await this.opts.views!.unmount(this.layout.fsDir(row.id));
    }
    const gone = this.layout.removedDir(row.id);
    this.store.transaction(() => {
      this.store.remove(key);
      renameSync(this.layout.dir(row.id), gone);
    });
    this.started.delete(row.id);
    this.viewUsedAt.delete(row.id);
    this.viewsInUse.delete(row.id);
    await rm(gone, { recursive: true, force: true }).catch((err) => this.opts.log.warn('snapshot-dir-remove-failed', { path: gone, err }));
    if (remoteIdOf(row.labels) !== null) await this.release();
  }

  /** Lets the resolver free what the remaining snapshots' views no longer need (issue 5). */
  private async release(): Promise<void> {
    const release = this.opts.resolver?.release;
    if (!release) return;
    const live = new Set<string>();
    for (const r of this.store.all()) {
      const id = remoteIdOf(r.labels);
      if (id !== null) live.add(id);
    }
    const res = await release.call(this.opts.resolver, live).catch((err: unknown) => this.opts.log.warn('remote-release-failed', { err }));
    const retry = res?.retryAfterMs;
    if (retry !== undefined && !this.closed) {
      clearTimeout(this.releaseTimer);
      this.releaseTimer = setTimeout(() => {
        this.releaseTimer = undefined;
        if (!this.closed) void this.release();
      }, retry);
      this.releaseTimer.unref();
    }
  }

  async walk(fn: WalkFn, filters: string[] = []): Promise<void> {
    this.live();
    const parsed = parseFilters(filters);
    for (const row of this.store.all()) {
      const info = rowToInfo(row);
      if (matchesAny(info, parsed)) await fn(info);
    }
  }

  /** Removes directories no snapshot owns (crashed creates, interrupted removes). */
  async cleanup(): Promise<void> {
    this.live();
    const ids = this.store.ids();
    for (const name of await readdir(this.layout.snapshotsDir)) {
      const path = join(this.layout.snapshotsDir, name);
      const owned = /^[0-9]+$/.test(name) && ids.has(Number(name));
      const building = name.startsWith(NEW_DIR_PREFIX) && this.inflight.has(path);
      if (owned || building) continue;
      if (!/^[0-9]+$/.test(name) && !name.startsWith(NEW_DIR_PREFIX) && !name.startsWith(REMOVED_DIR_PREFIX)) continue;
      await unmountAllUnder(path);
      await rm(path, { recursive: true, force: true });
      this.opts.log.info('snapshot-dir-cleaned', { path });
    }
    await this.release();
  }

  /**
   * Mounts the views needed by existing active/view snapshots (after a daemon restart). Failures are
   * logged; Mounts retries them. Call once the resolver can answer.
   */
  async restoreViews(): Promise<void> {
    this.live();
    if (!this.opts.resolver) return;
    for (const row of this.store.all()) {
      if (row.kind === 'committed') continue;
      const top = StarlightSnapshotter.topRemote(this.store.parents(row));
      if (!top) continue;
      await this.ensureView(top).catch((err) =>
        this.opts.log.warn('remote-view-restore-failed', { key: row.key, err }),
      );
    }
  }

  /**
   * Issue 12: unmounts the lazy view of a graduated chain once nothing uses it. New mounts of such a
   * chain name its plain tree (mountsOf), so its view only serves mounts made before it graduated: it
   * stays while any mount in any namespace uses it (ViewManager.users: a container's rootfs overlay, a
   * bind) and for `viewIdleMs` after the last mounts that named it (containerd mounts what
   * Prepare/Mounts answered a moment later). A later Mounts of a chain whose view was dropped gets
   * the plain tree; its upper dir is unchanged, only the identical lower tree under it differs.
   */
  private async dropIdleViews(): Promise<void> {
    const views = this.opts.views;
    if (this.dropping || this.closed || views?.users === undefined) return;
    this.dropping = true;
    try {
      const candidates: { id: number; mounting: Promise<void>; usedAt: number; row: SnapshotRow; mountpoint: string }[] = [];
      for (const [id, mounting] of [...this.views]) {
        const usedAt = this.viewUsedAt.get(id) ?? 0;
        if (Date.now() - usedAt < this.opts.viewIdleMs) continue;
        const row = this.store.getById(id);
        if (row === undefined || this.materialised(row) === undefined) continue;
        if (!(await mounting.then(() => true, () => false))) continue;
        candidates.push({ id, mounting, usedAt, row, mountpoint: this.layout.fsDir(id) });
      }
      if (candidates.length === 0) return;
      // One read of every namespace's mount table for all candidates.
      const usersOf = await views.users(candidates.map((c) => c.mountpoint)).catch((err: unknown) => {
        const why = `unknown: ${err instanceof Error ? err.message : String(err)}`;
        return candidates.map(() => [why]);
      });
      for (const [i, { id, mounting, usedAt, row, mountpoint }] of candidates.entries()) {
        const users = usersOf[i] ?? [];
        // Something may have named the view while we looked (a remount, a restore).
        if (this.closed || this.views.get(id) !== mounting || this.viewUsedAt.get(id) !== usedAt) continue;
        if (users.length > 0) {
          const seen = users.join('\n');
          if (this.viewsInUse.get(id) !== seen) this.opts.log.info('remote-view-in-use', { name: row.key, mountpoint, users });
          this.viewsInUse.set(id, seen);
          continue;
        }
        this.views.delete(id);
        this.viewsInUse.delete(id);
        this.viewUsedAt.delete(id);
        await views.unmount(mountpoint);
        this.opts.log.info('remote-view-dropped', { name: row.key, mountpoint, reason: 'graduated and unused' });
      }
    } catch (err) {
      this.opts.log.warn('remote-view-drop-failed', { err });
    } finally {
      this.dropping = false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.releaseTimer);
    clearInterval(this.idleTimer);
    const views = this.opts.views;
    for (const [id, p] of this.views) {
      await p.catch(() => undefined);
      if (views) await views.unmount(this.layout.fsDir(id)).catch((err) => this.opts.log.warn('remote-view-unmount-failed', { id, err }));
    }
    this.views.clear();
    this.store.close();
  }
}
