/**
 * Graduation (issue 12), on the whole stack (registry → `starlight proxy` → `starlight snapshotter
 * --proxy` → containerd 1.6 + runc), with the rootfs fixture (every entry type, modes, owners,
 * xattrs, hardlinks incl. a replaced target, whiteouts, opaque dirs, implied dirs):
 * - once the image is complete the daemon materialises each of its layers as a plain dir; a snapshot
 *   created afterwards is mounted from those dirs (not the FUSE view) and shows exactly the overlay
 *   oracle's tree (overlayfs over GNU-tar-extracted layers), hardlink counts (nlink) included; an
 *   active snapshot (what a container gets) is an overlay over them;
 * - the same after a daemon restart (the tree is on disk; no view is mounted for it);
 * - removing the image frees the materialised layers with the content;
 * - the image's lazy view is unmounted once no mount uses it (`--view-idle`); a snapshot and a
 *   container mounted on it before graduation keep it until they are gone.
 * Needs root, FUSE, overlayfs, containerd + runc, docker-registry, tar, zstd, getfattr/setfattr.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DaemonClient } from '../../src/worker/api/client.js';
import { chainIds } from '../../src/worker/images/chain.js';
import { parseMountInfo } from '../../src/worker/fs/mount-table.js';
import { buildTestImage, pinnedSnapshot, pushTestImage, SNAPSHOTTER_NAME, type Containerd } from '../helpers/containerd.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { diffShapes, mountOverlayReference, shapeOfDir } from '../helpers/tree-shape.js';
import { tempDir } from '../helpers/tmp.js';
import { ignoredMtimes, pushLayers } from './mount-support.js';
import { lazyStack, pull } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** Bound on completion + graduation and on log keys, ms. */
const WAIT_MS = 60_000;
/** The image service's release grace (images/service.ts DEFAULT_RELEASE_GRACE_MS) plus slack, ms. */
const RELEASE_GRACE_WAIT_MS = 5_500;

function sh(cmd: string): Promise<void> {
  return new Promise((resolve, reject) => execFile('sh', ['-c', cmd], { timeout: 20_000 }, (err, _o, stderr) => (err ? reject(new Error(`${cmd}: ${stderr}`)) : resolve())));
}

async function poll<T>(what: string, f: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what} within ${WAIT_MS} ms`);
    await sleep(100);
  }
}

const graduated = (c: Containerd, ref: string): Promise<true> =>
  poll(`${ref} complete and graduated`, async () => {
    const st = await new DaemonClient(c.snapshotter.apiSocket).status();
    return st.images.some((i) => i.ref === ref && i.complete && i.graduated === true) ? true : undefined;
  }).catch((err: Error) => {
    // Why it did not graduate, if the daemon said.
    const failed = c.snapshotter.logs().filter((l) => l.includes('graduation-failed'));
    throw new Error(`${err.message}${failed.length > 0 ? `: ${failed.slice(-3).join('\n')}` : ''}`);
  });

/** Creates a view (or active) snapshot `key` on `parent`, mounts it with the command ctr prints. */
async function mountView(t: ExecutionContext, c: Containerd, key: string, parent: string, kind: 'view' | 'prepare' = 'view'): Promise<{ dir: string; command: string }> {
  await pinnedSnapshot(c, kind, key, parent);
  const dir = join(c.dir, `mnt-${key}`);
  await mkdir(dir, { recursive: true });
  const command = (await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'mounts', dir, key])).trim();
  await sh(command);
  t.teardown(() => sh(`umount ${dir}`).catch(() => undefined));
  return { dir, command };
}

async function unmountView(c: Containerd, key: string, dir: string): Promise<void> {
  await sh(`umount ${dir}`);
  await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'rm', key]);
}

run('a complete image graduates: new snapshots mount a plain tree equal to the overlay oracle, also after a restart; removing the image frees it', async (t) => {
  t.timeout(300_000);
  const fx = FIXTURES.find((f) => f.name === 'rootfs')!;
  const { reg, c } = await lazyStack(t);
  const img = await pushLayers(t, reg, 'graduate', fx.layers);
  // nlink included: the graduated layers are per-layer dirs like the oracle's, so a name an upper
  // layer deleted or replaced still counts (bin/ls, usr/lib/libfoo.hard show 2 in both).
  const reference = await shapeOfDir(await mountOverlayReference(t, tempDir(t, 'sl-grad-ref-'), img.blobs), { skipVanished: true, nlink: true });
  const ignoreMtime = ignoredMtimes(img);
  const chain = chainIds(img.tocs.map((x) => x.diffID));
  const top = chain[chain.length - 1]!;
  const gradLayers = join(c.snapshotter.root, 'graduated', 'layers');
  // The lowerdir of a graduated mount: one dir per layer, named by its chain id, top first.
  const lowerdir = `lowerdir=${chain.map((id) => join(gradLayers, id.slice('sha256:'.length))).reverse().join(':')}`;

  await pull(t, c, img.ref);
  const pulledAt = Date.now();
  await graduated(c, img.ref);
  // Dirs only: a layer that leaves out hidden files has a `.omit` list beside it.
  const trees = (await readdir(gradLayers)).filter((n) => !n.endsWith('.omit'));
  t.deepEqual(trees.sort(), chain.map((id) => id.slice('sha256:'.length)).sort(), 'one graduated dir per layer');

  const check = async (key: string): Promise<void> => {
    const { dir, command } = await mountView(t, c, key, top);
    t.true(command.includes(lowerdir), `mounted from the graduated layers: ${command}`);
    const shape = await shapeOfDir(dir, { nlink: true });
    const diffs = diffShapes(shape, reference, { names: ['graduated', 'overlay'], ignoreMtime });
    t.deepEqual(diffs, [], `graduated tree vs overlayfs:\n${diffs.slice(0, 50).join('\n')}`);
    t.is(shape.get('bin/ls')?.nlink, 2, 'a hardlink whose other name an upper layer deleted counts it, as in overlayfs');
    await unmountView(c, key, dir);
  };
  await check('grad-view-1');
  // An active snapshot (what a container gets): overlay of its upper dir over the graduated tree.
  const active = await mountView(t, c, 'grad-active', top, 'prepare');
  t.true(active.command.includes(lowerdir), active.command);
  t.is(await readFile(join(active.dir, 'etc/motd'), 'utf8'), 'welcome\n');
  t.is(await readFile(join(active.dir, 'usr/lib/libfoo.hard'), 'utf8'), 'libfoo v1');
  await writeFile(join(active.dir, 'etc/motd'), 'changed\n');
  t.is(await readFile(join(active.dir, 'etc/motd'), 'utf8'), 'changed\n', 'writes go to the upper dir');
  await unmountView(c, 'grad-active', active.dir);

  await c.restartSnapshotter();
  const logsAtRestart = c.snapshotter.logs().length;
  await graduated(c, img.ref);
  await check('grad-view-2');
  const viewMounts = c.snapshotter.logs().slice(logsAtRestart).filter((l) => l.includes('"remote-view-mounted"'));
  t.deepEqual(viewMounts, [], 'after the restart no lazy view was mounted: snapshots of the graduated image need none');

  await sleep(Math.max(0, pulledAt + RELEASE_GRACE_WAIT_MS - Date.now()));
  await c.ctrOk(['images', 'rm', '--sync', img.ref]);
  await poll('image-content-freed in the daemon log', async () => (c.snapshotter.logs().some((l) => l.includes('"image-content-freed"')) ? true : undefined));
  t.deepEqual(await readdir(gradLayers), [], 'removing the image freed its graduated layers');
  t.deepEqual(await readdir(join(c.snapshotter.root, 'graduated', 'chains')), [], 'and its chain record');
  await t.throwsAsync(access(join(gradLayers, trees[0]!)));
});


run('a container running on a graduated image keeps working across a daemon restart (no FUSE below it)', async (t) => {
  t.timeout(180_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'slgrad', '1', img);
  const ref = `${reg.host}/slgrad:1`;
  await pull(t, c, ref);
  await graduated(c, ref);
  await c.ctrOk(['run', '-d', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'glong', 'sh', '-c', 'while :; do cat /etc/somefile > /dev/null; done']);
  t.teardown(() => c.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'glong'], { timeoutMs: 10_000 }).then(() => undefined));
  t.is(await c.restartSnapshotter('SIGTERM'), 0);
  const r = await c.ctr(['tasks', 'exec', '--fifo-dir', c.fifoDir, '--exec-id', 'e1', 'glong', 'cat', '/etc/l2file'], { timeoutMs: 20_000 });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'from layer 2\n');
});

/** FUSE mounts of the daemon's views (under its root), mount points. */
async function viewMounts(c: Containerd): Promise<string[]> {
  const all = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  return all.filter((m) => m.fsType.startsWith('fuse') && m.mountPoint.startsWith(c.snapshotter.root + '/')).map((m) => m.mountPoint);
}

run('a graduated image drops its lazy view once no mount uses it; a snapshot mounted on the view keeps it until unmounted', async (t) => {
  t.timeout(180_000);
  const { reg, c } = await lazyStack(t, undefined, ['--view-idle', '1']);
  const built = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'sldrop', '1', built);
  const img = { ref: `${reg.host}/sldrop:1` };
  const top = chainIds(built.layers.map((l) => l.diffId)).pop()!;
  await pull(t, c, img.ref);
  // The pull warms the top view; an active snapshot made now (before graduation, ≥ 3 s after the
  // pull) is an overlay over it, like the rootfs of a container started right after the pull.
  const [view] = await poll('the pulled image\'s view mounted', async () => {
    const m = await viewMounts(c);
    return m.length === 1 ? m : undefined;
  });
  const pre = await mountView(t, c, 'pre-graduation', top, 'prepare');
  t.true(pre.command.includes(`lowerdir=${view}`), `on the lazy view: ${pre.command}`);
  await writeFile(join(pre.dir, 'etc/other'), 'mine\n');
  // And a container started before graduation (its rootfs: an overlay over the view, in the shim's mounts).
  await c.ctrOk(['run', '-d', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, img.ref, 'early', '/bin/sh', '-c', 'while :; do sleep 1; done']);
  t.teardown(() => c.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'early'], { timeoutMs: 10_000 }).then(() => undefined));
  await graduated(c, img.ref);

  await poll('remote-view-in-use in the daemon log', async () => (c.snapshotter.logs().some((l) => l.includes('"remote-view-in-use"')) ? true : undefined));
  t.deepEqual(await viewMounts(c), [view], 'the view stays while an overlay uses it');
  t.is(await readFile(join(pre.dir, 'etc/l2file'), 'utf8'), 'from layer 2\n', 'reads through it still work');

  const r = await c.ctr(['tasks', 'exec', '--fifo-dir', c.fifoDir, '--exec-id', 'e1', 'early', 'cat', '/etc/l2file'], { timeoutMs: 20_000 });
  t.is(r.stdout, 'from layer 2\n', `the early container reads through the view: ${r.stderr}`);
  await c.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', 'early']);
  await poll('the early container stopped', async () => ((await c.ctr(['tasks', 'delete', 'early'])).code === 0 ? true : undefined));
  await c.ctrOk(['containers', 'delete', 'early']);
  t.deepEqual(await viewMounts(c), [view], 'the view stays while the overlay of pre-graduation uses it');
  await sh(`umount ${pre.dir}`);
  await poll('remote-view-dropped in the daemon log', async () => (c.snapshotter.logs().some((l) => l.includes('"remote-view-dropped"')) ? true : undefined));
  t.deepEqual(await viewMounts(c), [], 'no FUSE mount is left once nothing uses the view');

  // The same active snapshot mounted again: its upper dir over the plain tree, nothing lost.
  const again = (await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'mounts', pre.dir, 'pre-graduation'])).trim();
  t.true(again.includes(join(c.snapshotter.root, 'graduated')), `remounted on the graduated tree: ${again}`);
  await sh(again);
  t.is(await readFile(join(pre.dir, 'etc/other'), 'utf8'), 'mine\n', 'the write in the upper dir survives');
  t.is(await readFile(join(pre.dir, 'etc/l2file'), 'utf8'), 'from layer 2\n');
  await unmountView(c, 'pre-graduation', pre.dir);
  t.deepEqual(await viewMounts(c), [], 'new mounts of the graduated image mount no view');

  // One copy per content: with no view left, the CAS drops the blobs whose bytes the graduated
  // layers hold, and serves those files instead (here to a new lazy view of the lower layer).
  await poll('content-relocated in the daemon log', async () => (c.snapshotter.logs().some((l) => l.includes('"content-relocated"')) ? true : undefined));
  const hex = createHash('sha256').update('some\n').digest('hex');
  const content = join(c.snapshotter.root, 'content');
  await t.throwsAsync(access(join(content, 'sha256', hex.slice(0, 2), hex)), undefined, 'the blob of etc/somefile is gone');
  t.true((await readFile(join(content, 'relocated.log'), 'utf8')).includes(`${hex} 5 ${join(c.snapshotter.root, 'graduated', 'layers')}/`), 'relocated into a layer dir');
  const lower = chainIds(built.layers.map((l) => l.diffId))[0]!;
  const lowerView = await mountView(t, c, 'lower-view', lower);
  t.false(lowerView.command.includes('graduated'), `the lower chain alone did not graduate: a lazy view: ${lowerView.command}`);
  t.is(await readFile(join(lowerView.dir, 'etc/somefile'), 'utf8'), 'some\n', 'read through the view from the relocated file');
  await unmountView(c, 'lower-view', lowerView.dir);

  // Removing the image frees its layers, relocated content included.
  await c.ctrOk(['images', 'rm', '--sync', img.ref]);
  await poll('image-content-freed in the daemon log', async () => (c.snapshotter.logs().some((l) => l.includes('"image-content-freed"')) ? true : undefined));
  t.deepEqual(await readdir(join(c.snapshotter.root, 'graduated', 'layers')), [], 'no layer dir left');
  t.false(await access(join(content, 'sha256', hex.slice(0, 2), hex)).then(() => true, () => false), 'nor its content');
});
