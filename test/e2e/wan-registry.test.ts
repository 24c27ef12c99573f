/**
 * The WAN emulator in front of a real docker-registry, spoken to by the project's RegistryClient:
 * pulls pay the configured RTTs and bandwidth, bytes arrive intact (digests verified by the
 * client), the counters see the blob, and a small request on another connection is not stuck behind
 * a bulk download (the emulator's router buffer is bounded, not seconds of bufferbloat).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage } from '../../fixtures/push-image.js';
import { MEDIA_TYPES } from '../../src/oci/types.js';
import { startRegistry } from '../helpers/registry.js';

const RTT_MS = 80;
const BANDWIDTH_BPS = 40e6;
/** Upper slack on latency assertions, ms (busy shared machine). */
const SLACK_MS = 150;

test('pulls through the emulator pay RTT and bandwidth, arrive intact, and small requests are not queued behind bulk', async (t) => {
  const registry = await startRegistry(t);
  const blob = randomBytes(4 * 1024 * 1024);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: ['sha256:' + '0'.repeat(64)] } }));
  await pushImage(new RegistryClient(), `${registry.host}/wan/test:v1`, { config, layers: [{ data: blob, mediaType: MEDIA_TYPES.ociLayer }] });

  const emu = await WanEmulator.start({ target: registry.host, rttMs: RTT_MS, bandwidthBps: BANDWIDTH_BPS });
  t.teardown(() => emu.close());
  const ref = `${emu.address}/wan/test:v1`;
  const client = new RegistryClient({ retries: 0 });

  // resolve = GET manifest + GET config: at least a handshake and two exchanges.
  let t0 = performance.now();
  const img = await client.resolve(ref, 'linux/amd64');
  const resolveMs = performance.now() - t0;
  t.true(resolveMs >= 3 * RTT_MS - 2, `resolve took ${resolveMs.toFixed(0)} ms`);
  t.true(resolveMs < 4 * RTT_MS + 2 * SLACK_MS, `resolve took ${resolveMs.toFixed(0)} ms`);

  emu.resetStats();
  t0 = performance.now();
  const download = (async () => {
    let got = 0;
    for await (const chunk of await client.fetchBlob(ref, img.manifest.layers[0]!)) got += (chunk as Buffer).length;
    return { got, ms: performance.now() - t0 };
  })();
  // While the bulk download runs, a small request on a second connection.
  await new Promise((r) => setTimeout(r, 3 * RTT_MS));
  const s0 = performance.now();
  const head = await fetch(`http://${emu.address}/v2/wan/test/manifests/v1`, { method: 'HEAD', headers: { accept: MEDIA_TYPES.ociManifest } });
  const smallMs = performance.now() - s0;
  t.is(head.status, 200);
  const { got, ms } = await download;
  t.log(`resolve ${resolveMs.toFixed(0)} ms, blob ${ms.toFixed(0)} ms, small ${smallMs.toFixed(0)} ms`);

  const ideal = ((blob.length - 64 * 1024) * 8 * 1000) / BANDWIDTH_BPS;
  t.is(got, blob.length);
  t.true(ms >= ideal + RTT_MS, `blob took ${ms.toFixed(0)} ms, ideal ≥ ${(ideal + RTT_MS).toFixed(0)} ms`);
  t.true(ms < 3 * ideal + 4 * RTT_MS, `blob took ${ms.toFixed(0)} ms`);
  t.true(smallMs < 2 * RTT_MS + SLACK_MS + 50, `small request took ${smallMs.toFixed(0)} ms during the bulk transfer`);
  const stats = emu.stats();
  t.true(stats.bytesDown >= blob.length, `bytesDown ${stats.bytesDown}`);
  t.true(stats.bytesUp > 0);
  // Keep-alive: the client reuses the connections resolve() opened (counted before resetStats).
  t.true(stats.activeConnections >= 1);
});
