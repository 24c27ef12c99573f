/**
 * Cost of "no unverified byte is served" (issue 14): time to the first 4 KiB of a 64 MiB file that
 * is still streaming, through a real mount, with per-chunk verification (TOC version 2: the head is
 * served once its 1 MiB chunk is verified) against the time to its last 4 KiB (what every read of the
 * file would wait with whole-file verification only: the whole item must arrive and hash first).
 *
 *   node dist/bench/verified-read.js [--mbit 32] [--runs 2]
 *
 * Needs root, FUSE, docker-registry (as the e2e mount tests). Prints one row per run.
 */
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pushLayers, startMount, startStack } from '../test/e2e/mount-support.js';
import { startRegistry } from '../test/helpers/registry.js';

const MIB = 1024 * 1024;

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    const { bytesRead } = await fh.read(b, 0, length, offset);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

async function once(mbit: number): Promise<{ head: number; tail: number }> {
  const fns: (() => unknown)[] = [];
  const t = { teardown: (fn: () => unknown) => void fns.push(fn), log: () => {} } as unknown as ExecutionContext;
  try {
    const reg = await startRegistry(t);
    const big = randomBytes(64 * MIB);
    const img = await pushLayers(t, reg, 'vread', [{ compression: 'gzip', entries: [{ path: 'big.bin', type: 'reg', content: big }] }]);
    const stack = await startStack(t, reg, { bandwidthBps: mbit * 1e6 });
    const m = await startMount(t, stack.proxyUrl, img.ref, { readDeadlineS: 600 });
    const p = join(m.mountpoint, 'big.bin');
    const t0 = performance.now();
    const [head, tail] = await Promise.all([
      readAt(p, 0, 4096).then((b) => ({ ok: b.equals(big.subarray(0, 4096)), ms: performance.now() - t0 })),
      readAt(p, big.length - 4096, 4096).then((b) => ({ ok: b.equals(big.subarray(big.length - 4096)), ms: performance.now() - t0 })),
    ]);
    if (!head.ok || !tail.ok) throw new Error('wrong bytes');
    return { head: head.ms, tail: tail.ms };
  } finally {
    for (const fn of fns.reverse()) await Promise.resolve(fn()).catch(() => undefined);
  }
}

const { values } = parseArgs({ options: { mbit: { type: 'string', default: '32' }, runs: { type: 'string', default: '2' } } });
console.log('| link | first 4 KiB (chunk-verified) | last 4 KiB (= whole-file verification) |');
console.log('|---|---|---|');
for (let i = 0; i < Number(values.runs); i++) {
  const r = await once(Number(values.mbit));
  console.log(`| ${values.mbit} Mbit/s, 20 ms RTT | ${(r.head / 1000).toFixed(2)} s | ${(r.tail / 1000).toFixed(2)} s |`);
}
process.exit(0);
