/**
 * Layer indexing throughput: fetches the largest layer of a Debian bench image from a local registry
 * and indexes it with buildLayerToc (gunzip + tar parse + sha256 of the tar and of every file) N
 * times, with the native pass (buildLayerTocNative: the same on the libuv pool, headers read on the
 * main thread; the proxy's first-contact pass, here without staging), and a gunzip-only pass over the
 * same fetch with the indexer's own decoder (createDecompressor: ISA-L when the addon is built, else
 * node:zlib) — the floor: indexing cannot beat inflate.
 * Prints one table row per pass and a median row; MB/s are of uncompressed tar bytes (MB = 10^6).
 *
 *   node dist/bench/index-layer.js [--registry HOST:PORT] [--image python-web] [--runs 5]
 *                                  [--only index|native|gunzip]
 *   node --cpu-prof --cpu-prof-dir /tmp/prof dist/bench/index-layer.js --runs 1 --only index
 *
 * Without --registry a docker-registry is started on a free port with storage in a temp dir (removed
 * at exit). The image is built or reused by bench/images/ensure.ts (cached under /var/cache/starlight).
 *
 * Not here: indexing itself (src/layers/indexer.ts), the proxy's indexer service.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { StarlightError } from '../src/errors.js';
import { createDecompressor } from '../src/layers/decompress.js';
import { buildLayerToc } from '../src/layers/indexer.js';
import { buildLayerTocNative } from '../src/layers/native-index.js';
import { nativeTarWalkFor } from '../src/layers/decompress.js';
import { RegistryClient } from '../src/oci/client.js';
import type { Descriptor } from '../src/oci/types.js';
import { startBenchRegistry } from './drivers/registry.js';
import { DEBIAN_IMAGES, ensureDebianImage, type DebianImageName } from './images/ensure.js';
import { mainThreadCpu } from './lib/proc-stat.js';

/** Default passes of each kind. */
const DEFAULT_RUNS = 5;
const MB = 1e6;

interface Pass {
  kind: 'index' | 'native' | 'gunzip';
  seconds: number;
  /** CPU seconds of the whole process (main thread + the libuv pool): stable on a busy machine. */
  cpu: number;
  /** CPU seconds of the main thread alone (/proc/<pid>/task/<pid>/stat): what the pass costs the proxy's one thread. */
  main: number;
  uncompressed: number;
  entries?: number;
}

/** Runs one pass of `kind`, timing wall, process CPU and main-thread busy time. */
async function measure(kind: Pass['kind'], run: () => Promise<{ uncompressed: number; entries?: number }>): Promise<Pass> {
  const c0 = process.cpuUsage();
  const m0 = mainThreadCpu();
  const t0 = process.hrtime.bigint();
  const r = await run();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { kind, seconds, cpu: cpuSeconds(c0), main: mainThreadCpu() - m0, ...r };
}

async function indexPass(client: RegistryClient, ref: string, desc: Descriptor, diffID: string | undefined): Promise<Pass> {
  return measure('index', async () => {
    const toc = await buildLayerToc(await client.fetchBlob(ref, desc), { mediaType: desc.mediaType, expectedDiffID: diffID, layerName: desc.digest });
    return { uncompressed: toc.uncompressedSize, entries: toc.entries.length };
  });
}

/** The native pass (no file staged: the same work as indexPass). */
async function nativePass(client: RegistryClient, ref: string, desc: Descriptor, diffID: string | undefined): Promise<Pass> {
  return measure('native', async () => {
    const toc = await buildLayerTocNative(await client.fetchBlob(ref, desc), { expectedDiffID: diffID, layerName: desc.digest, stageMax: 0, onFile: () => true, write: () => undefined });
    return { uncompressed: toc.uncompressedSize, entries: toc.entries.length };
  });
}

/** Fetch (with the client's digest check) + gunzip with the indexer's decoder (no diffID hash), counting bytes. */
async function gunzipPass(client: RegistryClient, ref: string, desc: Descriptor): Promise<Pass> {
  return measure('gunzip', async () => {
    const blob = await client.fetchBlob(ref, desc);
    const gunzip = createDecompressor({ compression: 'gzip' });
    blob.on('error', (e) => gunzip.destroy(e));
    blob.pipe(gunzip);
    let uncompressed = 0;
    for await (const chunk of gunzip) uncompressed += (chunk as Buffer).length;
    return { uncompressed };
  });
}

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1e6;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function row(cells: (string | number)[]): string {
  const widths = [26, 7, 4, 8, 10, 8, 9, 9];
  return cells.map((c, i) => String(c).padStart(widths[i] ?? 10)).join(' ');
}

const KINDS: readonly Pass['kind'][] = ['index', 'native', 'gunzip'];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      registry: { type: 'string' },
      image: { type: 'string', default: 'python-web' },
      runs: { type: 'string', default: String(DEFAULT_RUNS) },
      only: { type: 'string' },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--runs wants a positive integer, got ${values.runs}`);
  const only = values.only as Pass['kind'] | undefined;
  if (only !== undefined && !KINDS.includes(only)) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--only wants one of ${KINDS.join(', ')}, got ${values.only}`);
  }
  const image = values.image as DebianImageName;
  if (!(DEBIAN_IMAGES as readonly string[]).includes(image)) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--image wants one of ${DEBIAN_IMAGES.join(', ')}, got ${values.image}`);
  }

  let stop = async (): Promise<void> => undefined;
  let host = values.registry;
  if (host === undefined) {
    const dir = await mkdtemp(join(tmpdir(), 'starlight-bench-index-'));
    const reg = await startBenchRegistry(dir);
    host = reg.host;
    stop = async () => {
      await reg.stop();
      await rm(dir, { recursive: true, force: true });
    };
  }
  try {
    const client = new RegistryClient();
    const pushed = await ensureDebianImage(host, image, { client });
    const layers = pushed.manifest.layers;
    let li = 0;
    for (let i = 1; i < layers.length; i++) if (layers[i]!.size > layers[li]!.size) li = i;
    const desc = layers[li]!;
    const diffID = pushed.config.rootfs.diff_ids[li];
    const name = `${image}#${li} ${desc.digest.slice(7, 19)}`;
    const kinds = KINDS.filter((k) => (only === undefined || k === only) && (k !== 'native' || nativeTarWalkFor(desc.mediaType)));
    process.stdout.write(`image ${pushed.reference}, largest layer ${li} of ${layers.length}: ${desc.digest} (${desc.mediaType}, ${(desc.size / MB).toFixed(1)} MB)\n`);
    process.stdout.write(`node ${process.version}, ${runs} pass(es) of each of ${kinds.join(', ')}, MB = 10^6 bytes of uncompressed tar; `);
    process.stdout.write('CPU s: the whole process (main thread + libuv pool); main s: CPU of the main thread alone\n\n');
    process.stdout.write(row(['layer', 'pass', 'run', 'seconds', 'MB/s', 'CPU s', 'main s', 'MB/CPU-s']) + '\n');

    const passes: Pass[] = [];
    const line = (label: string, kind: string, p: Pick<Pass, 'seconds' | 'cpu' | 'main' | 'uncompressed'>) =>
      process.stdout.write(
        row([name, kind, label, p.seconds.toFixed(3), (p.uncompressed / MB / p.seconds).toFixed(1), p.cpu.toFixed(3), p.main.toFixed(2), (p.uncompressed / MB / p.cpu).toFixed(1)]) + '\n',
      );
    for (let r = 0; r < runs; r++) {
      for (const kind of kinds) {
        const p = kind === 'index' ? await indexPass(client, pushed.reference, desc, diffID) : kind === 'native' ? await nativePass(client, pushed.reference, desc, diffID) : await gunzipPass(client, pushed.reference, desc);
        passes.push(p);
        line(String(r + 1), kind, p);
      }
    }
    for (const kind of kinds) {
      const of = passes.filter((p) => p.kind === kind);
      line('med', kind, { seconds: median(of.map((p) => p.seconds)), cpu: median(of.map((p) => p.cpu)), main: median(of.map((p) => p.main)), uncompressed: of[0]!.uncompressed });
    }
    const entries = passes.find((p) => p.entries !== undefined)?.entries;
    if (entries !== undefined) process.stdout.write(`\n${entries} TOC entries\n`);
  } finally {
    await stop();
  }
}

main().catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`index-layer: ${e.code ?? 'error'}: ${e.message ?? String(err)}\n`);
  process.exitCode = 1;
});
