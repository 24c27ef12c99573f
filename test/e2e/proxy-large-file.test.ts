/**
 * Issue 14, a legitimately huge single file (model weights): a layer holding one 3 GiB file, pushed to
 * a real docker-registry, indexed by a `starlight proxy` whose --cache-size is 256 MiB, and read through
 * `starlight mount` at its start, middle and end. The proxy hashes the file in its index pass without
 * keeping it (ContentCache.servedFromLayer) and serves it from the layer blob; its peak RSS (VmHWM) and
 * its data dir stay bounded far below the file's size, and every byte read is the image's.
 *
 * The layer is written as a stream (test/helpers/large-file-layer.ts): ~50 MiB of gzip, nothing of the
 * file in memory, every 1 MiB block distinct.
 */
import test from 'ava';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { peakDuSampler } from '../../bench/drivers/proc.js';
import { pushImage } from '../../fixtures/push-image.js';
import { RegistryClient } from '../../src/oci/client.js';
import { MEDIA_TYPES } from '../../src/oci/types.js';
import { largeFileBytes, writeLargeFileLayer } from '../helpers/large-file-layer.js';
import { startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { mountSupported, startMount } from './mount-support.js';
import { peakRssKb, startProxyProcess } from './proxy-support.js';

const MIB = 1024 * 1024;
/** The file: 3 GiB and a short last block. */
const FILE_SIZE = 3 * 1024 * MIB + 777;
const FILE_PATH = 'models/weights.bin';
/** --cache-size and --staging-size of the proxy under test. */
const CACHE = 256 * MIB;
const STAGING = 64 * MIB;
/** Bound on the proxy's peak RSS, MiB (an index pass and a stream of the file hold a window and a few chunks). */
const RSS_BOUND_MIB = 600;
/** Bound on the proxy's data dir at any sample: cache + staging + the store (nothing of the file). */
const DISK_BOUND = CACHE + STAGING + 64 * MIB;

test('a 3 GiB file with a 256 MiB proxy cache: indexed and served from its layer, right bytes at start, middle and end; proxy RSS and disk bounded', async (t) => {
  if (!mountSupported) return t.pass('needs root, FUSE, docker-registry');
  t.timeout(600_000);
  const work = tempDir(t, 'sl-large-');
  const blobPath = join(work, 'layer.tar.gz');
  const { diffID, fileDigest } = await writeLargeFileLayer(blobPath, FILE_PATH, FILE_SIZE);
  const reg = await startRegistry(t);
  const ref = `${reg.host}/models/big:v1`;
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [diffID] } }));
  await pushImage(new RegistryClient(), ref, { config, layers: [{ data: blobPath, mediaType: MEDIA_TYPES.ociLayerGzip }] });

  const data = tempDir(t, 'sl-large-proxy-');
  const proxy = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', data, '--cache-size', String(CACHE), '--staging-size', String(STAGING)], {
    env: { STARLIGHT_LOG: 'info' },
  });
  const disk = peakDuSampler([data]);
  t.teardown(() => disk.stop());

  // Indexed ahead (the 3 GiB index pass may take longer than a mount waits for its header).
  const notified = await fetch(`${proxy.url}/v1/notify?ref=${encodeURIComponent(ref)}`, { method: 'POST', signal: AbortSignal.timeout(300_000) });
  t.is(notified.status, 200, await notified.text());
  const m = await startMount(t, proxy.url, ref, { readDeadlineS: 600 });
  const fh = await open(join(m.mountpoint, FILE_PATH), 'r');
  try {
    t.is((await fh.stat()).size, FILE_SIZE);
    const len = 256 * 1024;
    for (const [what, off] of [
      ['start', 0],
      ['middle', Math.floor(FILE_SIZE / 2) - 12_345],
      ['end', FILE_SIZE - len],
    ] as const) {
      const buf = Buffer.alloc(len);
      const { bytesRead } = await fh.read(buf, 0, len, off);
      t.is(bytesRead, len, what);
      t.true(buf.equals(largeFileBytes(off, len)), `${what}: the image's bytes at ${off}`);
    }
  } finally {
    await fh.close();
  }

  // The item went out raw from its layer ('identity', no cache file), and /v1/content serves it too.
  t.truthy(proxy.logs().find((r) => r.msg === 'content-from-layer' && r.digest === fileDigest), 'read from its layer');
  const res = await fetch(`${proxy.url}/v1/content/${fileDigest}`, { signal: AbortSignal.timeout(120_000) });
  t.is(res.status, 200);
  t.is(res.headers.get('starlight-encoding'), 'identity');
  t.is(Number(res.headers.get('content-length')), FILE_SIZE);
  const reader = res.body!.getReader();
  const head: Buffer[] = [];
  for (let n = 0; n < 2 * MIB; ) {
    const r = await reader.read();
    if (r.done) break;
    head.push(Buffer.from(r.value));
    n += r.value.length;
  }
  await reader.cancel();
  t.true(Buffer.concat(head).subarray(0, 2 * MIB).equals(largeFileBytes(0, 2 * MIB)), '/v1/content: the file from its first byte');
  t.is(res.headers.get('accept-ranges'), 'bytes');

  // A range near the end (across a chunk boundary): 206 with those bytes only; one past the end: 416.
  const from = FILE_SIZE - MIB - 4000;
  const ranged = await fetch(`${proxy.url}/v1/content/${fileDigest}`, { headers: { range: `bytes=${from}-` }, signal: AbortSignal.timeout(300_000) });
  t.is(ranged.status, 206);
  t.is(ranged.headers.get('content-range'), `bytes ${from}-${FILE_SIZE - 1}/${FILE_SIZE}`);
  t.true(Buffer.from(await ranged.arrayBuffer()).equals(largeFileBytes(from, FILE_SIZE - from)), '/v1/content range: the right bytes');
  const past = await fetch(`${proxy.url}/v1/content/${fileDigest}`, { headers: { range: `bytes=${FILE_SIZE}-` }, signal: AbortSignal.timeout(60_000) });
  t.is(past.status, 416);

  const peakDisk = await disk.stop();
  const rssMib = peakRssKb(proxy.pid) / 1024;
  t.log(`proxy peak RSS ${rssMib.toFixed(0)} MiB, peak data dir ${(peakDisk / MIB).toFixed(0)} MiB, file ${(FILE_SIZE / MIB).toFixed(0)} MiB`);
  t.true(rssMib > 0 && rssMib < RSS_BOUND_MIB, `proxy peak RSS ${rssMib} MiB < ${RSS_BOUND_MIB} MiB`);
  t.true(peakDisk < DISK_BOUND, `proxy data dir peaked at ${peakDisk} bytes, bound ${DISK_BOUND}`);
  const indexed = proxy.logs().find((r) => r.msg === 'layer-indexed');
  t.is(indexed?.fromLayer, 1, 'the index pass kept the file nowhere');
});
