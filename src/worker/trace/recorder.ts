/**
 * TraceRecorder: per container start on a lazy view, the order in which the container first touched
 * the image's files, with the time since the start (docs/protocol.md "Traces").
 *
 * Inputs (ViewObserver, images/service.ts): a view was mounted (its image and merged tree), a
 * container started on a view (the first Mounts() of its active snapshot), and the FUSE addon's
 * first access of an inode (once per inode per mount, `sinceMountMs` on the addon's monotonic clock).
 * A trace is open while tracing is on for that start: manual mode (`starlight trace on`, until `off`)
 * or auto mode (the first `autoWindowMs` of every start). One open trace per view: a later start on a
 * view with an open trace adds to it (the addon reports each inode once per mount anyway).
 * A finished trace goes to the spool (disk); `onSaved` lets the reporter upload it.
 *
 * Only regular files and hardlinks are recorded (what has content to prioritise); accesses before
 * the start, and after the window, are dropped. Not here: disk (spool.ts), uploads (reporter.ts).
 */
import { performance } from 'node:perf_hooks';
import type { MergedTree } from '../../layers/toc.js';
import { nullLogger, type Logger } from '../../log.js';
import type { TracedImage, ViewObserver } from '../images/service.js';
import type { TraceSpool } from './spool.js';
import { MAX_ENTRIES_PER_TRACE, TRACE_FORMAT_VERSION, type TraceEntry, type TraceUpload } from './types.js';

/** Default auto-mode window after each container start, ms (issue 6). */
export const DEFAULT_TRACE_WINDOW_MS = 30_000;

export interface TraceRecorderOptions {
  spool: TraceSpool;
  /** Auto mode: record the first this-many ms of every container start; 0 = auto mode off. Default 30000. */
  autoWindowMs?: number;
  /** Group of auto-mode traces (docs/protocol.md `group`). Default none. */
  autoGroup?: string;
  /** Opaque worker id sent with traces. Default none (not sent). */
  worker?: string;
  /** Called after a trace was saved (the reporter uploads). Must not throw. */
  onSaved?: () => void;
  /** Monotonic clock, ms (tests). Default performance.now. */
  now?: () => number;
  /** Wall clock, ms since the epoch (tests). Default Date.now. */
  wallNow?: () => number;
  log?: Logger;
}

export interface TraceState {
  /** Manual mode (`starlight trace on|off`). */
  manual: { on: boolean; group?: string };
  /** Auto mode window, ms (0 = off). */
  autoWindowMs: number;
  /** Traces being recorded now. */
  open: number;
}

interface FileInfo {
  layer?: string;
  digest?: string;
}

interface ViewInfo {
  image: TracedImage;
  tree: MergedTree;
  /** Monotonic ms when the view was mounted (the addon's time zero, within a few ms). */
  mountedAt: number;
  /** path → file info, built on the first recorded access. */
  files?: Map<string, FileInfo>;
}

interface Session {
  remoteId: string;
  image: TracedImage;
  group: string | undefined;
  startedAtWall: number;
  startMono: number;
  windowMs: number;
  entries: TraceEntry[];
  seen: Set<string>;
  timer?: NodeJS.Timeout;
}

export class TraceRecorder implements ViewObserver {
  private readonly views = new Map<string, ViewInfo>();
  private readonly sessions = new Map<string, Session>();
  private manual: { on: boolean; group?: string } = { on: false };
  private readonly saving = new Set<Promise<void>>();
  private readonly autoWindowMs: number;
  private readonly now: () => number;
  private readonly wallNow: () => number;
  private readonly log: Logger;
  private closed = false;

  constructor(private readonly opts: TraceRecorderOptions) {
    this.autoWindowMs = opts.autoWindowMs ?? DEFAULT_TRACE_WINDOW_MS;
    this.now = opts.now ?? (() => performance.now());
    this.wallNow = opts.wallNow ?? Date.now;
    this.log = opts.log ?? nullLogger;
  }

  state(): TraceState {
    return { manual: { ...this.manual }, autoWindowMs: this.autoWindowMs, open: this.sessions.size };
  }

  /**
   * `starlight trace on [--group G]`: containers starting from now on are traced until `off`.
   * `off` finishes (saves) the manual traces; auto-mode traces run to the end of their window.
   */
  async setManual(on: boolean, group?: string): Promise<TraceState> {
    this.manual = on ? { on, ...(group ? { group } : {}) } : { on: false };
    if (!on) await Promise.all([...this.sessions.values()].filter((s) => s.windowMs === 0).map((s) => this.finish(s)));
    this.log.info(on ? 'trace-on' : 'trace-off', group ? { group } : {});
    return this.state();
  }

  viewMounted(remoteId: string, image: TracedImage, tree: MergedTree): void {
    this.views.set(remoteId, { image, tree, mountedAt: this.now() });
  }

  containerStarted(remoteId: string, key: string): void {
    if (this.closed || this.sessions.has(remoteId)) return;
    const view = this.views.get(remoteId);
    const windowMs = this.manual.on ? 0 : this.autoWindowMs;
    if (!view || (!this.manual.on && windowMs === 0)) return;
    const s: Session = {
      remoteId,
      image: view.image,
      group: this.manual.on ? this.manual.group : this.opts.autoGroup,
      startedAtWall: this.wallNow(),
      startMono: this.now(),
      windowMs,
      entries: [],
      seen: new Set(),
    };
    if (windowMs > 0) {
      s.timer = setTimeout(() => void this.finish(s), windowMs);
      s.timer.unref();
    }
    this.sessions.set(remoteId, s);
    this.log.info('trace-started', { remoteId, key, ref: view.image.ref, windowMs, group: s.group });
  }

  accessed(remoteId: string, path: string, sinceMountMs: number): void {
    const s = this.sessions.get(remoteId);
    const view = this.views.get(remoteId);
    if (!s || !view || s.seen.has(path) || s.entries.length >= MAX_ENTRIES_PER_TRACE) return;
    const ms = view.mountedAt + sinceMountMs - s.startMono;
    if (ms < 0 || (s.windowMs > 0 && ms > s.windowMs)) return;
    view.files ??= fileIndex(view.tree);
    const info = view.files.get(path);
    if (!info) return;
    s.seen.add(path);
    s.entries.push({ path, ...info, ms: Math.round(ms * 1000) / 1000 });
  }

  /** Finishes every open trace (saving what it has) and stops. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.sessions.values()].map((s) => this.finish(s)));
    await Promise.all([...this.saving]);
  }

  /** Waits for saves in flight (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.saving]);
  }

  private finish(s: Session): Promise<void> {
    if (this.sessions.get(s.remoteId) !== s) return Promise.resolve();
    this.sessions.delete(s.remoteId);
    clearTimeout(s.timer);
    if (s.entries.length === 0) {
      this.log.info('trace-empty', { remoteId: s.remoteId, ref: s.image.ref });
      return Promise.resolve();
    }
    // Events come from several FUSE threads; order by the addon's timestamps.
    const entries = [...s.entries].sort((a, b) => a.ms - b.ms);
    const body: TraceUpload = {
      version: TRACE_FORMAT_VERSION,
      ref: s.image.ref,
      manifestDigest: s.image.manifestDigest,
      platform: s.image.platform,
      ...(s.group ? { group: s.group } : {}),
      ...(this.opts.worker ? { worker: this.opts.worker } : {}),
      traces: [{ startedAt: s.startedAtWall, windowMs: s.windowMs, entries }],
    };
    const p = this.opts.spool.save(body).then(
      (file) => {
        this.log.info('trace-recorded', { file, ref: s.image.ref, manifest: s.image.manifestDigest, entries: entries.length });
        this.opts.onSaved?.();
      },
      (err: unknown) => this.log.warn('trace-save-failed', { ref: s.image.ref, err }),
    );
    this.saving.add(p);
    void p.finally(() => this.saving.delete(p));
    return p;
  }
}

/** path → {layer diffID, digest} of the files (regular, hardlink) of a merged tree. */
function fileIndex(tree: MergedTree): Map<string, FileInfo> {
  const out = new Map<string, FileInfo>();
  for (const e of tree.entries) {
    if (e.type !== 'reg' && e.type !== 'hardlink') continue;
    const info: FileInfo = {};
    const layer = e.layer === undefined ? undefined : tree.diffIDs[e.layer];
    if (layer) info.layer = layer;
    if (e.digest) info.digest = e.digest;
    out.set(e.path, info);
  }
  return out;
}
