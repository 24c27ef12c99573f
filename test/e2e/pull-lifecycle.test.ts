/**
 * Lazy-pull lifecycle end to end (issue 5), on the whole stack (registry → `starlight proxy` →
 * `starlight snapshotter --proxy` → containerd 1.6 + runc):
 * - freeing content: `ctr images rm --sync` → containerd's gc removes the remote snapshots → the
 *   daemon deletes the image's CAS content and withdraws its layers' 'complete' markers; a new pull works;
 * - CRI remote-snapshot labels: Prepare through containerd's snapshots API with the labels containerd's
 *   CRI plugin sets makes the daemon pull through the proxy and answer already-exists;
 * - a mixed chain: a local snapshot committed on top of a lazy image, with a view/active above it;
 * - a pull refused after its early snapshot Prepares (issue 19) records nothing that lasts.
 * Needs root; everything is torn down on failure too.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecutionContext } from 'ava';
import { chainIds } from '../../src/worker/images/chain.js';
import { ContainerdClient } from '../../src/worker/images/containerd-client.js';
import { DaemonClient } from '../../src/worker/api/client.js';
import { buildTestImage, pinnedSnapshot, pushTestImage, SNAPSHOTTER_NAME, TEST_GC_ROOT, TEST_NAMESPACE, type Containerd } from '../helpers/containerd.js';
import { casBlobFiles } from '../helpers/cas.js';
import { END_OF_ARCHIVE, tarHeader } from '../helpers/hostile-layers.js';
import { tempDir } from '../helpers/tmp.js';
import { makeLayer, pushLayers, sha256 } from './proxy-support.js';
import { lazyStack, pull, starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** How long to wait for a daemon log key, ms. */
const LOG_TIMEOUT_MS = 30_000;
/** The image service's release grace (images/service.ts DEFAULT_RELEASE_GRACE_MS) plus slack, ms. */
const RELEASE_GRACE_WAIT_MS = 5_500;

async function waitLog(c: Containerd, key: string, n = 1): Promise<string[]> {
  const deadline = Date.now() + LOG_TIMEOUT_MS;
  for (;;) {
    const hits = c.snapshotter.logs().filter((l) => l.includes(`"${key}"`));
    if (hits.length >= n) return hits;
    if (Date.now() > deadline) throw new Error(`no ${n}× ${key} in the daemon log within ${LOG_TIMEOUT_MS} ms`);
    await sleep(100);
  }
}

function sh(cmd: string): Promise<void> {
  return new Promise((resolve, reject) => execFile('sh', ['-c', cmd], { timeout: 20_000 }, (err, _o, stderr) => (err ? reject(new Error(`${cmd}: ${stderr}`)) : resolve())));
}

/** Mounts snapshot `key` at a fresh dir with the command `ctr snapshots mounts` prints. */
async function mountSnapshot(t: ExecutionContext, c: Containerd, key: string): Promise<{ dir: string; command: string }> {
  const dir = join(c.dir, `mnt-${key}`);
  await mkdir(dir, { recursive: true });
  const command = (await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'mounts', dir, key])).trim();
  await sh(command);
  t.teardown(() => sh(`umount ${dir}`).catch(() => undefined));
  return { dir, command };
}

const ctrRun = (c: Containerd, ref: string, id: string, script: string) =>
  c.ctrOk(['run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, id, 'sh', '-c', script]);

/**
 * Snapshots a test makes with ctr carry no lease or gc reference, so containerd's gc (which runs
 * after any deletion) would collect them: pin each one as a gc root right after creating it.
 */
const pin = (c: Containerd, key: string) => c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'label', key, TEST_GC_ROOT]);

const exists = (p: string) => access(p).then(() => true, () => false);

run('status never shows a pulled image as stopped incomplete: streaming until its completion is recorded', async (t) => {
  t.timeout(120_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'slstate', '1', img);
  const ref = `${reg.host}/slstate:1`;
  const client = new DaemonClient(c.snapshotter.apiSocket);
  // Polled from before the pull until the record is complete: the stream's end, then its content and
  // TOCs made durable, then the record (service.ts `completing`).
  const seen = new Set<string>();
  let done = false;
  const polling = (async () => {
    for (const deadline = Date.now() + LOG_TIMEOUT_MS; !done && Date.now() < deadline; ) {
      const img = (await client.status()).images.find((i) => i.ref === ref);
      if (img) seen.add(img.complete ? 'complete' : img.streaming ? 'streaming' : 'incomplete');
      if (img?.complete) return;
      await sleep(1);
    }
  })();
  await pull(t, c, ref);
  await polling;
  done = true;
  t.true(seen.has('complete'), [...seen].join(','));
  t.false(seen.has('incomplete'), `states seen: ${[...seen].join(',')}`);
});

run('removing an image frees its CAS content and complete markers; pulling again works', async (t) => {
  t.timeout(120_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'slgc', '1', img);
  const ref = `${reg.host}/slgc:1`;
  await pull(t, c, ref);
  const pulledAt = Date.now();
  await waitLog(c, 'delta-complete');
  const cas = join(c.snapshotter.root, 'content');
  const complete = join(c.snapshotter.root, 'layers', 'complete');
  const before = (await casBlobFiles(cas)).length;
  t.true(before > 5, `CAS holds the image (${before} files)`);
  // Layers are marked complete once their content is durable (a sync after delta-complete).
  await waitLog(c, 'cas-durable');
  for (const deadline = Date.now() + LOG_TIMEOUT_MS; (await readdir(complete)).length < 2 && Date.now() < deadline; ) await sleep(50);
  t.is((await readdir(complete)).length, 2);
  t.is(await ctrRun(c, ref, 'gc1', 'cat /etc/l2file'), 'from layer 2\n');

  await sleep(Math.max(0, pulledAt + RELEASE_GRACE_WAIT_MS - Date.now()));
  await c.ctrOk(['images', 'rm', '--sync', ref]);
  const freed = await waitLog(c, 'image-content-freed').catch((err: unknown) => {
    t.log(c.snapshotter.logs().slice(-15).join('\n'));
    throw err;
  });
  t.log(freed[0]);
  t.is((await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'ls'])).trim().split('\n').length, 1, 'containerd gc removed every snapshot');
  t.is((await casBlobFiles(cas)).length, 0, 'no content of the image is left');
  t.deepEqual(await readdir(complete), [], 'no layer is announced as held any more');
  t.deepEqual(await readdir(join(complete, '../tocs')), [], 'no TOC of the image is kept (issue 14: TOC store GC)');
  t.deepEqual((await readdir(join(c.snapshotter.root, 'images'))).filter((f) => f.endsWith('.json')), []);

  await pull(t, c, ref);
  t.is(await ctrRun(c, ref, 'gc2', 'cat /etc/somefile /etc/l2file'), 'some\nfrom layer 2\n', 'the image streams again after its content was freed');
  t.is(c.snapshotter.logs().filter((l) => l.includes('"image-pull-started"')).length, 2);
});

run('CRI remote-snapshot labels: Prepare through containerd pulls via the proxy and answers already-exists', async (t) => {
  t.timeout(120_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'slcri', '1', img);
  const ref = `${reg.host}/slcri:1`;
  const chain = chainIds(img.layers.map((l) => l.diffId));
  const cd = new ContainerdClient(c.address, TEST_NAMESPACE);
  t.teardown(() => cd.close());
  let parent = '';
  for (const [i, id] of chain.entries()) {
    const labels = {
      'containerd.io/snapshot.ref': id,
      'containerd.io/snapshot/cri.image-ref': ref,
      'containerd.io/snapshot/cri.manifest-digest': img.manifestDigest,
      'containerd.io/snapshot/cri.layer-digest': img.layers[i]!.digest,
      'containerd.io/snapshot/cri.image-layers': img.layers.slice(i).map((l) => l.digest).join(','),
    };
    t.true(await cd.prepareSnapshot(SNAPSHOTTER_NAME, `extract-${i}-${Date.now()} ${id}`, parent, labels), `layer ${i}: already-exists (remote)`);
    const info = await cd.statSnapshot(SNAPSHOTTER_NAME, id);
    t.regex(String(info?.kind), /committed/i);
    t.is(info?.parent, parent);
    parent = id;
  }
  await pin(c, chain[chain.length - 1]!);
  t.is((await waitLog(c, 'remote-snapshot-prepared', 2)).length, 2);
  t.is(c.snapshotter.logs().filter((l) => l.includes('"image-pull-started"')).length, 1, 'one pull for the whole image');

  await pinnedSnapshot(c, 'view', 'cri-view', chain[chain.length - 1]!);
  const { dir } = await mountSnapshot(t, c, 'cri-view');
  t.is(await readFile(join(dir, 'etc/l2file'), 'utf8'), 'from layer 2\n');
  t.is(await readFile(join(dir, 'etc/somefile'), 'utf8'), 'some\n');
  t.false(await exists(join(dir, 'etc/other')), 'the whiteout of layer 2 applies');
  t.true((await readFile(join(dir, 'usr/bin/dash'))).length > 10_000);
  await sh(`umount ${dir}`);
  await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'rm', 'cri-view']);
});

run('a local snapshot committed on a lazy image: a view and an active on top see both, overlay semantics', async (t) => {
  t.timeout(120_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'slmix', '1', img);
  const ref = `${reg.host}/slmix:1`;
  await pull(t, c, ref);
  const top = chainIds(img.layers.map((l) => l.diffId)).pop()!;
  const snap = (args: string[]) => c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, ...args]);

  await pinnedSnapshot(c, 'prepare', 'mix-a', top);
  const a = await mountSnapshot(t, c, 'mix-a');
  t.regex(a.command, /overlay/);
  await writeFile(join(a.dir, 'new.txt'), 'local\n');
  await writeFile(join(a.dir, 'etc/somefile'), 'changed\n');
  await rm(join(a.dir, 'etc/l2file'));
  await sh(`umount ${a.dir}`);
  await snap(['commit', 'mix-c', 'mix-a']);
  await pin(c, 'mix-c');

  await pinnedSnapshot(c, 'view', 'mix-v', 'mix-c');
  const v = await mountSnapshot(t, c, 'mix-v');
  t.regex(v.command, /lowerdir=[^:,]+:[^:,]+/, 'two lowers: the committed local layer over the lazy view');
  t.is(await readFile(join(v.dir, 'new.txt'), 'utf8'), 'local\n');
  t.is(await readFile(join(v.dir, 'etc/somefile'), 'utf8'), 'changed\n');
  t.false(await exists(join(v.dir, 'etc/l2file')), 'deleted in the local layer (whiteout)');
  t.false(await exists(join(v.dir, 'etc/other')), 'the lazy image whiteout still applies');
  t.is(await readFile(join(v.dir, 'etc/passwd'), 'utf8'), 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n');
  await sh(`umount ${v.dir}`);

  await pinnedSnapshot(c, 'prepare', 'mix-b', 'mix-c');
  const b = await mountSnapshot(t, c, 'mix-b');
  await writeFile(join(b.dir, 'etc/passwd'), 'x\n');
  t.is(await readFile(join(b.dir, 'etc/passwd'), 'utf8'), 'x\n');
  t.is(await readFile(join(b.dir, 'new.txt'), 'utf8'), 'local\n');
  await sh(`umount ${b.dir}`);
  await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'rm', 'mix-v']);
  for (const k of ['mix-b', 'mix-c']) await snap(['rm', k]);
  t.is(await ctrRun(c, ref, 'mix-run', 'cat /etc/somefile'), 'some\n', 'the lazy image itself is unchanged');
});

run('an image built on a pulled image is merged onto its tree (issue 19); both show their own files', async (t) => {
  t.timeout(120_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'slbase', '1', img);
  const base = `${reg.host}/slbase:1`;
  await pull(t, c, base);
  // The same layers plus one that changes, deletes and adds files.
  const top = makeLayer(t, { 'etc/somefile': 'changed\n', 'etc/l2file': null, 'app/new': 'new\n' });
  await pushLayers(reg.host, 'slderived:1', [...img.layers.map((l) => ({ gz: l.blob, diffID: l.diffId })), top], ['/bin/sh']);
  const derived = `${reg.host}/slderived:1`;
  await pull(t, c, derived);
  const st = await new DaemonClient(c.snapshotter.apiSocket).status();
  const rec = (ref: string) => st.timings?.find((r) => r.op === 'pull' && r.subject === ref)?.phases ?? {};
  t.true(rec(base)['pull.merge'] !== undefined, JSON.stringify(rec(base)));
  t.true(rec(derived)['pull.merge-onto'] !== undefined && rec(derived)['pull.merge'] === undefined, JSON.stringify(rec(derived)));
  t.is(await ctrRun(c, derived, 'onto1', 'cat /etc/somefile /app/new; test -e /etc/l2file || echo gone'), 'changed\nnew\ngone\n');
  t.is(await ctrRun(c, base, 'onto2', 'cat /etc/somefile /etc/l2file; test -e /app || echo none'), 'some\nfrom layer 2\nnone\n', 'the base image is unchanged');
});

run('a pull refused at the merge after its early Prepares records no image and leaves no lease; the layers below still pull and run (issue 19)', async (t) => {
  t.timeout(120_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  // A hardlink to nothing: the proxy indexes it (its target could be in a lower layer), the worker's
  // merge refuses it, after the pull's snapshot Prepares went out (askContainerd, at the image check).
  const tar = Buffer.concat([tarHeader('etc/badlink', { type: '1', linkname: 'nowhere/x' }), END_OF_ARCHIVE]);
  const lower = img.layers.map((l) => ({ gz: l.blob, diffID: l.diffId }));
  await pushLayers(reg.host, 'slbadlink:1', [...lower, { gz: gzipSync(tar), diffID: sha256(tar) }], ['/bin/sh']);
  const bad = `${reg.host}/slbadlink:1`;
  const r = await starlight(['pull', '--daemon', c.snapshotter.apiSocket, '-n', TEST_NAMESPACE, bad]);
  t.not(r.code, 0, r.stdout);
  t.regex(r.stderr, /nowhere\/x/);
  t.false((await c.ctrOk(['images', 'ls', '-q'])).includes('slbadlink'), 'no image record');
  // The lease that held the early Prepares is dropped (not awaited by the pull: poll).
  for (const deadline = Date.now() + LOG_TIMEOUT_MS; (await c.ctrOk(['leases', 'ls', '-q'])).trim() !== '' && Date.now() < deadline; ) await sleep(100);
  t.is((await c.ctrOk(['leases', 'ls', '-q'])).trim(), '', 'no lease left');
  // The same lower layers (prepared by the failed pull, or not) pull and run as an image of their own.
  await pushTestImage(reg.host, 'slgood', '1', img);
  const good = `${reg.host}/slgood:1`;
  await pull(t, c, good);
  t.is(await ctrRun(c, good, 'good1', 'cat /etc/l2file; test -e /etc/badlink || echo clean'), 'from layer 2\nclean\n');
});

run('an update that keeps the base layer and replaces the ones above is merged onto the base tree kept from the first pull (issue 19)', async (t) => {
  t.timeout(120_000);
  const { reg, c } = await lazyStack(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'slv', '1', img);
  const v1 = `${reg.host}/slv:1`;
  await pull(t, c, v1);
  // Kept DEFAULT_LOWER_TREES_DELAY_MS after v1's pull.
  await waitLog(c, 'lower-trees-kept');
  // v2: v1's base layer, then a new layer in place of v1's second one.
  const top = makeLayer(t, { 'etc/somefile': 'v2\n', 'app/new': 'new\n' });
  await pushLayers(reg.host, 'slv:2', [{ gz: img.layers[0]!.blob, diffID: img.layers[0]!.diffId }, top], ['/bin/sh']);
  const v2 = `${reg.host}/slv:2`;
  await pull(t, c, v2);
  const st = await new DaemonClient(c.snapshotter.apiSocket).status();
  const phases = st.timings?.find((r) => r.op === 'pull' && r.subject === v2)?.phases ?? {};
  t.true(phases['pull.merge-onto'] !== undefined && phases['pull.merge'] === undefined, JSON.stringify(phases));
  t.is(await ctrRun(c, v2, 'lower1', 'cat /etc/somefile /app/new; test -e /etc/l2file || echo gone'), 'v2\nnew\ngone\n');
  t.is(await ctrRun(c, v1, 'lower2', 'cat /etc/somefile /etc/l2file; test -e /app || echo none'), 'some\nfrom layer 2\nnone\n', 'v1 is unchanged');
});
