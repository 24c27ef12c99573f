/**
 * Ingest benchmark (issue 18): how fast the worker consumes a whole delta on loopback, no emulator,
 * next to what the link and the CPU allow. Per bench image (v1, fresh worker), `--runs` times:
 *
 * - **curl**: `curl -o /dev/null` of the image's delta from the proxy (warm cache): the transport floor;
 * - **floor**: in-process decode (zlib/brotli, sync) + sha256 of every item of the same delta, CPU
 *   seconds of one thread: the work any worker must do;
 * - **mount**: `starlight mount` (own content root, nothing present) from spawn to its `complete`
 *   line: wire MiB/s over the stream (from its `delta-header` to its `delta-complete` log line, wire
 *   bytes as the receiver counted them) and over the whole command, and the process's CPU seconds
 *   (all threads, /proc/<pid>/stat, read at `complete`), in total and from `delta-header` on (the
 *   stream's share; before it: node start, TOCs, tree, FUSE mount).
 * - with `--durable`: seconds from `delta-complete` until the content is durable (the store's
 *   `cas-durable` log line: one syncfs + log records, docs/design-notes.md "Durable content"); builds
 *   without that line show "–" after a 60 s wait.
 * - **after a mass delete** (unless `--no-after-delete`): once the runs of an image are done, their
 *   roots are deleted (thousands of files) and one more mount runs at once; its stream MiB/s and CPU
 *   are shown in their own columns, not in the medians.
 *
 * Every run's content root is kept until all runs are done (removed at the end, also on failure,
 * SIGINT or SIGTERM). Why: ext4 does not reuse an inode freed in the last 60–300 s while it can
 * find another (`recently_deleted`), and finding one rescans the inode bitmaps and tables per
 * allocation; deleting run N's thousands of files just before run N+1 creates as many made each run
 * slower than the one before (kernel CPU of the mount 1.58 → 3.69 → 4.62 s over three python-web
 * runs, docs/design-notes.md "Ingest"). That cost is real (a pull right after a GC pays it), so the
 * after-delete column reports it instead of letting it drift into the medians.
 *
 * Usage: npm run build && flock /tmp/sl-bench.lock node dist/bench/ingest.js [--images python-web,postgres] [--runs 3]
 *        [--starlight OTHER/bin/starlight.js] [--node-arg=--cpu-prof …] [--strace FILE] [--durable] [--no-after-delete]
 * Needs root (FUSE) and the Debian bench images (bench/images). Prints a markdown table.
 *
 * Not here: WAN emulation (bench/run.ts), the proxy's fan-out (bench/proxy.ts).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import zlib from 'node:zlib';
import { DeltaDecoder } from '../src/protocol/decoder.js';
import type { ContentItem } from '../src/protocol/types.js';
import { median } from './report/aggregate.js';
import { DEBIAN_IMAGES, ensureDebianImage, type DebianImageName } from './images/ensure.js';
import { Cleanups, stopChild } from './drivers/proc.js';
import { startBenchProxy, starlightBin } from './drivers/proxy.js';
import { startBenchRegistry } from './drivers/registry.js';
import { cpuSeconds, mainThreadCpu, minorFaults, sysSeconds } from './lib/proc-stat.js';

const MIB = 1024 * 1024;
/** Longest a mount may take to `complete`, ms. */
const MOUNT_TIMEOUT_MS = 180_000;
const DEFAULT_REGISTRY_DIR = '/var/cache/starlight/bench-registry';

function post(host: string, path: string): Promise<number> {
  const i = host.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: host.slice(0, i), port: Number(host.slice(i + 1)), path, method: 'POST', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The whole delta in memory (warms the proxy's cache too). */
function fetchAll(url: string): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`GET ${url}: HTTP ${res.statusCode}`));
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => resolve(chunks));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function curl(url: string): Promise<{ seconds: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '-o', '/dev/null', '-w', '%{time_total} %{size_download}', url], (err, out) => {
      if (err) return reject(err);
      const [s, b] = out.trim().split(' ');
      resolve({ seconds: Number(s), bytes: Number(b) });
    });
  });
}

function decodeSync(item: ContentItem, data: Buffer): Buffer {
  switch (item.encoding) {
    case 'identity':
      return data;
    case 'br':
      return zlib.brotliDecompressSync(data);
    case 'gzip':
      return zlib.gunzipSync(data);
    case 'deflate-raw':
      return zlib.inflateRawSync(data);
    case 'zstd':
      throw new Error('zstd items are not produced by this proxy');
  }
}

/** Decode + hash of every item, one thread; returns CPU seconds and totals. */
function floor(chunks: Buffer[]): { cpu: number; items: number; content: number; wire: number } {
  const dec = new DeltaDecoder();
  const parts = new Map<number, Buffer[]>();
  const whole: { item: ContentItem; data: Buffer }[] = [];
  let items: ContentItem[] = [];
  let wire = 0;
  for (const c of chunks) {
    wire += c.length;
    for (const ev of dec.push(c)) {
      if (ev.type === 'header') items = ev.header.items;
      if (ev.type !== 'chunk') continue;
      let p = parts.get(ev.index);
      if (!p) parts.set(ev.index, (p = []));
      p.push(ev.data);
      if (ev.last) {
        whole.push({ item: items[ev.index]!, data: p.length === 1 ? p[0]! : Buffer.concat(p) });
        parts.delete(ev.index);
      }
    }
  }
  dec.finish();
  let content = 0;
  const t0 = process.cpuUsage();
  for (const { item, data } of whole) {
    const raw = decodeSync(item, data);
    const d = 'sha256:' + createHash('sha256').update(raw).digest('hex');
    if (d !== item.digest) throw new Error(`floor: item ${item.digest} hashes to ${d}`);
    content += raw.length;
  }
  const u = process.cpuUsage(t0);
  return { cpu: (u.user + u.system) / 1e6, items: whole.length, content, wire };
}

interface MountRun {
  /** Spawn → `complete`, s. */
  totalS: number;
  /** `delta-header` → `delta-complete` log lines, s. */
  streamS: number;
  wireBytes: number;
  cpu: number;
  /** CPU seconds from `delta-header` (read when the bench sees that line) to `complete`. */
  streamCpu: number;
  /** The main thread's share of streamCpu. */
  streamMainCpu: number;
  /** Kernel CPU seconds of the whole run (file creation and writes, socket reads). */
  sys: number;
  /** Minor page faults from `delta-header` to `complete`. */
  streamFaults: number;
  /** `delta-complete` → `cas-durable`, s (with --durable; NaN if the line did not come). */
  durableS: number;
}

/** How long --durable waits for `cas-durable` after `complete`. */
const DURABLE_WAIT_MS = 60_000;

/** The mount being measured, to stop on SIGINT/SIGTERM (so the bench reaches its cleanups). */
let current: ChildProcess | undefined;

/**
 * One `starlight mount` of `ref` with an empty root (a new directory `root`, left in place: see the
 * file comment), until `complete`; then unmounts.
 */
async function mountOnce(proxy: string, ref: string, root: string, how: { nodeArgs: string[]; bin: string; strace?: string; durable: boolean }): Promise<MountRun> {
  mkdirSync(root);
  const dir = join(root, 'mnt');
  const t0 = Date.now();
  const argv = [...how.nodeArgs, how.bin, 'mount', '--proxy', `http://${proxy}`, '--root', join(root, 'state'), ref, dir];
  // --strace: syscall counts of the mount (its CPU figures are then strace's own, not meaningful).
  const [cmd, args] = how.strace ? ['strace', ['-f', '-c', '-o', how.strace, process.execPath, ...argv]] : [process.execPath, argv];
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, STARLIGHT_LOG: 'info' },
  });
  current = child;
  try {
    let err = '';
    let headerAt = 0;
    let completeAt = 0;
    let wireBytes = 0;
    let cpuAtHeader = 0;
    let mainAtHeader = 0;
    let mainAtComplete = 0;
    let sys = 0;
    let faultsAtHeader = 0;
    let faultsAtComplete = 0;
    let durableAt = 0;
    let onDurable: (() => void) | undefined;
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
      let nl: number;
      while ((nl = err.indexOf('\n')) >= 0) {
        const line = err.slice(0, nl);
        err = err.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        const rec = JSON.parse(line) as { msg: string; time: string; wireBytes?: number };
        if (rec.msg === 'delta-header') {
          headerAt = Date.parse(rec.time);
          cpuAtHeader = cpuSeconds(child.pid!);
          mainAtHeader = mainThreadCpu(child.pid!);
          faultsAtHeader = minorFaults(child.pid!);
        }
        if (rec.msg === 'delta-complete') {
          completeAt = Date.parse(rec.time);
          wireBytes = rec.wireBytes ?? 0;
        }
        if (rec.msg === 'cas-durable' && durableAt === 0) {
          durableAt = Date.parse(rec.time);
          onDurable?.();
        }
      }
    });
    const cpu = await new Promise<number>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`mount of ${ref} not complete within ${MOUNT_TIMEOUT_MS} ms`)), MOUNT_TIMEOUT_MS);
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        if (/^complete$/m.test(out)) {
          clearTimeout(timer);
          mainAtComplete = mainThreadCpu(child.pid!);
          sys = sysSeconds(child.pid!);
          faultsAtComplete = minorFaults(child.pid!);
          resolve(cpuSeconds(child.pid!));
        }
      });
      child.once('exit', (c) => reject(new Error(`mount exited (${c}) before complete: ${err.slice(-2000)}`)));
    });
    const totalS = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 50)); // let the last log line arrive
    if (how.durable && durableAt === 0) {
      await new Promise<void>((r) => {
        const timer = setTimeout(r, DURABLE_WAIT_MS);
        onDurable = () => {
          clearTimeout(timer);
          r();
        };
      });
    }
    const durableS = durableAt === 0 ? NaN : (durableAt - completeAt) / 1000;
    return { totalS, streamS: (completeAt - headerAt) / 1000, wireBytes, cpu, streamCpu: cpu - cpuAtHeader, streamMainCpu: mainAtComplete - mainAtHeader, sys, streamFaults: faultsAtComplete - faultsAtHeader, durableS };
  } finally {
    current = undefined;
    await stopChild(child);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      images: { type: 'string', default: 'python-web,postgres' },
      runs: { type: 'string', default: '3' },
      'registry-dir': { type: 'string', default: DEFAULT_REGISTRY_DIR },
      'node-arg': { type: 'string', multiple: true, default: [] },
      /** Another build's bin/starlight.js (before/after comparisons). */
      starlight: { type: 'string' },
      /** Write `strace -f -c` of each mount to FILE.<image>.<run>. */
      strace: { type: 'string' },
      /** Also wait for and report the time until the content is durable (`cas-durable`). */
      durable: { type: 'boolean', default: false },
      /** Skip the extra run right after deleting the image's roots (see the file comment). */
      'no-after-delete': { type: 'boolean', default: false },
    },
  });
  const afterDelete = !values['no-after-delete'];
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = true;
    current?.kill(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const images = values.images!.split(',') as DebianImageName[];
  for (const i of images) if (!(DEBIAN_IMAGES as readonly string[]).includes(i)) throw new Error(`unknown image ${i}`);
  const runs = Number(values.runs) || 3;
  const cleanups = new Cleanups();
  const rows: string[][] = [];
  try {
    const work = mkdtempSync(join(tmpdir(), 'sl-ingest-'));
    cleanups.add('mount roots', () => rmSync(work, { recursive: true, force: true }));
    let seq = 0;
    const nextRoot = (): string => join(work, String(++seq));
    const reg = await startBenchRegistry(values['registry-dir']!);
    cleanups.add('registry', () => reg.stop());
    const data = mkdtempSync(join(tmpdir(), 'sl-ingest-proxy-'));
    cleanups.add('proxy data', () => rmSync(data, { recursive: true, force: true }));
    const proxy = await startBenchProxy(reg.host, data);
    cleanups.add('proxy', () => proxy.stop());
    for (const name of images) {
      const img = await ensureDebianImage(reg.host, name);
      const ref = img.reference;
      if ((await post(proxy.host, `/v1/notify?ref=${encodeURIComponent(ref)}`)) !== 200) throw new Error(`notify ${ref} failed`);
      const url = `http://${proxy.host}/v1/delta?to=${encodeURIComponent(ref)}`;
      const body = await fetchAll(url);
      const r = { curlS: [] as number[], floorCpu: [] as number[], streamMiBs: [] as number[], totalMiBs: [] as number[], totalS: [] as number[], cpu: [] as number[], streamCpu: [] as number[], streamMainCpu: [] as number[], durableS: [] as number[] };
      let f = floor(body);
      const roots: string[] = [];
      for (let run = 0; run < runs; run++) {
        if (interrupted) throw new Error('interrupted');
        r.curlS.push((await curl(url)).seconds);
        f = floor(body);
        r.floorCpu.push(f.cpu);
        const strace = values.strace ? `${values.strace}.${name}.${run + 1}` : undefined;
        roots.push(nextRoot());
        const m = await mountOnce(proxy.host, ref, roots.at(-1)!, { nodeArgs: values['node-arg']!, bin: values.starlight ?? starlightBin(), strace, durable: values.durable! });
        r.streamMiBs.push(m.wireBytes / MIB / m.streamS);
        r.totalMiBs.push(f.wire / MIB / m.totalS);
        r.totalS.push(m.totalS);
        r.cpu.push(m.cpu);
        r.streamCpu.push(m.streamCpu);
        r.streamMainCpu.push(m.streamMainCpu);
        if (!Number.isNaN(m.durableS)) r.durableS.push(m.durableS);
        console.error(`${name} run ${run + 1}: mount ${m.totalS.toFixed(2)} s (stream ${m.streamS.toFixed(2)} s), cpu ${m.cpu.toFixed(2)} s (stream ${m.streamCpu.toFixed(2)} s, main thread ${m.streamMainCpu.toFixed(2)} s; kernel ${m.sys.toFixed(2)} s in all; ${m.streamFaults} minor faults in the stream)${values.durable ? `, durable ${m.durableS.toFixed(2)} s after delta-complete` : ''}, floor ${f.cpu.toFixed(2)} s, curl ${r.curlS.at(-1)!.toFixed(2)} s`);
      }
      let deleted: MountRun | undefined;
      if (afterDelete && !interrupted) {
        const t0 = Date.now();
        for (const r of roots) rmSync(r, { recursive: true, force: true });
        console.error(`${name}: deleted the ${roots.length} runs' roots in ${((Date.now() - t0) / 1000).toFixed(2)} s; one run right after:`);
        deleted = await mountOnce(proxy.host, ref, nextRoot(), { nodeArgs: values['node-arg']!, bin: values.starlight ?? starlightBin(), durable: false });
        console.error(`${name} after a mass delete: stream ${deleted.streamS.toFixed(2)} s, cpu ${deleted.cpu.toFixed(2)} s (stream ${deleted.streamCpu.toFixed(2)} s, main thread ${deleted.streamMainCpu.toFixed(2)} s; kernel ${deleted.sys.toFixed(2)} s in all)`);
      }
      const med = (a: number[]) => median(a);
      rows.push([
        name,
        String(f.items),
        (f.wire / MIB).toFixed(1),
        (f.content / MIB).toFixed(1),
        `${med(r.curlS).toFixed(2)} (${(f.wire / MIB / med(r.curlS)).toFixed(0)})`,
        med(r.floorCpu).toFixed(2),
        med(r.totalS).toFixed(2),
        med(r.streamMiBs).toFixed(0),
        med(r.totalMiBs).toFixed(0),
        med(r.cpu).toFixed(2),
        `${med(r.streamCpu).toFixed(2)} (${med(r.streamMainCpu).toFixed(2)})`,
        (med(r.streamCpu) / med(r.floorCpu)).toFixed(2),
        ...(values.durable ? [r.durableS.length === 0 ? '–' : med(r.durableS).toFixed(2)] : []),
        ...(afterDelete ? [deleted === undefined ? '–' : `${(deleted.wireBytes / MIB / deleted.streamS).toFixed(0)} / ${deleted.streamCpu.toFixed(2)} (${(deleted.streamCpu / med(r.floorCpu)).toFixed(2)}×)`] : []),
      ]);
    }
  } finally {
    const errs = await cleanups.run();
    for (const e of errs) console.error(`cleanup: ${e}`);
  }
  const head = ['image', 'items', 'wire MiB', 'content MiB', 'curl s (MiB/s)', 'floor CPU s', 'mount s', 'stream MiB/s', 'mount MiB/s', 'mount CPU s', 'stream CPU s (main thread)', 'stream CPU / floor', ...(values.durable ? ['durable s after delta-complete'] : []), ...(afterDelete ? ['after a mass delete: stream MiB/s / CPU s (× floor)'] : [])];
  console.log(`medians of ${runs} runs (each on a new root, all kept until the end: no run pays for deleting the previous one's files); loopback, no emulator; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const row of rows) console.log(`| ${row.join(' | ')} |`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
