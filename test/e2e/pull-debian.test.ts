/**
 * Acceptance of lazy pulls with a real Debian app image (bench/images ensureDebianImage: python3 web
 * server printing a ready line): through `starlight pull` + `ctr run --snapshotter starlight` the
 * container reaches its ready line BEFORE its stream has finished (the proxy sits behind the WAN
 * emulator at a capped bandwidth so the order is observable on loopback), and the v1 → v2 update
 * sends only what v1 lacks (proxy /metrics). Needs root, debootstrap's cached image or the mirror.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureDebianImage } from '../../bench/images/ensure.js';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { SNAPSHOTTER_NAME, TEST_NAMESPACE } from '../helpers/containerd.js';
import { fetchDelta, makeLayer, metrics, pushLayers } from './proxy-support.js';
import { lazyStack, pull, starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** Link capacity between worker and proxy, bits/s. */
const BANDWIDTH_BPS = 50_000_000;
/**
 * A never-read file in a top layer (streamed last), bytes: ~8 s of the link, so that "ready before
 * complete" does not hinge on where the proxy's untraced order puts the app's own files.
 */
const FILLER_BYTES = 48 << 20;
/** RTT of the emulated link, ms. */
const RTT_MS = 20;
/** Longest the container may take to print its ready line, ms. */
const READY_TIMEOUT_MS = 90_000;
/** Longest we wait for a stream to complete, ms. */
const COMPLETE_TIMEOUT_MS = 120_000;
const DELTA_SENT = 'starlight_proxy_delta_bytes_sent_total';

function logTime(lines: string[], msg: string, ref: string): number | undefined {
  for (const l of lines) {
    if (!l.includes(`"${msg}"`) || !l.includes(ref)) continue;
    return Date.parse((JSON.parse(l) as { time: string }).time);
  }
  return undefined;
}

async function waitLog(lines: () => string[], msg: string, ref: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const at = logTime(lines(), msg, ref);
    if (at !== undefined) return at;
    if (Date.now() > deadline) throw new Error(`no ${msg} for ${ref} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

run('a Debian app image is ready before its stream completes; v1 → v2 sends only what v1 lacks', async (t) => {
  t.timeout(180_000);
  const { reg, c, directProxy } = await lazyStack(t, async (url) => {
    const emu = await WanEmulator.start({ target: new URL(url).host, rttMs: RTT_MS, bandwidthBps: BANDWIDTH_BPS });
    t.teardown(() => emu.close());
    return `http://${emu.address}`;
  });
  const v1 = await ensureDebianImage(reg.url, 'python-web', { version: 'v1', repository: 'bench/python-web' });
  const ready = v1.built.ready;
  const filler = makeLayer(t, { 'filler/never-read': randomBytes(FILLER_BYTES) });
  const base = v1.layers.map((l) => ({ gz: readFileSync(l.gzPath), diffID: l.diffId }));
  await pushLayers(reg.host, 'bench/python-web-big:v1', [...base, filler], v1.built.entrypoint);
  const bigRef = `${reg.host}/bench/python-web-big:v1`;

  const pulledAt = Date.now();
  await pull(t, c, bigRef);
  const headerAt = Date.now();
  const child = spawn('ctr', ['--address', c.address, '-n', TEST_NAMESPACE, 'run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, bigRef, 'web1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let out = '';
  const readyAt = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line ${JSON.stringify(ready)} within ${READY_TIMEOUT_MS} ms; output: ${out}`)), READY_TIMEOUT_MS);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes(ready)) {
        clearTimeout(timer);
        resolve(Date.now());
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`ctr run exited ${code} before the ready line: ${out}`)));
  });
  const completeAt = await waitLog(c.snapshotter.logs, 'delta-complete', bigRef, COMPLETE_TIMEOUT_MS);
  t.log(`pull started ${new Date(pulledAt).toISOString()}, pull returned at +${headerAt - pulledAt} ms, ready line at +${readyAt - pulledAt} ms, stream complete at +${completeAt - pulledAt} ms`);
  t.true(readyAt < completeAt, 'the app was ready before its content had finished streaming');
  await c.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'web1'], { timeoutMs: 10_000 });

  // Update: v2 shares the base layer and most packages with v1.
  const v2 = await ensureDebianImage(reg.url, 'python-web', { version: 'v2', repository: 'bench/python-web' });
  const before = (await metrics(directProxy)).get(DELTA_SENT) ?? 0;
  await pull(t, c, v2.reference);
  await waitLog(c.snapshotter.logs, 'delta-complete', v2.reference, COMPLETE_TIMEOUT_MS);
  const sent = ((await metrics(directProxy)).get(DELTA_SENT) ?? 0) - before;
  // What v2 needs beyond v1: the proxy's own plan for a worker holding v1's layers.
  // (its header carries the TOCs of v2's new layers, which any update must send too).
  const ideal = await fetchDelta(directProxy, { to: v2.reference, have: v1.config.rootfs.diff_ids.join(',') });
  const lacking = ideal.header.items.reduce((n, i) => n + i.encodedSize, 0);
  t.log(`v2 update: proxy sent ${sent} bytes; v2 content v1 lacks: ${lacking} bytes encoded, ${ideal.wireBytes} bytes with header`);
  t.true(sent <= 1.1 * ideal.wireBytes, `update sent ${sent} > 1.1 × ${ideal.wireBytes}`);
  t.true(sent < 0.1 * FILLER_BYTES, 'far less than a full image');
  const st = await starlight(['status', '--daemon', c.snapshotter.apiSocket]);
  t.regex(st.stdout, /complete/);
});
