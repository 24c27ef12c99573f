/**
 * The merged tree of a Debian bench image (bench/images/build-rootfs.sh) read straight from its layer
 * tars, with a RangeReader per file (tar offsets), for tests of the startup analysis on real binaries.
 * `loadBenchImage` returns undefined (the caller skips with `skipReason`) when the cache is absent.
 */
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { buildLayerToc } from '../../src/layers/indexer.js';
import { mergeLayers } from '../../src/layers/merge.js';
import type { LayerToc, MergedTree, TocEntry } from '../../src/layers/toc.js';
import type { ImageConfig } from '../../src/oci/types.js';
import type { RangeReader } from '../../src/proxy/startup/elf.js';

export const BENCH_IMAGE_CACHE = process.env.STARLIGHT_IMAGE_CACHE ?? '/var/cache/starlight/bench-images';
/** build-rootfs.sh REV. */
const REV = 'r2';

export interface BenchImage {
  name: string;
  config: ImageConfig;
  merged: MergedTree;
  /** Reader of a merged-tree path's content (regular files and hardlinks). */
  reader(path: string): RangeReader;
  /** Where a merged-tree path's content lies in the layer tars (as a first-contact pass stages it). */
  locate(path: string): { path: string; offset: number; size: number } | undefined;
  close(): Promise<void>;
}

function jsonOf(name: string): string {
  return join(BENCH_IMAGE_CACHE, REV, 'images', `${name}-v1.json`);
}

/** Why tests on bench image `name` are skipped, or undefined when its layers are there. */
export function skipReason(name: string): string | undefined {
  const j = jsonOf(name);
  if (!existsSync(j)) return `bench image ${name} not built (${j} missing; run bench/images/build-rootfs.sh ${name})`;
  const spec = JSON.parse(readFileSync(j, 'utf8')) as { layers: string[] };
  const missing = spec.layers.find((l) => !existsSync(l));
  return missing === undefined ? undefined : `bench image ${name}: layer ${missing} missing`;
}

export async function loadBenchImage(name: string): Promise<BenchImage> {
  const spec = JSON.parse(readFileSync(jsonOf(name), 'utf8')) as { layers: string[]; entrypoint: string[]; env: string[] };
  const tocs: LayerToc[] = [];
  for (const file of spec.layers) tocs.push(await buildLayerToc(createReadStream(file)));
  const merged = mergeLayers(tocs);
  const byPath = new Map(merged.entries.map((e) => [e.path, e]));
  const handles = await Promise.all(spec.layers.map((f) => open(f, 'r')));
  /** The entry holding a path's content: a hardlink's is its target's, in the layer that supplied the link. */
  const contentEntry = (path: string): TocEntry | undefined => {
    const e = byPath.get(path);
    if (e?.type !== 'hardlink' || e.linkname === undefined) return e;
    const t = tocs[e.layer ?? 0]!.entries.find((x) => x.path === e.linkname && x.type === 'reg');
    return t === undefined ? undefined : { ...t, layer: e.layer };
  };
  const config: ImageConfig = {
    architecture: 'amd64',
    os: 'linux',
    config: { Entrypoint: spec.entrypoint, Env: spec.env },
    rootfs: { type: 'layers', diff_ids: merged.diffIDs },
  };
  return {
    name,
    config,
    merged,
    reader(path: string): RangeReader {
      const entry = contentEntry(path);
      return async (offset, length) => {
        if (entry?.offset === undefined || offset >= entry.size) return undefined;
        const n = Math.min(length, entry.size - offset);
        const buf = Buffer.alloc(n);
        await handles[entry.layer ?? 0]!.read(buf, 0, n, entry.offset + offset);
        return buf;
      };
    },
    locate(path: string) {
      const e = contentEntry(path);
      return e?.offset === undefined ? undefined : { path: spec.layers[e.layer ?? 0]!, offset: e.offset, size: e.size };
    },
    close: async () => {
      await Promise.all(handles.map((h) => h.close()));
    },
  };
}
