/**
 * Issue 10 acceptance, first contact: for each Debian bench image, a proxy that has never seen it
 * (no notify, no earlier delta) serves
 * - a `starlight mount` whose tree (metadata and every file's sha256) equals overlayfs over the
 *   GNU-tar-extracted layers (test/helpers/tree-shape.ts), then a second mount from an empty worker
 *   state that the proxy serves from its index: no layer blob is fetched from the registry again
 *   (requests counted by a front in front of the registry);
 * - through containerd, on another fresh proxy, `starlight pull` + `ctr run` reaching the image's
 *   ready line.
 * Needs root, FUSE, overlayfs, containerd + runc, docker-registry, debootstrap's cached images.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { DEBIAN_IMAGES } from '../../bench/images/ensure.js';
import { SNAPSHOTTER_NAME, startContainerd, TEST_NAMESPACE } from '../helpers/containerd.js';
import { startFront, startRegistry } from '../helpers/registry.js';
import { diffShapes, shapeOfDir } from '../helpers/tree-shape.js';
import { tempDir } from '../helpers/tmp.js';
import { debianSupported, ignoredMtimes, pushDebian, referenceShapes, startMount } from './mount-support.js';
import { startProxyProcess } from './proxy-support.js';
import { pull } from './pull-support.js';

const run = debianSupported && process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);
/** Bound on one image's test (a cold debootstrap build of the image included), ms. */
const IMAGE_TIMEOUT_MS = 10 * 60_000;
/** Bound on a stream's completion, ms. */
const COMPLETE_MS = 180_000;
/** Bound on a container reaching its ready line, ms. */
const READY_MS = 120_000;

async function runUntilReady(t: ExecutionContext, c: Awaited<ReturnType<typeof startContainerd>>, ref: string, id: string, ready: string): Promise<void> {
  const child = spawn('ctr', ['--address', c.address, '-n', TEST_NAMESPACE, 'run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, id], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  t.teardown(async () => {
    await c.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 10_000 });
    child.kill('SIGKILL');
    await exited;
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line ${JSON.stringify(ready)} within ${READY_MS} ms; output: ${out}`)), READY_MS);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes(ready)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ctr run exited ${code} before the ready line: ${out}`));
    });
  });
}

for (const name of DEBIAN_IMAGES) {
  run(`first contact with ${name}: the mounted tree equals overlayfs, the container starts, a second pull uses the index`, async (t) => {
    t.timeout(IMAGE_TIMEOUT_MS);
    const reg = await startRegistry(t);
    const img = await pushDebian(reg, AbortSignal.timeout(IMAGE_TIMEOUT_MS), name);
    const front = await startFront(t, reg.host);
    const ref = img.ref.replace(reg.host, front.host);
    const layerGets = (): number => front.requests.filter((r) => r.startsWith('GET ') && r.includes('/blobs/') && img.layerDigests.some((d) => r.includes(d))).length;
    const reference = await referenceShapes(t, img);
    const ignoreMtime = ignoredMtimes(img);

    // 1. A proxy that never saw the image: mount, every file's bytes compared with overlayfs.
    const proxy = await startProxyProcess(t, ['--registry', `http://${front.host}`, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-cold-proxy-')]);
    const m1 = await startMount(t, proxy.url, ref);
    await m1.waitForLine(/^complete$/, COMPLETE_MS);
    const full = await shapeOfDir(m1.mountpoint, { nlink: true });
    const diffs = diffShapes(full, reference, { names: ['mount', 'overlay'], ignoreMtime });
    t.deepEqual(diffs, [], `first-contact mount vs overlayfs for ${name}:\n${diffs.slice(0, 50).join('\n')}`);
    t.is(layerGets(), img.blobs.length, 'each layer blob fetched once');

    // 2. A second pull (an empty worker) is served from the index: no layer blob fetched again.
    const m2 = await startMount(t, proxy.url, ref);
    await m2.waitForLine(/^complete$/, COMPLETE_MS);
    const again = await shapeOfDir(m2.mountpoint, { nlink: true });
    t.deepEqual(diffShapes(again, reference, { names: ['mount', 'overlay'], ignoreMtime }), []);
    t.is(layerGets(), img.blobs.length, 'the second pull fetched no layer blob');

    // 3. Through containerd, from another proxy that never saw the image: the container starts.
    const proxy2 = await startProxyProcess(t, ['--registry', `http://${front.host}`, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-cold-proxy2-')]);
    const c = await startContainerd(t, { snapshotterArgs: ['--proxy', proxy2.url] });
    await pull(t, c, ref);
    await runUntilReady(t, c, ref, `cold-${name}`, img.ready);
    t.pass(`${name} reached its ready line`);
  });
}
