/**
 * Proxy replicas on one PostgreSQL (issue 15): what the second replica costs for an image the first
 * indexed. `node dist/bench/replicas.js [--image python-web] [--runs 3]`. Per run, fresh everything: a
 * docker-registry, a PostgreSQL (drivers/postgres.ts), replicas A and B (`starlight proxy --db`), then
 * full deltas (no `have`) fetched to the end over loopback:
 * - A cold: A resolves, fetches and indexes every layer (the single-proxy first pull);
 * - B via peers: B copies the layers from the database and its cache misses from A (no blob fetch);
 * - A warm: A again, everything cached (the floor).
 * Prints seconds (median), MB on the wire, and each replica's registry blob fetches and peer fills.
 *
 * Not here: fan-out throughput of one replica (bench/proxy.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseMetrics } from '../src/prometheus.js';
import { startPostgres } from './drivers/postgres.js';
import { startBenchProxy, type BenchProxy } from './drivers/proxy.js';
import { startBenchRegistry } from './drivers/registry.js';
import { DEBIAN_IMAGES, type DebianImageName, ensureDebianImage } from './images/ensure.js';
import { median } from './report/aggregate.js';

const USAGE = `usage: node dist/bench/replicas.js [--image ${DEBIAN_IMAGES.join('|')}] [--runs 3]`;

async function fullDelta(proxy: BenchProxy, ref: string): Promise<{ seconds: number; bytes: number }> {
  const t0 = performance.now();
  const res = await fetch(`http://${proxy.host}/v1/delta?to=${encodeURIComponent(ref)}&deferred=1`, { signal: AbortSignal.timeout(600_000) });
  if (res.status !== 200) throw new Error(`delta from ${proxy.host}: HTTP ${res.status} ${await res.text()}`);
  let bytes = 0;
  for await (const b of res.body as unknown as AsyncIterable<Uint8Array>) bytes += b.length;
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

async function counters(proxy: BenchProxy): Promise<{ blobs: number; peers: number }> {
  const text = await (await fetch(`http://${proxy.host}/metrics`)).text();
  const samples = parseMetrics(text);
  const get = (k: string): number => samples.get(`starlight_proxy_${k}`) ?? NaN;
  return { blobs: get('registry_blob_fetches_total'), peers: get('peer_content_fetches_total') };
}

interface Row {
  step: string;
  seconds: number[];
  mb: number;
  blobs: string;
  peers: string;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { image: { type: 'string', default: 'python-web' }, runs: { type: 'string', default: '3' }, help: { type: 'boolean' } } });
  if (values.help) return void process.stdout.write(USAGE + '\n');
  const image = values.image as DebianImageName;
  const runs = Number(values.runs);
  const rows = new Map<string, Row>();
  const add = (step: string, r: { seconds: number; bytes: number }, c: { blobs: number; peers: number }): void => {
    const row = rows.get(step) ?? { step, seconds: [], mb: r.bytes / 1e6, blobs: String(c.blobs), peers: String(c.peers) };
    row.seconds.push(r.seconds);
    rows.set(step, row);
  };
  for (let run = 0; run < runs; run++) {
    const dir = mkdtempSync(join(tmpdir(), 'sl-bench-replicas-'));
    const cleanups: (() => unknown)[] = [];
    try {
      const reg = await startBenchRegistry(join(dir, 'registry'));
      cleanups.push(() => reg.stop());
      const img = await ensureDebianImage(reg.host, image);
      const db = await startPostgres({ teardown: (fn) => void cleanups.push(fn) });
      const a = await startBenchProxy(reg.host, join(dir, 'a'), ['--db', db.url]);
      cleanups.push(() => a.stop());
      const b = await startBenchProxy(reg.host, join(dir, 'b'), ['--db', db.url]);
      cleanups.push(() => b.stop());
      const ref = img.reference;
      const cold = await fullDelta(a, ref);
      const ca = await counters(a);
      add('A cold (index from the registry)', cold, ca);
      const viaPeers = await fullDelta(b, ref);
      add('B, image indexed through A', viaPeers, await counters(b));
      const warm = await fullDelta(a, ref);
      const ca2 = await counters(a);
      add('A warm (all cached)', warm, { blobs: ca2.blobs - ca.blobs, peers: ca2.peers - ca.peers });
    } finally {
      for (const c of cleanups.reverse()) await c();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  process.stdout.write(`image ${image}, ${runs} run(s), load ${loadavg().map((l) => l.toFixed(1)).join(' ')}\n`);
  process.stdout.write(`${'step'.padEnd(36)} ${'s (median)'.padStart(10)} ${'MB wire'.padStart(8)} ${'blob fetches'.padStart(12)} ${'peer fills'.padStart(10)}\n`);
  for (const r of rows.values()) {
    process.stdout.write(`${r.step.padEnd(36)} ${median(r.seconds).toFixed(2).padStart(10)} ${r.mb.toFixed(1).padStart(8)} ${r.blobs.padStart(12)} ${r.peers.padStart(10)}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
