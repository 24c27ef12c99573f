/**
 * The worker daemon's wiring: options resolved in one function, components started in a fixed
 * order and stopped in the reverse order (like containerd's plugin graph / stargz service).
 *
 * It runs the snapshotter (metadata + directories + gRPC socket) and the daemon's own API socket.
 * With `proxy` it also builds the lazy path, as `starlight mount` does (src/cli/mount.ts): CAS,
 * layer store, proxy client, content tracker, puller, FUSE views, and the image service that pulls
 * into containerd and resolves remote layers (images/service.ts), and the startup-trace recorder,
 * spool and reporter (trace/): auto mode traces the first `traceWindowMs` of every container start.
 *
 * Not here: argument parsing and signals (src/cli/snapshotter.ts), snapshot logic (snapshotter/).
 */
import { join } from 'node:path';
import { StarlightError } from '../errors.js';
import { nullLogger, type Logger } from '../log.js';
import { serveApi, type ApiServer, type DaemonStatus, type TraceRequest, type TraceStatus } from './api/server.js';
import type { ViewManager } from './fs/view.js';
import type { FuseViewManager } from './fs/fuse-views.js';
import type { FdHolderClient } from './fs/fd-holder.js';
import { DEFAULT_CONTAINERD_ADDRESS } from './images/containerd-client.js';
import { Graduations } from './images/graduation.js';
import { ImageRecords } from './images/records.js';
import { ImageService, type PullRequest, type PullResult } from './images/service.js';
import { openLazyPull, type LazyPull } from './pull/lazy-pull.js';
import { DEFAULT_READ_DEADLINE_MS } from './stream/content-tracker.js';
import { parseProxyUrls } from './stream/proxy-client.js';
import { mountsUnder, unmountAllUnder } from './fs/mount-table.js';
import { privateDir } from './private-dir.js';
import type { RemoteLayerResolver } from './snapshotter/remote.js';
import { serveSnapshotter, type SnapshotServer } from './snapshotter/server.js';
import { StarlightSnapshotter } from './snapshotter/snapshotter.js';
import { DEFAULT_TRACE_WINDOW_MS, TraceRecorder } from './trace/recorder.js';
import { TraceReporter } from './trace/reporter.js';
import { TraceSpool, type ReportResult } from './trace/spool.js';
import { TRACES_PATH } from './trace/types.js';

import { API_SOCKET_NAME, DEFAULT_ROOT, DEFAULT_SOCKET } from './defaults.js';
import { workerFamilies } from './metrics/collect.js';
import { renderFamilies } from '../prometheus.js';
import { type MetricsServer, serveMetrics } from './metrics/server.js';
export { API_SOCKET_NAME, DEFAULT_ROOT, DEFAULT_SOCKET };
/** Directory of recorded startup traces under the root (kept until uploaded). */
const TRACES_DIR = 'traces';
/** Worker state other local users must not read (content of every image, TOCs, traces): 0700. */
const PRIVATE_SUBDIRS = ['content', 'layers', 'images', TRACES_DIR];

/** The fd holder's socket and log under the root (issue 13: views survive daemon restarts). */
export const HOLDER_SOCKET_NAME = 'fuse-holder.sock';
const HOLDER_LOG_NAME = 'fuse-holder.log';

/** Directory of graduated (materialised) image trees under the root (issue 12). */
const GRADUATED_DIR = 'graduated';

export interface WorkerDaemonOptions {
  /** Unix socket to serve containerd's snapshots API on. Default DEFAULT_SOCKET. */
  socket?: string;
  /** State directory (snapshot metadata and dirs under `<root>/snapshotter`). Default DEFAULT_ROOT. */
  root?: string;
  /** URL of the Starlight proxy for lazy pulls (http[s]://host:port). Default: none (no lazy pulls). */
  proxy?: string;
  /** Bearer token for the proxy. Default: $STARLIGHT_PROXY_TOKEN or none. */
  proxyToken?: string;
  /** containerd's socket (for `starlight pull`). Default /run/containerd/containerd.sock. */
  containerdAddress?: string;
  /** The daemon's API socket. Default `<root>/daemon.sock`. */
  apiSocket?: string;
  /** Name of our proxy plugin in containerd's config. Default 'starlight'. */
  snapshotterName?: string;
  /** Read deadline of lazy views, ms. Default 60 000. */
  readDeadlineMs?: number;
  /** Auto trace mode: record the first this-many ms of every container start; 0 = off. Default 30 000. */
  traceWindowMs?: number;
  /** 'auto': upload finished traces to the proxy (with retries); 'manual': only `starlight report`. Default 'auto'. */
  traceUpload?: 'auto' | 'manual';
  /** Group label of auto-mode traces. Default none. */
  traceGroup?: string;
  /** Opaque worker id sent with traces. Default none. */
  workerId?: string;
  /**
   * Issue 12: materialise complete images under `<root>/graduated` so that new containers run on a
   * plain overlay lowerdir instead of the lazy view. Default true.
   */
  graduate?: boolean;
  /** A graduated image's lazy view is unmounted once no mount has used it for this long, ms. Default 60 s. */
  viewIdleMs?: number;
  /** Lazy-layer provider; requires `views`. Default: none, or the image service when `proxy` is set. */
  resolver?: RemoteLayerResolver;
  views?: ViewManager;
  /**
   * On stop, unmount every lazy view and end the fd holder. Default false: a stop leaves the views
   * mounted and held, and the next daemon adopts them (running containers keep their files).
   */
  shutdownViews?: boolean;
  log?: Logger;
  /** Serve Prometheus metrics on this host:port (GET /metrics). Default: none. */
  metricsAddress?: string;
}

export interface ResolvedDaemonOptions {
  socket: string;
  root: string;
  snapshotterRoot: string;
  proxy: URL | undefined;
  /** Every --proxy replica (proxy is the first). */
  proxies: URL[];
  proxyToken: string | undefined;
  containerdAddress: string;
  apiSocket: string;
  snapshotterName: string;
  readDeadlineMs: number;
  traceWindowMs: number;
  traceUpload: 'auto' | 'manual';
  traceGroup: string | undefined;
  workerId: string | undefined;
  graduate: boolean;
  viewIdleMs: number | undefined;
  resolver: RemoteLayerResolver | undefined;
  views: ViewManager | undefined;
  shutdownViews: boolean;
  log: Logger;
  metricsAddress: string | undefined;
}

export function resolveDaemonOptions(o: WorkerDaemonOptions): ResolvedDaemonOptions {
  const socket = o.socket ?? DEFAULT_SOCKET;
  const root = o.root ?? DEFAULT_ROOT;
  for (const [name, v] of [['socket', socket], ['root', root]] as const) {
    if (!v.startsWith('/')) throw new StarlightError('SL_ERR_CONFIG', `--${name} must be an absolute path, got ${JSON.stringify(v)}`, { details: { [name]: v } });
  }
  // sockaddr_un.sun_path holds 108 bytes including the NUL.
  if (Buffer.byteLength(socket) > 107) throw new StarlightError('SL_ERR_CONFIG', `--socket path is longer than 107 bytes: ${socket}`, { details: { socket } });
  // One proxy, or replicas comma-separated (proxy-client.ts fails over between them).
  const proxies = o.proxy !== undefined ? parseProxyUrls(o.proxy) : undefined;
  const proxy = proxies?.[0];
  if (o.resolver && !o.views) throw new StarlightError('SL_ERR_CONFIG', 'a remote-layer resolver needs a ViewManager');
  const apiSocket = o.apiSocket ?? join(root, API_SOCKET_NAME);
  if (Buffer.byteLength(apiSocket) > 107) throw new StarlightError('SL_ERR_CONFIG', `--api-socket path is longer than 107 bytes: ${apiSocket}`, { details: { apiSocket } });
  const readDeadlineMs = o.readDeadlineMs ?? DEFAULT_READ_DEADLINE_MS;
  if (!(readDeadlineMs > 0)) throw new StarlightError('SL_ERR_CONFIG', `read deadline must be positive, got ${readDeadlineMs} ms`);
  const traceWindowMs = o.traceWindowMs ?? DEFAULT_TRACE_WINDOW_MS;
  if (!(traceWindowMs >= 0)) throw new StarlightError('SL_ERR_CONFIG', `trace window must be ≥ 0 ms (0 = auto tracing off), got ${traceWindowMs}`);
  const traceUpload = o.traceUpload ?? 'auto';
  if (traceUpload !== 'auto' && traceUpload !== 'manual') throw new StarlightError('SL_ERR_CONFIG', `trace upload must be 'auto' or 'manual', got ${JSON.stringify(traceUpload)}`);
  return {
    socket,
    root,
    snapshotterRoot: join(root, 'snapshotter'),
    proxy,
    proxies: proxies ?? [],
    proxyToken: o.proxyToken ?? process.env.STARLIGHT_PROXY_TOKEN,
    containerdAddress: o.containerdAddress ?? DEFAULT_CONTAINERD_ADDRESS,
    apiSocket,
    snapshotterName: o.snapshotterName ?? 'starlight',
    readDeadlineMs,
    traceWindowMs,
    traceUpload,
    traceGroup: o.traceGroup || undefined,
    workerId: o.workerId || undefined,
    graduate: o.graduate ?? true,
    viewIdleMs: o.viewIdleMs,
    resolver: o.resolver,
    views: o.views,
    shutdownViews: o.shutdownViews ?? false,
    log: o.log ?? nullLogger,
    metricsAddress: o.metricsAddress,
  };
}

interface Step {
  name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export class WorkerDaemon {
  private readonly started: Step[] = [];
  private closing: Promise<void> | undefined;
  snapshotter: StarlightSnapshotter | undefined;
  server: SnapshotServer | undefined;
  api: ApiServer | undefined;
  metrics: MetricsServer | undefined;
  images: ImageService | undefined;
  private lazy: LazyPull | undefined;
  private views: ViewManager | undefined;
  private resolver: RemoteLayerResolver | undefined;
  private traces: { recorder: TraceRecorder; reporter: TraceReporter; spool: TraceSpool } | undefined;
  /** Our FUSE views and their fd holder, when this daemon built them (not with options.views). */
  private fuse: { views: FuseViewManager; holder: FdHolderClient | undefined } | undefined;
  /** Mountpoints a previous daemon left held: the snapshotter's stale-mount cleanup keeps them. */
  private heldMounts = new Set<string>();

  private constructor(readonly opts: ResolvedDaemonOptions) {}

  /** Start order; stop runs the started steps in reverse. */
  private steps(): Step[] {
    const o = this.opts;
    this.views = o.views;
    this.resolver = o.resolver;
    return [
      {
        name: 'lazy-pull',
        start: async () => {
          if (!o.proxy) return;
          const log = o.log.child({ component: 'images' });
          for (const d of PRIVATE_SUBDIRS) await privateDir(join(o.root, d));
          const lazy = (this.lazy = await openLazyPull({ root: o.root, proxy: o.proxies.map((u) => u.href).join(','), token: o.proxyToken, readDeadlineMs: o.readDeadlineMs, warmConnection: true, log }));
          const { layers, client, tracker, puller } = lazy;
          if (!this.views) {
            // Loaded only here: the native addon is not needed without a proxy.
            const { FuseViewManager } = await import('./fs/fuse-views.js');
            const { FuseAddonLoader } = await import('./fs/native.js');
            const { FdHolderClient } = await import('./fs/fd-holder.js');
            const fsLog = o.log.child({ component: 'fs' });
            const loader = new FuseAddonLoader();
            const holder = await FdHolderClient.connect(loader, { socket: join(o.root, HOLDER_SOCKET_NAME), readDeadlineMs: o.readDeadlineMs, logFile: join(o.root, HOLDER_LOG_NAME) }).catch((err: unknown) => {
              fsLog.warn('fuse-holder-unavailable', { err, hint: 'lazy views will not survive a daemon restart' });
              return undefined;
            });
            const views = new FuseViewManager({ log: fsLog, handleSignals: false, loader, holder });
            if (holder) {
              const held = holder.takeAll();
              views.adoptFrom(held);
              this.heldMounts = new Set(views.heldMountpoints());
              fsLog.info('fuse-holder-attached', { pid: holder.pid, held: held.size });
            }
            this.views = views;
            this.fuse = { views, holder };
          }
          const { buildInodeTableSliced } = await import('./fs/inodes.js');
          const records = await new ImageRecords(join(o.root, 'images'), layers, { log }).open();
          const tlog = o.log.child({ component: 'trace' });
          const spool = await new TraceSpool(join(o.root, TRACES_DIR)).open();
          const reporter = new TraceReporter({ spool, post: (body) => client.postJson(TRACES_PATH, body), log: tlog });
          const recorder = new TraceRecorder({
            spool,
            autoWindowMs: o.traceWindowMs,
            autoGroup: o.traceGroup,
            worker: o.workerId,
            onSaved: o.traceUpload === 'auto' ? () => reporter.schedule() : undefined,
            log: tlog,
          });
          this.traces = { recorder, reporter, spool };
          this.images = await new ImageService({ puller, tracker, layers, records, containerdAddress: o.containerdAddress,
            snapshotterName: o.snapshotterName,
            observer: recorder,
            // The snapshotter starts after this step; it exists by the time a pull asks.
            warmView: (key) => this.snapshotter?.warmView(key),
            buildTable: (tree) => buildInodeTableSliced(tree, (d) => tracker.locate(d)),
            graduations: o.graduate ? await new Graduations(join(o.root, GRADUATED_DIR), log.child({ component: 'graduation' })).open() : undefined,
            // Issue 12: one copy per content once no view (whose inode table names blob paths) is mounted.
            relocations: lazy.store,
            viewsIdle: () => this.snapshotter !== undefined && this.fuse !== undefined && this.snapshotter.mountedViews() === 0 && this.fuse.views.mounted().length === 0 && this.fuse.views.heldMountpoints().length === 0,
            log,
          }).open();
          this.resolver ??= this.images;
          // Traces left by an earlier run (upload failed or daemon stopped first).
          if (o.traceUpload === 'auto' && (await spool.pending()).traces.length > 0) reporter.schedule();
        },
        stop: async () => {
          if (this.fuse?.holder) {
            if (o.shutdownViews) this.fuse.holder.quit();
            else this.fuse.holder.close();
          }
          await this.traces?.recorder.close();
          await this.traces?.reporter.close();
          this.images?.close();
          await this.lazy?.close();
        },
      },
      {
        name: 'snapshotter',
        start: async () => {
          this.snapshotter = await StarlightSnapshotter.open({ root: o.snapshotterRoot, resolver: this.resolver, views: this.views, keepMounts: this.heldMounts, viewIdleMs: o.viewIdleMs, log: o.log.child({ component: 'snapshotter' }) });
        },
        stop: async () => this.snapshotter?.close(),
      },
      {
        name: 'restore-views',
        start: async () => {
          await this.snapshotter!.restoreViews();
          await this.fuse?.views.discardUnadopted();
        },
        stop: async () => {},
      },
      {
        name: 'grpc',
        start: async () => {
          this.server = await serveSnapshotter(this.snapshotter!, o.socket);
        },
        stop: async () => this.server?.close(),
      },
      {
        name: 'api',
        start: async () => {
          this.api = await serveApi(
            { pull: (r) => this.pull(r), status: () => this.status(), trace: (r) => this.trace(r), report: () => this.report() },
            o.apiSocket,
            o.log.child({ component: 'api' }),
          );
        },
        stop: async () => this.api?.close(),
      },
      {
        name: 'metrics',
        start: async () => {
          if (o.metricsAddress !== undefined) this.metrics = await serveMetrics(o.metricsAddress, () => this.metricsText(), o.log.child({ component: 'metrics' }));
        },
        stop: async () => this.metrics?.close(),
      },
      {
        name: 'views',
        start: async () => {},
        // A plain stop (restart, upgrade) leaves our views mounted and held for the next daemon.
        stop: async () => (this.fuse && !o.shutdownViews ? this.fuse.views.release() : this.views?.close()),
      },
    ];
  }

  /** `starlight pull` through the API. */
  async pull(req: PullRequest): Promise<PullResult> {
    if (!this.images) {
      throw new StarlightError('SL_ERR_CONFIG', `the daemon at ${this.opts.socket} runs without --proxy, so it cannot pull lazily; restart it with --proxy URL`);
    }
    return this.images.pull(req);
  }

  private needTraces(): NonNullable<WorkerDaemon['traces']> {
    if (!this.traces) {
      throw new StarlightError('SL_ERR_CONFIG', `the daemon at ${this.opts.socket} runs without --proxy, so it has no lazy views to trace; restart it with --proxy URL`);
    }
    return this.traces;
  }

  /** `starlight trace on|off|status`. */
  async trace(req: TraceRequest | undefined): Promise<TraceStatus> {
    const t = this.needTraces();
    const state = req === undefined ? t.recorder.state() : await t.recorder.setManual(req.on, req.group);
    return { ...state, upload: this.opts.traceUpload, pending: (await t.spool.pending()).traces.length };
  }

  /** `starlight report`: one upload round of every recorded trace. */
  async report(): Promise<ReportResult> {
    const t = this.needTraces();
    await t.recorder.flush();
    return t.reporter.report();
  }

  /** Prometheus text of the daemon's metrics (src/worker/metrics/collect.ts). */
  async metricsText(): Promise<string> {
    const st = await this.status();
    return renderFamilies(
      workerFamilies({ images: st.images, tracker: this.lazy?.tracker.counters, views: this.views?.counters?.(), viewsServed: st.views.length, mounts: st.mounts.length }),
    );
  }

  async status(): Promise<DaemonStatus> {
    const fuseOps = this.views?.counters?.().native;
    return {
      images: this.images?.status() ?? [],
      views: [...(this.images?.viewsServed ?? [])],
      mounts: await mountsUnder(this.opts.root),
      timings: this.images?.timings.all() ?? [],
      ...(fuseOps ? { fuseOps } : {}),
    };
  }

  static async start(options: WorkerDaemonOptions): Promise<WorkerDaemon> {
    const d = new WorkerDaemon(resolveDaemonOptions(options));
    try {
      for (const step of d.steps()) {
        await step.start();
        d.started.push(step);
      }
    } catch (err) {
      await d.close();
      throw err;
    }
    d.opts.log.info('worker-daemon-started', { socket: d.opts.socket, api: d.opts.apiSocket, root: d.opts.root, proxy: d.opts.proxy?.href });
    return d;
  }

  /** Stops everything in reverse start order; errors are logged, the rest still stops. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // First, so that no later step (nor a failed start) unmounts views the next daemon adopts.
      if (this.fuse && !this.opts.shutdownViews) await this.fuse.views.release().catch((err: unknown) => this.opts.log.error('worker-daemon-stop-failed', { step: 'release-views', err }));
      for (const step of this.started.reverse()) {
        await step.stop().catch((err: unknown) => this.opts.log.error('worker-daemon-stop-failed', { step: step.name, err }));
      }
      this.started.length = 0;
      this.opts.log.info('worker-daemon-stopped', {});
    })();
    return this.closing;
  }
}

/**
 * `starlight snapshotter --shutdown-views`: the explicit way to unmount every lazy view of `root`
 * (a plain stop leaves them mounted for the next daemon). Ends the fd holder, then unmounts what is
 * mounted under the snapshotter's directory. Run it with no daemon running on `root`.
 */
export async function shutdownViews(root: string): Promise<{ held: number; unmounted: string[] }> {
  const { FuseAddonLoader } = await import('./fs/native.js');
  const { FdHolderClient } = await import('./fs/fd-holder.js');
  const held = FdHolderClient.end(new FuseAddonLoader(), join(root, HOLDER_SOCKET_NAME));
  const { unmounted, failed } = await unmountAllUnder(join(root, 'snapshotter'));
  if (failed.length > 0) throw new StarlightError('SL_ERR_FS_UNAVAILABLE', `cannot unmount ${failed.map((f) => f.path).join(', ')}: ${failed[0].error}`, { details: { failed } });
  return { held, unmounted };
}
