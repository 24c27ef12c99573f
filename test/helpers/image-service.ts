/**
 * An ImageService over stores a test built, pulling from `proxy` (a deltaServer URL, or nothing: an
 * unreachable port), without containerd (its socket does not exist: only the CRI-style resolve() path
 * and the views pull). Closed, with its proxy client, at teardown.
 */
import type { ExecutionContext } from 'ava';
import { join } from 'node:path';
import type { Logger } from '../../src/log.js';
import type { ImageRecords } from '../../src/worker/images/records.js';
import { ImageService } from '../../src/worker/images/service.js';
import type { LayerStore } from '../../src/worker/pull/layer-store.js';
import { Puller } from '../../src/worker/pull/puller.js';
import type { ContentTracker } from '../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../src/worker/stream/proxy-client.js';

export interface TestServiceOptions {
  /** Holds the (absent) containerd socket. */
  root: string;
  layers: LayerStore;
  records: ImageRecords;
  tracker: ContentTracker;
  /** Default: a port nothing listens on. */
  proxy?: string;
  releaseGraceMs?: number;
  log?: Logger;
}

export async function openImageService(t: ExecutionContext, o: TestServiceOptions): Promise<ImageService> {
  const client = new ProxyClient({ url: o.proxy ?? 'http://127.0.0.1:9' });
  t.teardown(() => client.close());
  const { layers, records, tracker } = o;
  const service = await new ImageService({
    puller: new Puller({ client, tracker, layers, lowerTreesDelayMs: -1 }),
    tracker,
    layers,
    records,
    containerdAddress: join(o.root, 'no-containerd.sock'),
    ...(o.releaseGraceMs !== undefined ? { releaseGraceMs: o.releaseGraceMs } : {}),
    ...(o.log ? { log: o.log } : {}),
  }).open();
  t.teardown(() => service.close());
  return service;
}
