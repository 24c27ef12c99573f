/**
 * The one wiring of a worker's lazy-pull stack under a state root, shared by the snapshotter daemon
 * and `starlight mount`: content store (`<root>/content`, 0700, durable), layer store (`<root>/layers`), proxy
 * client, content tracker (reads wait here, out-of-order fetches go to the proxy) and the puller.
 * The two stores share one batched syncfs when they are on one file system (cas/syncfs.ts).
 *
 * Not here: views (fs/), containerd records (images/), traces (trace/).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { LocalContentStore } from '../cas/store.js';
import { batchedSyncfs, syncFileSystem } from '../cas/syncfs.js';
import { privateDir } from '../private-dir.js';
import { ContentTracker } from '../stream/content-tracker.js';
import { ProxyClient } from '../stream/proxy-client.js';
import { LayerStore } from './layer-store.js';
import { Puller } from './puller.js';

export interface LazyPullOptions {
  /** State directory (the daemon's --root, or `starlight mount --root`). */
  root: string;
  /** Proxy base URL. */
  proxy: string;
  /** Bearer token for the proxy, if it wants one. */
  token?: string;
  /** A read waiting longer than this for its content fails with EIO, ms. */
  readDeadlineMs: number;
  /** Keep a connection to the proxy open ahead of the next pull (ProxyClientOptions.warm); default false. */
  warmConnection?: boolean;
  log: Logger;
}

export interface LazyPull {
  /** The CAS (the tracker's store), for what only it offers (relocated content, issue 12). */
  store: LocalContentStore;
  layers: LayerStore;
  client: ProxyClient;
  tracker: ContentTracker;
  puller: Puller;
  /**
   * Fails waiting reads (canceled) and closes the proxy connections. (What a crash or power cut
   * left in the store is re-verified by its next open: cas/store.ts, the durable log.)
   */
  close(): Promise<void>;
}

export async function openLazyPull(o: LazyPullOptions): Promise<LazyPull> {
  for (const d of ['content', 'layers']) await privateDir(join(o.root, d));
  // One syncfs per pull for its content and its TOCs when both are on one file system (the usual
  // case: one --root); else each store flushes its own.
  const [content, layerRoot] = [join(o.root, 'content'), join(o.root, 'layers')];
  const sameFs = (await stat(content)).dev === (await stat(layerRoot)).dev;
  const shared = sameFs ? batchedSyncfs(syncFileSystem) : undefined;
  const store = await new LocalContentStore(content, { log: o.log, ...(shared ? { syncfs: shared } : {}) }).open();
  const layers = await new LayerStore(layerRoot, { log: o.log, syncfs: shared ?? batchedSyncfs(syncFileSystem) }).open();
  const client = new ProxyClient({ url: o.proxy, token: o.token, warm: o.warmConnection === true });
  const tracker = new ContentTracker(store, { readDeadlineMs: o.readDeadlineMs, fetchItem: (digest, signal) => client.content(digest, signal), log: o.log });
  const puller = new Puller({ client, tracker, layers, log: o.log });
  return {
    store,
    layers,
    client,
    tracker,
    puller,
    async close() {
      tracker.close();
      client.close();
    },
  };
}
