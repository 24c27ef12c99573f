/**
 * The snapshotter contract suite against StarlightSnapshotter directly and through the gRPC
 * adapter + client on a unix socket. Real bind/overlay mounts: needs root (skipped otherwise).
 */
import test from 'ava';
import { join } from 'node:path';
import { StarlightSnapshotter } from '../../../src/worker/snapshotter/snapshotter.js';
import { SnapshotsClient } from '../../../src/worker/snapshotter/grpc-client.js';
import { serveSnapshotter } from '../../../src/worker/snapshotter/server.js';
import { snapshotterSuite } from '../../conformance/snapshotter-suite.js';
import { tempDir } from '../../helpers/tmp.js';

const isRoot = process.getuid?.() === 0;
const run = isRoot ? test : (test.skip as typeof test);

snapshotterSuite(
  run,
  'direct',
  async (t, root) => {
    const sn = await StarlightSnapshotter.open({ root });
    t.teardown(() => sn.close());
    return sn;
  },
  (t) => tempDir(t),
);

snapshotterSuite(
  run,
  'grpc',
  async (t, root) => {
    const sn = await StarlightSnapshotter.open({ root });
    const server = await serveSnapshotter(sn, join(root, 'snapshotter.sock'));
    const client = new SnapshotsClient({ socket: server.socket });
    t.teardown(async () => {
      await client.close();
      await server.close();
      await sn.close();
    });
    return client;
  },
  (t) => tempDir(t),
);
