/**
 * A file too large for the proxy's cache (issue 14, model weights): one layer holding a file of
 * --size GiB (test/helpers/large-file-layer.ts), a real docker-registry and `starlight proxy` with a
 * small --cache-size. Measures the index pass (POST /v1/notify), the file served from its layer blob
 * (GET /v1/content by a curl child: time to first byte, total, rate), the proxy's peak RSS (VmHWM) and
 * its data dir's peak, and gunzip alone over the blob (createDecompressor, the proxy's decoder): the cost per
 * byte of re-inflating a layer from its start, which decides whether restart points are worth it
 * (docs/design-notes.md "Files larger than the cache").
 *
 *   node dist/bench/large-file.js [--size 3] [--cache 256MiB] [--runs 1] [--gunzip BLOB ...]
 *
 * --gunzip: also time gunzip alone over other gzip blobs (e.g. a real layer of a bench image), since
 * the synthetic layer inflates far faster than real data.
 */
import { execFile } from 'node:child_process';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { parseArgs, promisify } from 'node:util';
import { pushImage } from '../fixtures/push-image.js';
import { createDecompressor } from '../src/layers/decompress.js';
import { RegistryClient } from '../src/oci/client.js';
import { MEDIA_TYPES } from '../src/oci/types.js';
import { writeLargeFileLayer } from '../test/helpers/large-file-layer.js';
import { peakDuSampler } from './drivers/proc.js';
import { startBenchProxy } from './drivers/proxy.js';
import { startBenchRegistry } from './drivers/registry.js';

const run = promisify(execFile);
const MIB = 1024 * 1024;

const { values } = parseArgs({ options: { size: { type: 'string', default: '3' }, cache: { type: 'string', default: '256MiB' }, runs: { type: 'string', default: '1' }, gunzip: { type: 'string', multiple: true, default: [] } } });
const size = Math.round(Number(values.size) * 1024 * MIB) + 777;

/** Seconds to gunzip `path` (bytes discarded). */
async function gunzipSeconds(path: string): Promise<number> {
  const t0 = performance.now();
  await pipeline(createReadStream(path, { highWaterMark: MIB }), createDecompressor({ compression: 'gzip' }), new Writable({ write: (_c, _e, cb) => cb() }));
  return (performance.now() - t0) / 1000;
}

function vmHwmMib(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : -1;
}

for (const other of values.gunzip) {
  const s = await gunzipSeconds(other);
  let out = 0;
  await pipeline(createReadStream(other, { highWaterMark: MIB }), createDecompressor({ compression: 'gzip' }), new Writable({ write: (c: Buffer, _e, cb) => ((out += c.length), cb()) }));
  console.log(`gunzip alone: ${other}: ${(statSync(other).size / MIB).toFixed(1)} MiB -> ${(out / MIB).toFixed(1)} MiB in ${s.toFixed(2)} s (${(out / MIB / s).toFixed(0)} MiB/s of output)`);
}

const dir = mkdtempSync(join(tmpdir(), 'sl-bench-large-'));
const reg = await startBenchRegistry(join(dir, 'registry'));
try {
  const blob = join(dir, 'layer.tar.gz');
  const { diffID, fileDigest } = await writeLargeFileLayer(blob, 'models/weights.bin', size);
  const blobMib = statSync(blob).size / MIB;
  const ref = `${reg.host}/models/big:v1`;
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [diffID] } }));
  await pushImage(new RegistryClient(), ref, { config, layers: [{ data: blob, mediaType: MEDIA_TYPES.ociLayerGzip }] });
  const gunzipS = await gunzipSeconds(blob);
  console.log(`file ${(size / MIB).toFixed(0)} MiB, blob ${blobMib.toFixed(1)} MiB; gunzip alone: ${gunzipS.toFixed(2)} s (${(size / MIB / gunzipS).toFixed(0)} MiB/s)`);
  console.log('| run | --cache-size | index s | index MiB/s | content TTFB s | content s | content MiB/s | proxy VmHWM MiB | data dir peak MiB |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (let r = 0; r < Number(values.runs); r++) {
    const data = join(dir, `proxy-${r}`);
    const proxy = await startBenchProxy(reg.host, data, ['--cache-size', values.cache, '--staging-size', '64MiB']);
    const disk = peakDuSampler([data]);
    try {
      const url = `http://${proxy.host}`;
      const t0 = performance.now();
      const res = await fetch(`${url}/v1/notify?ref=${encodeURIComponent(ref)}`, { method: 'POST', signal: AbortSignal.timeout(900_000) });
      if (res.status !== 200) throw new Error(`notify: ${res.status} ${await res.text()}`);
      const indexS = (performance.now() - t0) / 1000;
      const c = await run('curl', ['-sS', '--fail', '--max-time', '900', '-o', '/dev/null', '-w', '%{time_starttransfer} %{time_total} %{size_download}', `${url}/v1/content/${fileDigest}`]);
      const [ttfb, total, bytes] = c.stdout.trim().split(' ').map(Number) as [number, number, number];
      if (bytes !== size) throw new Error(`/v1/content sent ${bytes} bytes, not ${size}`);
      const peak = await disk.stop();
      console.log(
        `| ${r + 1} | ${values.cache} | ${indexS.toFixed(2)} | ${(size / MIB / indexS).toFixed(0)} | ${ttfb.toFixed(3)} | ${total.toFixed(2)} | ${(size / MIB / total).toFixed(0)} | ${vmHwmMib(proxy.pid).toFixed(0)} | ${(peak / MIB).toFixed(1)} |`,
      );
    } finally {
      await disk.stop();
      await proxy.stop();
      rmSync(data, { recursive: true, force: true });
    }
  }
} finally {
  await reg.stop();
  rmSync(dir, { recursive: true, force: true });
}
