/**
 * Resume after a daemon crash (issue 5): the proxy sits behind the WAN emulator so the stream is
 * slow; the daemon is SIGKILLed mid-stream and started again: the incomplete image resumes streaming
 * (log key `image-pull-resumed`, then `delta-complete`), a new container starts, and every file of
 * the image reads back exactly (host-side view of the chain compared with the layer sources).
 * Needs root; everything is torn down on failure too.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { chainIds } from '../../src/worker/images/chain.js';
import { buildTestImage, pinnedSnapshot, SNAPSHOTTER_NAME } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';
import { makeLayer, pushLayers } from './proxy-support.js';
import { lazyStack, pull, starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** Emulated link, bits/s: the filler below takes ~6 s. */
const BANDWIDTH_BPS = 8_000_000;
const RTT_MS = 20;
/** Random (incompressible) file streamed last, bytes. */
const FILLER_BYTES = 6 << 20;
/** How long after the pull returned the daemon is killed, ms. */
const KILL_AFTER_MS = 1_000;
const LOG_TIMEOUT_MS = 60_000;

function sh(cmd: string): Promise<void> {
  return new Promise((resolve, reject) => execFile('sh', ['-c', cmd], { timeout: 30_000 }, (err, _o, stderr) => (err ? reject(new Error(`${cmd}: ${stderr}`)) : resolve())));
}

run('SIGKILL mid-stream, restart: the image resumes streaming and every file reads back exactly', async (t) => {
  t.timeout(180_000);
  const { reg, c } = await lazyStack(t, async (url) => {
    const emu = await WanEmulator.start({ target: new URL(url).host, rttMs: RTT_MS, bandwidthBps: BANDWIDTH_BPS });
    t.teardown(() => emu.close());
    return `http://${emu.address}`;
  });
  const work = tempDir(t);
  const img = await buildTestImage(work);
  const filler = randomBytes(FILLER_BYTES);
  const layers = [...img.layers.map((l) => ({ gz: l.blob, diffID: l.diffId })), makeLayer(t, { 'filler/big': filler })];
  await pushLayers(reg.host, 'slresume', layers, ['/bin/sh']);
  const ref = `${reg.host}/slresume:latest`;
  await pull(t, c, ref);
  await sleep(KILL_AFTER_MS);
  const st = JSON.parse((await starlight(['status', '--daemon', c.snapshotter.apiSocket, '--json'])).stdout) as { images: { complete: boolean; bytesPresent: number; bytes: number }[] };
  t.false(st.images[0]!.complete, 'still streaming when killed');
  t.log(`killed at ${st.images[0]!.bytesPresent}/${st.images[0]!.bytes} bytes`);
  const before = c.snapshotter.logs().length;
  t.is(await c.restartSnapshotter('SIGKILL'), null);
  const deadline = Date.now() + LOG_TIMEOUT_MS;
  const after = () => c.snapshotter.logs().slice(before);
  while (!after().some((l) => l.includes('"delta-complete"'))) {
    if (Date.now() > deadline) throw new Error(`no delta-complete after the restart within ${LOG_TIMEOUT_MS} ms`);
    await sleep(200);
  }
  t.true(after().some((l) => l.includes('"image-pull-resumed"') && l.includes(ref)), 'image-pull-resumed logged');

  const top = chainIds(layers.map((l) => l.diffID)).pop()!;
  // Pinned as a gc root: containerd's gc runs after the container's deletion below.
  await pinnedSnapshot(c, 'view', 'resume-view', top);
  const out = await c
    .ctrOk(['run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'resumed', 'sh', '-c', 'cat /filler/big > /dev/null && cat /etc/l2file /etc/somefile'])
    .catch((err: unknown) => {
      t.log(after().join('\n'));
      throw err;
    });
  t.is(out, 'from layer 2\nsome\n');

  // Every file through a view of the whole chain, against the sources.
  const dir = join(c.dir, 'mnt-resume');
  await mkdir(dir);
  await sh((await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'mounts', dir, 'resume-view'])).trim());
  t.teardown(() => sh(`umount ${dir}`).catch(() => undefined));
  t.true((await readFile(join(dir, 'filler/big'))).equals(filler), 'the filler reads back byte for byte');
  await sh(`diff -r --no-dereference ${join(work, 'layer1', 'usr')} ${join(dir, 'usr')}`);
  t.is(await readFile(join(dir, 'etc/l2file'), 'utf8'), 'from layer 2\n');
  t.is(await readFile(join(dir, 'etc/passwd'), 'utf8'), await readFile(join(work, 'layer1', 'etc/passwd'), 'utf8'));
  await sh(`umount ${dir}`);
});
