/**
 * An image of very many small files (issue 14: the proxy must stay responsive while it indexes and
 * plans the first delta of a 20 000-60 000-file image), as layer specs for fixtures/image-writer.ts.
 *
 * Shape: `layers` layers of files spread over 100 directories per layer, each file's content distinct
 * (so every file is an item); the top layer also overwrites every 20th file of the bottom layer, so
 * merging replaces entries as real images do. Deterministic for a given (files, layers).
 *
 * Not here: pushing (fixtures/push-image.ts), the proxy.
 */
import type { LayerSpec, WriterEntry } from '../../fixtures/image-writer.js';

/** Files per directory (as in real images: /usr/lib, /usr/share/... hold hundreds). */
const FILES_PER_DIR = 200;

/** Layer specs of `files` files in `layers` gzip layers (plus the top layer's overwrites). */
export function manyFilesLayers(files: number, layers = 3): LayerSpec[] {
  const per = Math.ceil(files / layers);
  const out: LayerSpec[] = [];
  for (let l = 0; l < layers; l++) {
    const entries: WriterEntry[] = [];
    const dirs = new Set<string>();
    const file = (path: string, body: string): void => {
      const dir = path.slice(0, path.lastIndexOf('/'));
      if (!dirs.has(dir)) {
        dirs.add(dir);
        entries.push({ path: dir, type: 'dir' });
      }
      entries.push({ path, type: 'reg', content: Buffer.from(body) });
    };
    for (let i = l * per; i < Math.min(files, (l + 1) * per); i++) file(`l${l}/d${Math.floor(i / FILES_PER_DIR)}/f${i}`, `layer ${l} file ${i}\n`);
    if (l === layers - 1 && l > 0) for (let i = 0; i < per; i += 20) file(`l0/d${Math.floor(i / FILES_PER_DIR)}/f${i}`, `overwritten by layer ${l}: file ${i}\n`);
    out.push({ entries, compression: 'gzip' });
  }
  return out;
}
