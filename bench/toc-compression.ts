/**
 * Header TOCs compressed (docs/protocol.md "Compressed TOCs"): for every layer of the bench images
 * (v1 and v2, built or reused by bench/images), its TOC as the proxy encodes it (encodeToc) and that
 * brotli-compressed at each quality: bytes, ratio, ms to compress (median of --runs, node's brotli
 * as the proxy calls it, on the thread pool) and ms to decompress (as the worker's decoder does, on
 * its thread). Layers shared by several images are measured once.
 *
 *   node dist/bench/toc-compression.js [--images python-web,redis,postgres] [--qualities 1,3,5] [--runs 5]
 *
 * Not here: choosing the quality (src/proxy/session/toc-wire.ts), the header (src/protocol/frames.ts).
 */
import { readFileSync, createReadStream } from 'node:fs';
import { parseArgs } from 'node:util';
import { brotliDecompressSync } from 'node:zlib';
import { buildLayerToc } from '../src/layers/indexer.js';
import { encodeToc } from '../src/layers/toc-codec.js';
import { brotliAt } from '../src/proxy/content-cache.js';
import { DEBIAN_IMAGES, buildDebianImage, type DebianImageName } from './images/ensure.js';
import { median } from './report/aggregate.js';

async function main(): Promise<number> {
  const { values: v } = parseArgs({
    options: {
      images: { type: 'string', default: 'python-web,redis,postgres' },
      qualities: { type: 'string', default: '1,3,5' },
      runs: { type: 'string', default: '5' },
    },
  });
  const images = v.images.split(',') as DebianImageName[];
  const qualities = v.qualities.split(',').map(Number);
  const runs = Number(v.runs);
  if (images.some((i) => !DEBIAN_IMAGES.includes(i)) || qualities.some((q) => !(q >= 0 && q <= 11)) || !(runs >= 1)) {
    process.stderr.write(`usage: toc-compression.js [--images ${DEBIAN_IMAGES.join(',')}] [--qualities 1,3,5] [--runs 5]\n`);
    return 64;
  }
  const head = ['layer', 'entries', 'TOC KB', ...qualities.flatMap((q) => [`q${q} KB`, `q${q} ratio`, `q${q} ms`, `q${q} decode ms`])];
  console.log(`| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|`);
  const seen = new Set<string>();
  for (const image of images) {
    for (const version of ['v1', 'v2'] as const) {
      const spec = JSON.parse(readFileSync(await buildDebianImage(image, version), 'utf8')) as { layers: string[] };
      for (const tar of spec.layers) {
        if (seen.has(tar)) continue;
        seen.add(tar);
        const toc = await buildLayerToc(createReadStream(tar));
        const raw = encodeToc(toc);
        const row: (string | number)[] = [tar.split('/').pop()!, toc.entries.length, (raw.length / 1024).toFixed(1)];
        for (const q of qualities) {
          const ms: number[] = [];
          const decodeMs: number[] = [];
          let out = raw;
          for (let r = 0; r < runs; r++) {
            const t0 = performance.now();
            out = await brotliAt(raw, q);
            ms.push(performance.now() - t0);
            const t1 = performance.now();
            brotliDecompressSync(out);
            decodeMs.push(performance.now() - t1);
          }
          row.push((out.length / 1024).toFixed(1), (raw.length / out.length).toFixed(2), median(ms).toFixed(1), median(decodeMs).toFixed(1));
        }
        console.log(`| ${row.join(' | ')} |`);
      }
    }
  }
  return 0;
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`toc-compression: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
