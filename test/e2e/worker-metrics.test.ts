/**
 * The daemon's Prometheus endpoint (issue 16, `--metrics-address`), scraped during a lazy pull on the
 * whole stack (registry → proxy behind the WAN emulator → daemon → containerd + runc): while the image
 * streams, its remaining bytes are > 0; a container reading a file that has not arrived yet makes
 * blocked reads, their wait histogram and FUSE ops move; at the end nothing remains to stream.
 * Needs root; everything is torn down on failure too.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { buildTestImage, SNAPSHOTTER_NAME } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';
import { makeLayer, pushLayers } from './proxy-support.js';
import { lazyStack, pull } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

const BANDWIDTH_BPS = 8_000_000;
const FILLER_BYTES = 6 << 20;
const WAIT_MS = 90_000;

/** name{labels} → value, for samples whose labels include every `want` pair. */
function value(text: string, name: string, want: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels = Object.fromEntries([...(m[3] ?? '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(want).every(([k, v]) => labels[k] === v)) return Number(m[4]);
  }
  return undefined;
}

run('daemon metrics: bytes remaining while streaming, blocked reads and their waits, FUSE ops, views', async (t) => {
  t.timeout(240_000);
  const { reg, c } = await lazyStack(
    t,
    async (url) => {
      const emu = await WanEmulator.start({ target: new URL(url).host, rttMs: 20, bandwidthBps: BANDWIDTH_BPS });
      t.teardown(() => emu.close());
      return `http://${emu.address}`;
    },
    ['--metrics-address', '127.0.0.1:0'],
  );
  const listening = c.snapshotter.logs().find((l) => l.includes('"metrics-listening"'));
  t.truthy(listening, 'metrics-listening logged');
  const url = (JSON.parse(listening!) as { url: string }).url;
  const scrape = async () => {
    const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    t.is(res.headers.get('content-type'), 'text/plain; version=0.0.4');
    return res.text();
  };
  t.is(value(await scrape(), 'starlight_views_mounted'), 0);

  const img = await buildTestImage(tempDir(t));
  const layers = [...img.layers.map((l) => ({ gz: l.blob, diffID: l.diffId })), makeLayer(t, { 'filler/big': randomBytes(FILLER_BYTES) })];
  await pushLayers(reg.host, 'slmetrics', layers, ['/bin/sh']);
  const ref = `${reg.host}/slmetrics:latest`;
  await pull(t, c, ref);
  const during = await scrape();
  t.true((value(during, 'starlight_image_bytes_remaining', { image: ref }) ?? 0) > 0, 'bytes remain while the image streams');
  t.true((value(during, 'starlight_image_bytes', { image: ref }) ?? 0) > FILLER_BYTES);

  // A container that reads the filler at once: its reads park until the stream brings it.
  const out = await c.ctrOk(['run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'reader', 'sh', '-c', 'cat /filler/big > /dev/null && echo read']);
  t.is(out, 'read\n');
  const deadline = Date.now() + WAIT_MS;
  let after = await scrape();
  while (value(after, 'starlight_image_complete', { image: ref }) !== 1) {
    if (Date.now() > deadline) throw new Error(`image not complete within ${WAIT_MS} ms:\n${after}`);
    await sleep(250);
    after = await scrape();
  }
  t.log(after.split('\n').filter((l) => /^starlight_(blocked|ondemand|fuse_ops|views|eio_total\{cause="SL)/.test(l)).join('\n'));
  t.is(value(after, 'starlight_image_bytes_remaining', { image: ref }), 0);
  const blocked = value(after, 'starlight_blocked_reads_total') ?? 0;
  t.true(blocked >= 1, `reads of the filler were parked (${blocked})`);
  t.is(value(after, 'starlight_blocked_read_wait_seconds_count'), blocked, 'every parked read was answered and timed');
  t.true((value(after, 'starlight_blocked_read_wait_seconds_sum') ?? 0) > 0);
  t.true((value(after, 'starlight_fuse_ops_total', { op: 'lookup' }) ?? 0) > 0);
  t.true((value(after, 'starlight_fuse_ops_total', { op: 'read' }) ?? 0) > 0);
  t.true((value(after, 'starlight_views_built_total') ?? 0) >= 1);
  t.is(value(after, 'starlight_eio_total', { cause: 'content-read' }), 0);
  t.not(value(after, 'starlight_ondemand_fetches_total'), undefined);
});
