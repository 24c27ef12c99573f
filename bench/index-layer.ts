/**
 * Layer indexing throughput: fetches the largest layer of a Debian bench image from a local registry
 * and indexes it with buildLayerToc (gunzip + tar parse + sha256 of the tar and of every file) N
 * times, against a gunzip-only pass over the same fetch with the indexer's own decoder (createDecompressor:
 * ISA-L when the addon is built, else node:zlib) — the floor: indexing cannot beat inflate.
 * Prints one table row per pass and a median row; MB/s are of uncompressed tar bytes (MB = 10^6).
 *
 *   node dist/bench/index-layer.js [--registry HOST:PORT] [--image python-web] [--runs 5]
 *                                  [--only index|gunzip]
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
import { RegistryClient } from '../src/oci/client.js';
import type { Descriptor } from '../src/oci/types.js';
import { startBenchRegistry } from './drivers/registry.js';
import { DEBIAN_IMAGES, ensureDebianImage, type DebianImageName } from './images/ensure.js';

/** Default passes of each kind. */
const DEFAULT_RUNS = 5;
const MB = 1e6;

interface Pass {
  kind: 'index' | 'gunzip';
  seconds: number;
  /** CPU seconds of the whole process (main thread + zlib's threadpool): stable on a busy machine. */
  cpu: number;
  uncompressed: number;
  entries?: number;
}

async function indexPass(client: RegistryClient, ref: string, desc: Descriptor, diffID: string | undefined): Promise<Pass> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const toc = await buildLayerToc(await client.fetchBlob(ref, desc), { mediaType: desc.mediaType, expectedDiffID: diffID, layerName: desc.digest });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { kind: 'index', seconds, cpu: cpuSeconds(c0), uncompressed: toc.uncompressedSize, entries: toc.entries.length };
}

/** Fetch (with the client's digest check) + gunzip with the indexer's decoder (no diffID hash), counting bytes. */
async function gunzipPass(client: RegistryClient, ref: string, desc: Descriptor): Promise<Pass> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const blob = await client.fetchBlob(ref, desc);
  const gunzip = createDecompressor({ compression: 'gzip' });
  blob.on('error', (e) => gunzip.destroy(e));
  blob.pipe(gunzip);
  let uncompressed = 0;
  for await (const chunk of gunzip) uncompressed += (chunk as Buffer).length;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { kind: 'gunzip', seconds, cpu: cpuSeconds(c0), uncompressed };
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
  const widths = [26, 8, 10, 8, 11, 12, 6, 10, 11];
  return cells.map((c, i) => String(c).padStart(widths[i] ?? 10)).join(' ');
}

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
  if (values.only !== undefined && values.only !== 'index' && values.only !== 'gunzip') {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--only wants index or gunzip, got ${values.only}`);
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
    process.stdout.write(`image ${pushed.reference}, largest layer ${li} of ${layers.length}: ${desc.digest} (${desc.mediaType})\n`);
    process.stdout.write(`node ${process.version}, ${runs} pass(es) each, MB = 10^6 bytes of uncompressed tar\n\n`);
    process.stdout.write(row(['layer', 'comp MB', 'uncomp MB', 'seconds', 'index MB/s', 'gunzip MB/s', 'ratio', 'index cpu', 'gunzip cpu']) + '\n');

    const passes: Pass[] = [];
    for (let r = 0; r < runs; r++) {
      if (values.only !== 'gunzip') passes.push(await indexPass(client, pushed.reference, desc, diffID));
      if (values.only !== 'index') passes.push(await gunzipPass(client, pushed.reference, desc));
      const idx = passes.filter((p) => p.kind === 'index').at(-1);
      const gz = passes.filter((p) => p.kind === 'gunzip').at(-1);
      const ref = idx ?? gz!;
      const idxRate = idx ? idx.uncompressed / MB / idx.seconds : NaN;
      const gzRate = gz ? gz.uncompressed / MB / gz.seconds : NaN;
      process.stdout.write(
        row([
          `${name} run ${r + 1}`,
          (desc.size / MB).toFixed(1),
          (ref.uncompressed / MB).toFixed(1),
          ref.seconds.toFixed(3),
          idxRate.toFixed(1),
          gzRate.toFixed(1),
          (idxRate / gzRate).toFixed(2),
          idx ? idx.cpu.toFixed(3) : '-',
          gz ? gz.cpu.toFixed(3) : '-',
        ]) + '\n',
      );
    }
    const idxRates = passes.filter((p) => p.kind === 'index').map((p) => p.uncompressed / MB / p.seconds);
    const gzRates = passes.filter((p) => p.kind === 'gunzip').map((p) => p.uncompressed / MB / p.seconds);
    const secs = median(passes.filter((p) => p.kind === (values.only ?? 'index')).map((p) => p.seconds));
    const m = median(idxRates);
    const g = median(gzRates);
    const cpuOf = (kind: Pass['kind']) => median(passes.filter((p) => p.kind === kind).map((p) => p.cpu));
    const unc = passes[0]!.uncompressed / MB;
    process.stdout.write(
      row([`${name} median`, (desc.size / MB).toFixed(1), unc.toFixed(1), secs.toFixed(3), m.toFixed(1), g.toFixed(1), (m / g).toFixed(2), cpuOf('index').toFixed(3), cpuOf('gunzip').toFixed(3)]) + '\n',
    );
    // MB per CPU-second: what one fully available core would give, whatever else the machine runs.
    process.stdout.write(`\nper CPU-second: index ${(unc / cpuOf('index')).toFixed(1)} MB/s, gunzip-only ${(unc / cpuOf('gunzip')).toFixed(1)} MB/s\n`);
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
