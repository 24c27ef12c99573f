/**
 * Issue 19: a remote Prepare in containerd's Prepare chain must not wait for node's thread pool.
 * During a pull the pool is busy with the stream's writes, and each async fs call of the Prepare
 * also waited for an event-loop turn behind the merge's slices: 17–22 ms per new layer in the
 * daemon, ~2 ms of it work (docs/design-notes.md, issue 19 session 14). Here the pool is blocked
 * outright (every thread in an open() of a FIFO nobody writes), so a Prepare that needs it hangs.
 */
import test from 'ava';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StarlightError, hasCode } from '../../../src/errors.js';
import type { ViewManager, ViewRequest } from '../../../src/worker/fs/view.js';
import { LABEL_REMOTE, LABEL_SNAPSHOT_REF, LABEL_STARLIGHT_VIEW } from '../../../src/worker/snapshotter/labels.js';
import type { RemoteLayerResolver } from '../../../src/worker/snapshotter/remote.js';
import { StarlightSnapshotter } from '../../../src/worker/snapshotter/snapshotter.js';
import { blockPool } from '../../helpers/block-pool.js';
import { tempDir } from '../../helpers/tmp.js';

/** How long a Prepare that needs no I/O may take here (generous: a loaded test machine), ms. */
const PREPARE_MS = 2_000;
/** How long the probe waits to see that the pool is blocked, ms. */
const PROBE_MS = 200;

/** No view is mounted in this test: committed remote snapshots need none until Mounts. */
const noViews: ViewManager = {
  mount: () => Promise.reject(new StarlightError('SL_ERR_SNAPSHOT_UNAVAILABLE', 'no views in this test')),
  check: () => Promise.resolve(),
  unmount: () => Promise.resolve(),
  close: () => Promise.resolve(),
};

/** Provides every layer it is asked for, at once (as ImageService does from a checked header). */
const resolver: RemoteLayerResolver = {
  resolve: async (req) => ({ remoteId: `m/${req.hints.chainId}` }),
  viewRequest: (): Promise<ViewRequest> => Promise.reject(new StarlightError('SL_ERR_SNAPSHOT_NOT_FOUND', 'no views in this test')),
};

const labels = (chainId: string) => ({ [LABEL_SNAPSHOT_REF]: chainId, [LABEL_STARLIGHT_VIEW]: 'm' });

test('a remote Prepare completes while the thread pool is blocked', async (t) => {
  const base = tempDir(t);
  const sn = await StarlightSnapshotter.open({ root: join(base, 'root'), resolver, views: noViews });
  t.teardown(() => sn.close());
  const release = await blockPool(base);
  t.teardown(release);

  // The pool is really blocked: an fs call does not complete.
  const probe = stat(base).then(() => 'done');
  t.is(await Promise.race([probe, sleep(PROBE_MS, 'blocked')]), 'blocked', 'the thread pool is blocked');

  const within = <T>(p: Promise<T>) => Promise.race([p.then(() => 'settled', (err: unknown) => err), sleep(PREPARE_MS, 'hung')]);
  // containerd's chain: the bottom layer, then one on top of it (each answered already-exists).
  const e1 = await within(sn.prepare('default/1/extract-1 sha256:a', '', { labels: labels('sha256:a') }));
  t.true(hasCode(e1, 'SL_ERR_SNAPSHOT_EXISTS'), `bottom layer: ${String(e1)}`);
  const e2 = await within(sn.prepare('default/2/extract-2 sha256:b', 'sha256:a', { labels: labels('sha256:b') }));
  t.true(hasCode(e2, 'SL_ERR_SNAPSHOT_EXISTS'), `layer on top: ${String(e2)}`);

  await release();
  t.is(await probe, 'done');
  // The same snapshots as before: committed, named by chain ID, with the remote label and parent.
  const b = await sn.stat('sha256:b');
  t.is(b.kind, 'committed');
  t.is(b.parent, 'sha256:a');
  t.is(b.labels[LABEL_REMOTE], 'm/sha256:b');
  // Misuse still fails: a parent that does not exist is not taken lazily (create reports it).
  await t.throwsAsync(sn.prepare('default/3/extract-3 sha256:c', 'sha256:nope', { labels: labels('sha256:c') }), { message: /sha256:nope/ });
});
