/**
 * The worker daemon's wiring: options resolved in one function, components started in a fixed
 * order and stopped in the reverse order (like containerd's plugin graph / stargz service).
 *
 * Today it runs the snapshotter (metadata + directories + gRPC socket). The lazy path plugs in by
 * passing a RemoteLayerResolver and a ViewManager (stream receiver + FUSE views, built by the caller
 * from `proxy`), which adds "restore views" to the start order.
 *
 * Not here: argument parsing and signals (src/cli/snapshotter.ts), snapshot logic (snapshotter/).
 */
import { join } from 'node:path';
import { StarlightError } from '../errors.js';
import { nullLogger, type Logger } from '../log.js';
import type { ViewManager } from './fs/view.js';
import type { RemoteLayerResolver } from './snapshotter/remote.js';
import { serveSnapshotter, type SnapshotServer } from './snapshotter/server.js';
import { StarlightSnapshotter } from './snapshotter/snapshotter.js';

/** Default socket; containerd's config points `[proxy_plugins.starlight] address` here. */
export const DEFAULT_SOCKET = '/run/starlight/starlight-snapshotter.sock';
/** Default state directory. */
export const DEFAULT_ROOT = '/var/lib/starlight';

export interface WorkerDaemonOptions {
  /** Unix socket to serve containerd's snapshots API on. Default DEFAULT_SOCKET. */
  socket?: string;
  /** State directory (snapshot metadata and dirs under `<root>/snapshotter`). Default DEFAULT_ROOT. */
  root?: string;
  /** URL of the Starlight proxy for lazy pulls (http[s]://host:port). Default: none (no lazy pulls). */
  proxy?: string;
  /** Lazy-layer provider; requires `views`. Default: none. */
  resolver?: RemoteLayerResolver;
  views?: ViewManager;
  log?: Logger;
}

export interface ResolvedDaemonOptions {
  socket: string;
  root: string;
  snapshotterRoot: string;
  proxy: URL | undefined;
  resolver: RemoteLayerResolver | undefined;
  views: ViewManager | undefined;
  log: Logger;
}

export function resolveDaemonOptions(o: WorkerDaemonOptions): ResolvedDaemonOptions {
  const socket = o.socket ?? DEFAULT_SOCKET;
  const root = o.root ?? DEFAULT_ROOT;
  for (const [name, v] of [['socket', socket], ['root', root]] as const) {
    if (!v.startsWith('/')) throw new StarlightError('SL_ERR_CONFIG', `--${name} must be an absolute path, got ${JSON.stringify(v)}`, { details: { [name]: v } });
  }
  // sockaddr_un.sun_path holds 108 bytes including the NUL.
  if (Buffer.byteLength(socket) > 107) throw new StarlightError('SL_ERR_CONFIG', `--socket path is longer than 107 bytes: ${socket}`, { details: { socket } });
  let proxy: URL | undefined;
  if (o.proxy !== undefined) {
    try {
      proxy = new URL(o.proxy.includes('://') ? o.proxy : `http://${o.proxy}`);
    } catch (cause) {
      throw new StarlightError('SL_ERR_CONFIG', `--proxy is not a URL: ${JSON.stringify(o.proxy)}`, { cause, details: { proxy: o.proxy } });
    }
  }
  if (o.resolver && !o.views) throw new StarlightError('SL_ERR_CONFIG', 'a remote-layer resolver needs a ViewManager');
  return { socket, root, snapshotterRoot: join(root, 'snapshotter'), proxy, resolver: o.resolver, views: o.views, log: o.log ?? nullLogger };
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

  private constructor(readonly opts: ResolvedDaemonOptions) {}

  /** Start order; stop runs the started steps in reverse. */
  private steps(): Step[] {
    const o = this.opts;
    return [
      {
        name: 'snapshotter',
        start: async () => {
          this.snapshotter = await StarlightSnapshotter.open({ root: o.snapshotterRoot, resolver: o.resolver, views: o.views, log: o.log.child({ component: 'snapshotter' }) });
        },
        stop: async () => this.snapshotter?.close(),
      },
      {
        name: 'restore-views',
        start: async () => this.snapshotter!.restoreViews(),
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
        name: 'views',
        start: async () => {},
        stop: async () => o.views?.close(),
      },
    ];
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
    d.opts.log.info('worker-daemon-started', { socket: d.opts.socket, root: d.opts.root, proxy: d.opts.proxy?.href });
    return d;
  }

  /** Stops everything in reverse start order; errors are logged, the rest still stops. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const step of this.started.reverse()) {
        await step.stop().catch((err: unknown) => this.opts.log.error('worker-daemon-stop-failed', { step: step.name, err }));
      }
      this.started.length = 0;
      this.opts.log.info('worker-daemon-stopped', {});
    })();
    return this.closing;
  }
}
