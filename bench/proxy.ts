/**
 * Proxy benchmark on loopback: a real docker-registry, one synthetic image (incompressible binaries +
 * compressible text files), `starlight proxy` as a child process. Prints: time to the first header
 * byte and to the end of the stream, cold (index + stream) and warm (cached), loopback throughput of a
 * warm delta in MB/s of wire bytes, and proxy CPU seconds per GB sent (from /proc/<pid>/stat).
 *
 * Usage: npm run build && node dist/bench/proxy.js [--mb 150] [--runs 3]
 *
 * With `--images python-web,redis,…` (Debian bench images, bench/images/ensure.ts) it measures FIRST
 * CONTACT instead: per image and run a fresh proxy that has never seen the image gets one delta
 * request; printed: time to the decoded HEADER frame (the worker can mount), the proxy's CPU seconds
 * (all its threads) from the request to that header, time to the end of the stream, the image's uncompressed bytes per second of time to header (indexing MB/s), the time
 * until the background encoder finished (a POST /v1/notify after the delta returns then), and a warm
 * delta after that (header time, wire bytes: the cached, compressed encodings).
 *
 *   flock /tmp/sl-bench.lock node dist/bench/proxy.js --images python-web,redis,postgres --runs 3
 *
 * The cold request asks `deferred=1`.
 *
 * With `--fanout` it measures many concurrent warm pulls against docker-registry (bench/proxy-fanout.ts):
 *
 *   flock /tmp/sl-bench.lock node dist/bench/proxy.js --fanout --images python-web,redis --clients 1,10,50 --replicas 1,2 --runs 3
 *
 * Not here: WAN emulation or worker-side costs (bench/run.ts drives those).
 */
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { startRegistry } from '../test/helpers/registry.js';
import { DeltaDecoder } from '../src/protocol/index.js';
import { decodeToc } from '../src/layers/toc-codec.js';
import { DEBIAN_IMAGES, type DebianImageName, ensureDebianImage } from './images/ensure.js';
import { tempDir } from '../test/helpers/tmp.js';
import { makeLayer, pushLayers, startProxyProcess } from '../test/e2e/proxy-support.js';
import { fanout } from './proxy-fanout.js';
import { cpuSeconds } from './lib/proc-stat.js';
import { PROXY_LOG_ENV } from './drivers/proxy.js';

const USAGE = `usage: node dist/bench/proxy.js [--mb 150] [--runs 3]              synthetic image, cold and warm delta
       node dist/bench/proxy.js --images python-web,redis [--runs 3]   first contact per Debian image
       node dist/bench/proxy.js --fanout --images python-web [--clients 1,10,50] [--replicas 1,2] [--runs 3]
Run under flock /tmp/sl-bench.lock; see the header of bench/proxy.ts.`;

async function timedDelta(url: string): Promise<{ ttfbMs: number; totalMs: number; bytes: number }> {
  const t0 = performance.now();
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttfb = -1;
  let bytes = 0;
  for await (const b of res.body as unknown as AsyncIterable<Uint8Array>) {
    if (ttfb < 0) ttfb = performance.now() - t0;
    bytes += b.length;
  }
  return { ttfbMs: ttfb, totalMs: performance.now() - t0, bytes };
}

/** One delta, timed to its decoded header and to its end; the image's uncompressed size from the header's TOCs. */
async function timedHeader(url: string, onHeader?: () => void): Promise<{ headerMs: number; totalMs: number; bytes: number; uncompressed: number; items: number }> {
  const t0 = performance.now();
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const dec = new DeltaDecoder();
  let headerMs = -1;
  let bytes = 0;
  let uncompressed = 0;
  let items = 0;
  for await (const b of res.body as unknown as AsyncIterable<Uint8Array>) {
    bytes += b.length;
    for (const ev of dec.push(b)) {
      if (ev.type !== 'header') continue;
      headerMs = performance.now() - t0;
      onHeader?.();
      uncompressed = ev.header.layers.reduce((sum, l) => sum + decodeToc(l.toc).uncompressedSize, 0);
      items = ev.header.items.length;
    }
  }
  dec.finish();
  return { headerMs, totalMs: performance.now() - t0, bytes, uncompressed, items };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** First contact per Debian bench image (see the file comment). */
async function coldImages(t: ExecutionContext, images: DebianImageName[], runs: number): Promise<void> {
  // Debug aid, as for run.js (bench/drivers/proxy.ts): each proxy's info log appended to this file.
  const logFile = process.env[PROXY_LOG_ENV];
  const reg = await startRegistry(t);
  const head = ['image', 'run', 'time to header s', 'proxy CPU s to header', 'stream end s', 'encoded (warm) s', 'uncomp MB', 'index MB/s', 'items', 'wire MB', 'warm header s', 'warm wire MB'];
  const rows: string[][] = [];
  for (const image of images) {
    const pushed = await ensureDebianImage(reg.url, image);
    const hdr: number[] = [];
    const cpu: number[] = [];
    for (let run = 0; run < runs; run++) {
      const p = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'starlight-bench-')], logFile ? { env: { STARLIGHT_LOG: 'info' } } : {});
      const t0 = performance.now();
      // The proxy's CPU (all threads) from the request to the header: what indexing costs on these cores.
      const c0 = cpuSeconds(p.pid);
      let headerCpu = NaN;
      const d = await timedHeader(`${p.url}/v1/delta?to=${pushed.reference}&deferred=1`, () => void (headerCpu = cpuSeconds(p.pid) - c0));
      const n = await fetch(`${p.url}/v1/notify?ref=${pushed.reference}`, { method: 'POST' });
      if (n.status !== 200) throw new Error(`notify: HTTP ${n.status}: ${await n.text()}`);
      const warmS = (performance.now() - t0) / 1000;
      const warm = await timedHeader(`${p.url}/v1/delta?to=${pushed.reference}`);
      await p.stop();
      if (logFile) appendFileSync(logFile, p.logs().map((r) => `${JSON.stringify(r)}\n`).join(''));
      hdr.push(d.headerMs / 1000);
      cpu.push(headerCpu);
      rows.push([
        image,
        String(run + 1),
        (d.headerMs / 1000).toFixed(2),
        headerCpu.toFixed(2),
        (d.totalMs / 1000).toFixed(2),
        warmS.toFixed(2),
        (d.uncompressed / 1e6).toFixed(1),
        (d.uncompressed / 1e6 / (d.headerMs / 1000)).toFixed(0),
        String(d.items),
        (d.bytes / 1e6).toFixed(1),
        (warm.headerMs / 1000).toFixed(2),
        (warm.bytes / 1e6).toFixed(1),
      ]);
    }
    rows.push([image, 'median', median(hdr).toFixed(2), median(cpu).toFixed(2), '', '', '', '', '', '', '', '']);
  }
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log(USAGE);
    return;
  }
  const mb = Number(args[args.indexOf('--mb') + 1] ?? 150) || 150;
  const runs = Number(args[args.indexOf('--runs') + 1] ?? 3) || 3;
  const cleanups: (() => unknown)[] = [];
  const t = { teardown: (fn: () => unknown) => cleanups.push(fn), log: console.log } as unknown as ExecutionContext;
  try {
    if (args.includes('--images') || args.includes('--fanout')) {
      const images = (args.includes('--images') ? (args[args.indexOf('--images') + 1] ?? '') : 'python-web').split(',').filter((s) => s !== '');
      for (const i of images) if (!(DEBIAN_IMAGES as readonly string[]).includes(i)) throw new Error(`--images: unknown image ${i} (one of ${DEBIAN_IMAGES.join(', ')})`);
      if (args.includes('--fanout')) {
        const list = (flag: string, dflt: string): number[] => {
          const v = (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined) ?? dflt;
          const ns = v.split(',').map(Number);
          if (ns.some((n) => !Number.isSafeInteger(n) || n < 1)) throw new Error(`${flag}: comma-separated positive integers, got ${v}`);
          return ns;
        };
        await fanout(t, { images: images as DebianImageName[], clients: list('--clients', '1,10,50'), replicas: list('--replicas', '1,2'), runs });
        return;
      }
      await coldImages(t, images as DebianImageName[], runs);
      return;
    }
    const reg = await startRegistry(t);
    const spec: Record<string, Buffer> = {};
    const binMb = Math.round(mb * 0.6);
    for (let i = 0; i < binMb / 2; i++) spec[`usr/lib/libbench${i}.so.1`] = randomBytes(2 * 1024 * 1024);
    const words = ['alpha', 'beta', 'gamma', 'delta', 'config', 'value', 'starlight', 'proxy'];
    const textFiles = Math.round(((mb - binMb) * 1024) / 20);
    for (let i = 0; i < textFiles; i++) {
      const lines: string[] = [];
      for (let l = 0; l < 400; l++) lines.push(`${words[(i + l) % 8]} = ${(i * 7919 + l * 31) % 100000} ${words[l % 8]}`);
      spec[`usr/share/bench/f${i}.txt`] = Buffer.from(lines.join('\n'));
    }
    const layer = makeLayer(t, spec);
    await pushLayers(reg.host, 'bench:v1', [layer]);
    const rows: string[][] = [];
    for (let run = 0; run < runs; run++) {
      const p = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'starlight-bench-')]);
      const url = `${p.url}/v1/delta?to=${reg.host}/bench:v1`;
      const c0 = cpuSeconds(p.pid);
      const cold = await timedDelta(url);
      const c1 = cpuSeconds(p.pid);
      const warm = await timedDelta(url);
      const c2 = cpuSeconds(p.pid);
      rows.push([
        String(run + 1),
        cold.ttfbMs.toFixed(0),
        cold.totalMs.toFixed(0),
        warm.ttfbMs.toFixed(0),
        warm.totalMs.toFixed(0),
        (warm.bytes / 1e6 / (warm.totalMs / 1000)).toFixed(0),
        ((c2 - c1) / (warm.bytes / 1e9)).toFixed(2),
        (c1 - c0).toFixed(2),
        (warm.bytes / 1e6).toFixed(1),
      ]);
      await p.stop();
    }
    console.log(`image: ${mb} MB raw (${binMb} MB random .so, ${textFiles} text files), layer gz ${(layer.gz.length / 1e6).toFixed(1)} MB`);
    const head = ['run', 'cold TTFB ms', 'cold total ms', 'warm TTFB ms', 'warm total ms', 'warm MB/s', 'CPU s/GB (warm)', 'cold CPU s', 'wire MB'];
    console.log(head.join(' | '));
    for (const r of rows) console.log(r.join(' | '));
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}

await main();
