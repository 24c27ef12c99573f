/**
 * Queue-jump latency (issue 11): how long a read that blocks on a file the stream has not reached yet
 * waits for its bytes, while the stream saturates the link. Real docker-registry, `starlight proxy`
 * (warm: the image indexed and cached first), the WAN emulator (bench/wan) and `starlight mount`
 * (FUSE), all child processes on 127.0.0.1.
 *
 * Per run: a fresh mount (own worker root) of an image of `--files` incompressible files of
 * `--file-mib` MiB each; once the stream has delivered `--start-at` of the image, the file at
 * `--target-at` of the planned order is read whole, timed from the read() call to its last byte.
 * Also reported: how far the stream (bytes the link delivered) was when the read started and returned,
 * against how far it must go before it sends the file in planned order, and how the file arrived (a
 * session bump on the stream, or an out-of-order GET /v1/content after the jump's fallback timer).
 *
 *   flock /tmp/sl-bench.lock node dist/bench/queue-jump.js --rtt 150 --bandwidth 100mbit --runs 5
 *
 * The target is ≤ 2 RTT + size/bandwidth + 100 ms (printed below the table).
 * Needs root, FUSE, docker-registry (as the e2e mount tests). Everything started is stopped and every
 * mount detached at the end, also on failure.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { LayerSpec } from '../fixtures/image-writer.js';
import { metrics } from '../test/e2e/proxy-support.js';
import { plannedHeader, pushLayers, sleep, startMount, startStack, warmProxy } from '../test/e2e/mount-support.js';
import { startRegistry } from '../test/helpers/registry.js';
import { teardownContext } from './lib/teardown-context.js';
import { parseBandwidth } from './lib/units.js';
import { median } from './report/aggregate.js';

const MIB = 1024 * 1024;

interface Options {
  rttMs: number;
  bandwidthBps: number;
  runs: number;
  files: number;
  fileBytes: number;
  /** Share of the image's bytes the stream has delivered when the read starts. */
  startAt: number;
  /** Position of the read file in the planned order, as a share of the items. */
  targetAt: number;
}

interface Run {
  readMs: number;
  /** Bytes the link delivered before the read, during it. */
  beforeBytes: number;
  duringBytes: number;
  /** Bytes the stream had to deliver before the file in planned order. */
  planBytesBefore: number;
  how: string;
  ok: boolean;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rtt: { type: 'string', default: '150' },
      bandwidth: { type: 'string', default: '100mbit' },
      runs: { type: 'string', default: '5' },
      files: { type: 'string', default: '120' },
      'file-mib': { type: 'string', default: '1' },
      'start-at': { type: 'string', default: '0.2' },
      'target-at': { type: 'string', default: '0.9' },
    },
  });
  const o: Options = {
    rttMs: Number(values.rtt),
    bandwidthBps: parseBandwidth(values.bandwidth!),
    runs: Number(values.runs),
    files: Number(values.files),
    fileBytes: Math.round(Number(values['file-mib']) * MIB),
    startAt: Number(values['start-at']),
    targetAt: Number(values['target-at']),
  };
  const ctx = teardownContext();
  const rows: Run[] = [];
  try {
    const reg = await startRegistry(ctx.t);
    const data = new Map<string, Buffer>();
    for (let i = 0; i < o.files; i++) data.set(`data/f${String(i).padStart(4, '0')}.bin`, randomBytes(o.fileBytes));
    const layers: LayerSpec[] = [
      { compression: 'gzip', entries: [{ path: 'data', type: 'dir' }, ...[...data].map(([path, content]) => ({ path, type: 'reg' as const, content }))] },
    ];
    const img = await pushLayers(ctx.t, reg, 'jump', layers);
    const stack = await startStack(ctx.t, reg, { bandwidthBps: o.bandwidthBps, rttMs: o.rttMs });
    await warmProxy(stack, img.ref);
    const header = await plannedHeader(stack, img.ref);
    const total = header.items.reduce((a, it) => a + it.encodedSize, 0);
    const k = Math.min(header.items.length - 1, Math.floor(o.targetAt * header.items.length));
    const target = header.items[k]!;
    const path = [...data.keys()].find((p) => 'sha256:' + createHash('sha256').update(data.get(p)!).digest('hex') === target.digest)!;
    const planBytesBefore = header.items.slice(0, k).reduce((a, it) => a + it.encodedSize, 0);
    console.error(`# image: ${header.items.length} items, ${(total / MIB).toFixed(1)} MiB; reading ${path} (item #${k + 1}, ${(planBytesBefore / MIB).toFixed(1)} MiB into the stream)`);

    for (let r = 0; r < o.runs; r++) {
      const run = teardownContext();
      try {
        const m = await startMount(run.t, stack.proxyUrl, img.ref);
        stack.wan.resetStats();
        const before = await metrics(stack.proxy.url);
        // The mount printed `mounted` after the header: wait until the stream is well under way.
        const deadline = Date.now() + 120_000;
        while (stack.wan.stats().bytesDown < o.startAt * total && Date.now() < deadline) await sleep(20);
        const d0 = stack.wan.stats().bytesDown;
        const t0 = performance.now();
        const got = await readFile(join(m.mountpoint, path));
        const readMs = performance.now() - t0;
        const d1 = stack.wan.stats().bytesDown;
        const after = await metrics(stack.proxy.url);
        const delta = (name: string): number => (after.get(name) ?? 0) - (before.get(name) ?? 0);
        const fetched = delta('starlight_proxy_content_requests_total');
        const bumps = delta('starlight_proxy_session_bumps_total');
        const fallback = m.logs().some((l) => l.msg === 'content-jump-fallback');
        const how = `${bumps} bump(s), ${fetched} content GET(s)${fallback ? ', jump fallback fired' : ''}`;
        const ok = got.equals(data.get(path)!);
        rows.push({ readMs, beforeBytes: d0, duringBytes: d1 - d0, planBytesBefore, how, ok });
        console.error(`# run ${r + 1}: ${readMs.toFixed(0)} ms, ${how}${ok ? '' : ', WRONG BYTES'}`);
      } finally {
        await run.teardown();
      }
    }
  } finally {
    await ctx.teardown();
  }
  const sizeMs = (o.fileBytes * 8 * 1000) / o.bandwidthBps;
  const targetMs = 2 * o.rttMs + sizeMs + 100;
  const mb = (b: number): string => (b / 1e6).toFixed(1);
  console.log(`| run | read → bytes ms | stream MB at the read | stream MB at its return | stream MB before the file (plan) | how it came |`);
  console.log('|---|---|---|---|---|---|');
  rows.forEach((r, i) =>
    console.log(`| ${i + 1} | ${r.readMs.toFixed(0)} | ${mb(r.beforeBytes)} | ${mb(r.beforeBytes + r.duringBytes)} | ${mb(r.planBytesBefore)} | ${r.how}${r.ok ? '' : ' WRONG BYTES'} |`),
  );
  if (rows.length > 0) console.log(`| **median** | **${median(rows.map((r) => r.readMs)).toFixed(0)}** |  |  |  |  |`);
  console.log(`\ntarget ≤ 2 RTT + size/bandwidth + 100 ms = ${2 * o.rttMs} + ${sizeMs.toFixed(0)} + 100 = ${targetMs.toFixed(0)} ms (RTT ${o.rttMs} ms, ${o.bandwidthBps / 1e6} Mbit/s, ${(o.fileBytes / MIB).toFixed(2)} MiB file)`);
  return rows.length === o.runs && rows.every((r) => r.ok) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
