/**
 * Issue 4 acceptance, tree equality: `starlight mount` (a real child process, fed by a real
 * `starlight proxy` over the WAN emulator from a real docker-registry) shows the same tree as
 * overlayfs over the GNU-tar-extracted layers, and the same as the merged TOC (nlink of hardlinks):
 * - right after `mounted`, while content is still arriving: stat, readdir, readlink, getxattr only
 *   (type, mode, uid/gid, size, mtime, link target, nlink, rdev, xattrs);
 * - after `complete`: the same plus the sha256 of every file.
 * Then `starlight umount DIR` ends the mount process cleanly (exit 0, nothing left mounted).
 *
 * Images: every fixture of test/helpers/fixtures.ts and the Debian python-web image of bench/images.
 * Needs root, FUSE, overlayfs, GNU tar, getfattr/setfattr, docker-registry (and debootstrap for Debian).
 */
import test, { type ExecutionContext } from 'ava';
import { fuseMountsAt } from '../../src/worker/fs/mount-table.js';
import { runCli } from '../helpers/cli.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { diffShapes, shapeOfDir } from '../helpers/tree-shape.js';
import {
  debianSupported,
  ignoredMtimes,
  mountSupported,
  pushDebian,
  pushLayers,
  referenceShapes,
  startMount,
  startRegistryFor,
  startStack,
  treeShapes,
  type TestImage,
} from './mount-support.js';

/** Link speed per image, bits/s: slow enough that content is still arriving when the metadata walk ends. */
const BANDWIDTH: Record<string, number> = {
  rootfs: 64_000,
  gnu: 64_000,
  big: 16_000_000,
  'python-web': 40_000_000,
};
/** Images whose content takes long enough over that link that "still streaming" must be observed. */
const MUST_STREAM = new Set(['big', 'python-web']);
/** Bound for `complete` after `mounted`, ms. */
const COMPLETE_MS = 240_000;

async function checkImage(t: ExecutionContext, img: TestImage, reg: Awaited<ReturnType<typeof startRegistryFor>>): Promise<void> {
  const reference = await referenceShapes(t, img);
  const tree = treeShapes(img);
  const ignoreMtime = ignoredMtimes(img);
  const stack = await startStack(t, reg, { bandwidthBps: BANDWIDTH[img.name] ?? 8_000_000 });

  const m = await startMount(t, stack.proxyUrl, img.ref);
  const t0 = Date.now();
  const meta = await shapeOfDir(m.mountpoint, { content: false, nlink: true });
  const metaMs = Date.now() - t0;
  const streaming = !m.lines().includes('complete');
  t.log(`${img.name}: metadata of ${meta.size} paths in ${metaMs} ms; still streaming: ${streaming}`);
  if (MUST_STREAM.has(img.name)) t.true(streaming, 'the metadata walk finished while content was still arriving');
  const metaVsRef = diffShapes(meta, reference, { names: ['mount', 'overlay'], ignoreMtime, ignoreFields: ['sha256'] });
  t.deepEqual(metaVsRef, [], `mount (streaming) vs overlayfs for ${img.name}:\n${metaVsRef.join('\n')}`);
  const metaVsTree = diffShapes(meta, tree, { names: ['mount', 'toc'], ignoreFields: ['sha256'] });
  t.deepEqual(metaVsTree, [], `mount (streaming) vs merged TOC for ${img.name}:\n${metaVsTree.join('\n')}`);

  await m.waitForLine(/^complete$/, COMPLETE_MS);
  t.truthy(m.logs().find((r) => r.msg === 'delta-complete'), 'delta-complete logged');
  const full = await shapeOfDir(m.mountpoint, { nlink: true });
  const fullVsRef = diffShapes(full, reference, { names: ['mount', 'overlay'], ignoreMtime });
  t.deepEqual(fullVsRef, [], `mount (complete) vs overlayfs for ${img.name}:\n${fullVsRef.join('\n')}`);
  const fullVsTree = diffShapes(full, tree, { names: ['mount', 'toc'] });
  t.deepEqual(fullVsTree, [], `mount (complete) vs merged TOC for ${img.name}:\n${fullVsTree.join('\n')}`);
  t.true([...full.values()].filter((s) => s.type === 'reg').every((s) => s.sha256 !== undefined));

  const um = await runCli(['umount', m.mountpoint]);
  t.is(um.code, 0, `starlight umount: ${um.stderr}`);
  const exit = await Promise.race([m.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000))]);
  t.deepEqual(exit, { code: 0, signal: null }, `the mount process ends cleanly after umount:\n${m.stderr().slice(-2000)}`);
  t.deepEqual(await fuseMountsAt(m.mountpoint), [], 'nothing left mounted');
  // A second umount of the same dir is a usage error, not a crash.
  const again = await runCli(['umount', m.mountpoint]);
  t.not(again.code, 0);
}

for (const fx of FIXTURES) {
  (mountSupported ? test.serial : test.skip)(`mount tree equals overlayfs while streaming and complete: ${fx.name}`, async (t) => {
    t.timeout(300_000);
    const reg = await startRegistryFor(t);
    const img = await pushLayers(t, reg, fx.name, fx.layers);
    await checkImage(t, img, reg);
  });
}

(debianSupported ? test.serial : test.skip)('mount tree equals overlayfs while streaming and complete: Debian python-web', async (t) => {
  t.timeout(15 * 60_000);
  const reg = await startRegistryFor(t);
  const img = await pushDebian(reg, AbortSignal.timeout(10 * 60_000));
  await checkImage(t, img, reg);
});
