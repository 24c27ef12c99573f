/**
 * Lazy (remote) layers through StarlightSnapshotter with a bind-mount ViewManager standing in for the
 * FUSE views (as stargz tests its snapshotter with bindFs, snapshot_test.go:376–451). Real mounts:
 * needs root. Covers: Prepare → already-exists + committed remote snapshot found the way containerd
 * finds it; mixed chains; check on every Mounts (unavailable); unmount on remove/close; restart.
 */
import test, { type ExecutionContext } from 'ava';
import { cp, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StarlightError, hasCode } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import type { ViewManager, ViewRequest } from '../../../src/worker/fs/view.js';
import { LABEL_REMOTE, LABEL_SNAPSHOT_REF, LABEL_STARLIGHT_VIEW } from '../../../src/worker/snapshotter/labels.js';
import { mountsUnder } from '../../../src/worker/fs/mount-table.js';
import type { RemoteLayerRequest, RemoteLayerResolver } from '../../../src/worker/snapshotter/remote.js';
import { StarlightSnapshotter } from '../../../src/worker/snapshotter/snapshotter.js';
import type { Info } from '../../../src/worker/snapshotter/types.js';
import { mountAll, unmount, withMounted } from '../../conformance/mount-util.js';
import { tempDir } from '../../helpers/tmp.js';

const run = process.getuid?.() === 0 ? test : (test.skip as typeof test);

/** Views are plain directories, bind-mounted read-only. */
class BindViews implements ViewManager {
  readonly sources = new WeakMap<ViewRequest, string>();
  readonly mounted = new Set<string>();
  broken = new Set<string>();
  async mount(mountpoint: string, req: ViewRequest): Promise<void> {
    await mountAll([{ type: 'bind', source: this.sources.get(req)!, options: ['ro', 'rbind'] }], mountpoint);
    this.mounted.add(mountpoint);
  }
  async check(mountpoint: string): Promise<void> {
    if (!this.mounted.has(mountpoint) || this.broken.has(mountpoint)) {
      throw new StarlightError('SL_ERR_SNAPSHOT_UNAVAILABLE', `view ${mountpoint} is gone`);
    }
  }
  async unmount(mountpoint: string): Promise<void> {
    if (!this.mounted.delete(mountpoint)) return;
    await unmount(mountpoint);
  }
  async close(): Promise<void> {
    for (const m of [...this.mounted]) await this.unmount(m);
  }
}

/** Provides chain IDs listed in `chains` (chainId → dir with the merged content of the chain). */
class FakeResolver implements RemoteLayerResolver {
  readonly requests: RemoteLayerRequest[] = [];
  constructor(
    private readonly views: BindViews,
    readonly chains: Map<string, string>,
  ) {}
  async resolve(req: RemoteLayerRequest) {
    this.requests.push(req);
    return this.chains.has(req.hints.chainId) ? { remoteId: `view-1/${req.hints.chainId}` } : null;
  }
  async viewRequest(remoteId: string): Promise<ViewRequest> {
    const dir = this.chains.get(remoteId.slice('view-1/'.length));
    if (!dir) throw new StarlightError('SL_ERR_SNAPSHOT_NOT_FOUND', `no view ${remoteId}`);
    const req: ViewRequest = { tree: { diffIDs: [], entries: [] }, content: { locate: () => null, waitFor: () => Promise.reject(new Error('n/a')) } };
    this.views.sources.set(req, dir);
    return req;
  }
}

async function setup(t: ExecutionContext) {
  const base = tempDir(t);
  const work = join(base, 'work');
  await mkdir(work);
  // The "image": two layers; the view of chain c2 shows both (merged), c1 only the first.
  const c1 = join(base, 'chain1');
  const c2 = join(base, 'chain2');
  await mkdir(join(c1, 'etc'), { recursive: true });
  await writeFile(join(c1, 'etc/base'), 'base\n');
  await cp(c1, c2, { recursive: true });
  await writeFile(join(c2, 'etc/top'), 'top\n');
  const views = new BindViews();
  const resolver = new FakeResolver(views, new Map([['sha256:c1', c1], ['sha256:c2', c2]]));
  const root = join(base, 'root');
  const logs: string[] = [];
  const log = createLogger({ level: 'info', sink: (l) => logs.push(l) });
  const open = async () => {
    const sn = await StarlightSnapshotter.open({ root, resolver, views, log });
    t.teardown(() => sn.close());
    return sn;
  };
  t.teardown(() => views.close());
  return { base, work, views, resolver, root, open, logs };
}

const prepLabels = (chain: string) => ({ [LABEL_SNAPSHOT_REF]: chain, [LABEL_STARLIGHT_VIEW]: 'view-1' });

/** What containerd's metadata layer does after Prepare returns AlreadyExists. */
async function findCommitted(sn: StarlightSnapshotter, target: string, parent: string): Promise<Info | undefined> {
  let found: Info | undefined;
  await sn.walk((i) => {
    if (i.kind === 'committed' && i.labels[LABEL_SNAPSHOT_REF] === target && i.parent === parent) found = i;
  }, [`labels."${LABEL_SNAPSHOT_REF}"==${target},parent==${parent}`]);
  return found;
}

run('prepare of a remote layer creates the committed snapshot and reports already-exists', async (t) => {
  const s = await setup(t);
  const sn = await s.open();
  const e1 = await t.throwsAsync(sn.prepare('default/1/extract-1 sha256:c1', '', { labels: prepLabels('sha256:c1') }));
  t.true(hasCode(e1, 'SL_ERR_SNAPSHOT_EXISTS'));
  const info = await findCommitted(sn, 'sha256:c1', '');
  t.truthy(info, 'containerd finds the committed snapshot by Walk');
  t.is(info!.labels[LABEL_REMOTE], 'view-1/sha256:c1');
  t.true(s.logs.some((l) => JSON.parse(l).msg === 'remote-snapshot-prepared'), 'stable log key');
  const updated = await sn.update({ name: 'sha256:c1', labels: { 'containerd.io/snapshot/x': 'y' } });
  t.is(updated.labels[LABEL_REMOTE], 'view-1/sha256:c1', 'containerd replacing labels keeps our remote label');
  await t.throwsAsync(sn.stat('default/1/extract-1 sha256:c1'), undefined, 'no active key left behind');
  const e2 = await t.throwsAsync(sn.prepare('default/2/extract-2 sha256:c2', 'sha256:c1', { labels: prepLabels('sha256:c2') }));
  t.true(hasCode(e2, 'SL_ERR_SNAPSHOT_EXISTS'));
  t.is(s.resolver.requests[1]!.parentRemoteId, 'view-1/sha256:c1', 'resolver sees the remote parent');
  t.truthy(await findCommitted(sn, 'sha256:c2', 'sha256:c1'));
  // Unknown layers fall back to a normal active snapshot.
  const m = await sn.prepare('default/3/extract-3 sha256:zz', 'sha256:c2', { labels: prepLabels('sha256:zz') });
  t.is(m[0]!.type, 'overlay');
  t.is(s.views.mounted.size, 1, 'only the topmost remote view is mounted');
  // Without hints there is no resolver call.
  const before = s.resolver.requests.length;
  await sn.prepare('plain', '', { labels: { [LABEL_SNAPSHOT_REF]: 'sha256:c1' } });
  t.is(s.resolver.requests.length, before);
});

run('containers over a lazy chain, including a committed container layer (mixed chain)', async (t) => {
  const s = await setup(t);
  const sn = await s.open();
  await t.throwsAsync(sn.prepare('e1', '', { labels: prepLabels('sha256:c1') }));
  await t.throwsAsync(sn.prepare('e2', 'sha256:c1', { labels: prepLabels('sha256:c2') }));
  const mounts = await sn.prepare('ctr-1', 'sha256:c2');
  const lower = mounts[0]!.options.find((o) => o.startsWith('lowerdir='))!;
  t.is(lower.split(':').length, 1, 'the chain view is the single lowerdir');
  const c = await withMounted(t, s.work, mounts);
  t.deepEqual((await readdir(join(c.dir, 'etc'))).sort(), ['base', 'top']);
  await writeFile(join(c.dir, 'etc/base'), 'changed\n');
  await c.done();
  await sn.commit('ctr-layer', 'ctr-1');
  const v = await withMounted(t, s.work, await sn.view('ctr-2', 'ctr-layer'));
  t.is(await readFile(join(v.dir, 'etc/base'), 'utf8'), 'changed\n', 'container layer over lazy image');
  t.is(await readFile(join(v.dir, 'etc/top'), 'utf8'), 'top\n');
  await v.done();
  // A view of the remote snapshot itself is a bind of its view.
  const rv = await sn.view('rv', 'sha256:c2');
  t.is(rv[0]!.type, 'bind');
});

run('mounts checks the view every time: broken → unavailable', async (t) => {
  const s = await setup(t);
  const sn = await s.open();
  await t.throwsAsync(sn.prepare('e1', '', { labels: prepLabels('sha256:c1') }));
  await sn.prepare('ctr', 'sha256:c1');
  const mp = [...s.views.mounted][0]!;
  s.views.broken.add(mp);
  const err = await t.throwsAsync(sn.mounts('ctr'));
  t.true(hasCode(err, 'SL_ERR_SNAPSHOT_UNAVAILABLE'));
  const err2 = await t.throwsAsync(sn.prepare('ctr2', 'sha256:c1'));
  t.true(hasCode(err2, 'SL_ERR_SNAPSHOT_UNAVAILABLE'));
  await t.throwsAsync(sn.stat('ctr2'), undefined, 'nothing created when the view is unavailable');
  s.views.broken.clear();
  t.is((await sn.mounts('ctr'))[0]!.type, 'overlay');
});

run('remove and close unmount views; a restart unmounts leftovers and restores views', async (t) => {
  const s = await setup(t);
  const sn = await s.open();
  await t.throwsAsync(sn.prepare('e1', '', { labels: prepLabels('sha256:c1') }));
  await sn.prepare('ctr', 'sha256:c1');
  t.is((await mountsUnder(s.root)).length, 1);
  // Simulate a crash: forget the manager's state but leave the mount behind.
  s.views.mounted.clear();
  const sn2 = await s.open();
  t.is((await mountsUnder(s.root)).length, 0, 'stale mounts are unmounted at open');
  await sn2.restoreViews();
  t.is((await mountsUnder(s.root)).length, 1, 'views needed by active snapshots are mounted again');
  await sn2.remove('ctr');
  await sn2.remove('sha256:c1');
  t.is((await mountsUnder(s.root)).length, 0, 'remove unmounts the view');
  await t.throwsAsync(sn2.prepare('e1', '', { labels: prepLabels('sha256:c1') }));
  await sn2.prepare('ctr', 'sha256:c1');
  await sn2.close();
  t.is((await mountsUnder(s.root)).length, 0, 'close unmounts every view');
  await sn.close();
});

run('a release the resolver defers (retryAfterMs) runs again later with the then-live remote ids', async (t) => {
  const s = await setup(t);
  const calls: string[][] = [];
  let defer = true;
  Object.assign(s.resolver, {
    release: async (live: ReadonlySet<string>) => {
      calls.push([...live].sort());
      if (!defer) return {};
      defer = false;
      return { retryAfterMs: 50 };
    },
  });
  const sn = await s.open();
  await t.throwsAsync(sn.prepare('e1', '', { labels: prepLabels('sha256:c1') }));
  await sn.remove('sha256:c1');
  const deadline = Date.now() + 10_000;
  while (calls.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(calls, [[], []], 'called on Remove, then once more after the deferral; no remote snapshot is live');
});
