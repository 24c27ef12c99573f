/**
 * ensureDebianImage() against a real docker-registry: builds (or reuses the cached) Debian bookworm
 * python-web image, pushes it, and reads it back through the project's RegistryClient and TOC
 * indexer/merge: layer count, diff_ids, parent directories in every layer, whiteouts and opaque
 * dirs applied, the app files, idempotent pushes, and the v2 update image.
 *
 * The first run on a machine debootstraps (about a minute here); later runs reuse
 * /var/cache/starlight/bench-images and take seconds. Needs root, debootstrap and the Debian mirror.
 */
import test from 'ava';
import { ensureDebianImage } from '../../bench/images/ensure.js';
import { READY_LABEL } from '../../bench/images/push.js';
import { buildLayerToc } from '../../src/layers/indexer.js';
import { mergeLayers } from '../../src/layers/merge.js';
import { parentPath } from '../../src/layers/paths.js';
import type { LayerToc, MergedTree, TocEntry } from '../../src/layers/toc.js';
import { RegistryClient } from '../../src/oci/client.js';
import { startRegistry } from '../helpers/registry.js';

async function readImage(client: RegistryClient, ref: string): Promise<{ tocs: LayerToc[]; merged: MergedTree; layerDigests: string[] }> {
  const img = await client.resolve(ref);
  const tocs: LayerToc[] = [];
  for (const [i, desc] of img.manifest.layers.entries()) {
    const blob = await client.fetchBlob(ref, desc);
    tocs.push(await buildLayerToc(blob, { mediaType: desc.mediaType, expectedDiffID: img.config.rootfs.diff_ids[i], layerName: desc.digest }));
  }
  return { tocs, merged: mergeLayers(tocs), layerDigests: img.manifest.layers.map((l) => l.digest) };
}

function byPath(tree: MergedTree): Map<string, TocEntry> {
  return new Map(tree.entries.map((e) => [e.path, e]));
}

test('python-web: pushed image has 3 layers with parent dirs, whiteouts apply, app files present; v2 shares the base', async (t) => {
  t.timeout(10 * 60_000, 'a cold debootstrap + apt + gzip of ~170 MB');
  const registry = await startRegistry(t);
  const client = new RegistryClient();

  const v1 = await ensureDebianImage(registry.host, 'python-web');
  t.is(v1.reference, `${registry.host}/bench/python-web:v1`);
  t.is(v1.manifest.layers.length, 3);
  t.is(v1.config.rootfs.diff_ids.length, 3);
  t.deepEqual(v1.config.config?.Entrypoint, ['/app/start.sh']);
  t.is(v1.config.config?.Labels?.[READY_LABEL], 'READY python-web v1');
  t.true(v1.config.config?.Env?.some((e) => e.startsWith('PATH=')));

  const { tocs, merged } = await readImage(client, v1.reference);
  // Every layer lists the parent directory of each of its entries (design.md: writers that omit them break tools).
  for (const [i, toc] of tocs.entries()) {
    const dirs = new Set(toc.entries.filter((e) => e.type === 'dir').map((e) => e.path));
    const orphans = toc.entries.filter((e) => parentPath(e.path) !== '' && !dirs.has(parentPath(e.path))).map((e) => e.path);
    t.deepEqual(orphans.slice(0, 5), [], `layer ${i} has entries without a parent dir entry`);
  }
  const base = byPath(mergeLayers([tocs[0]!]));
  const files = byPath(merged);
  t.is(files.get('usr/bin/python3')?.type, 'symlink');
  t.is(files.get('usr/bin/python3.11')?.type, 'reg');
  t.is(files.get('usr/bin/python3.11')?.layer, 1);
  t.is(files.get('bin')?.type, 'symlink', 'bookworm is merged-/usr');
  t.is(files.get('app/start.sh')?.mode, 0o755);
  t.is(files.get('app/start.sh')?.layer, 2);
  t.is(files.get('app/VERSION')?.size, 'python-web v1\n'.length);
  // The package layer deletes a base file and a base dir, and empties /var/log/apt (opaque).
  t.true(base.has('usr/share/common-licenses/GFDL-1.2'));
  t.false(files.has('usr/share/common-licenses/GFDL-1.2'));
  t.true(files.has('usr/share/common-licenses/GFDL-1.3'));
  t.false(files.has('usr/share/doc/debian-archive-keyring'));
  t.is(files.get('var/log/apt')?.type, 'dir');
  t.false(merged.entries.some((e) => e.path.startsWith('var/log/apt/') && e.layer === 0), 'opaque var/log/apt hides the base contents');
  t.false(merged.entries.some((e) => e.path.startsWith('var/lib/apt/lists/') && e.path !== 'var/lib/apt/lists/partial'), 'no apt lists in the image');

  // Idempotent: the same build pushes the same manifest.
  const again = await ensureDebianImage(registry.host, 'python-web');
  t.is(again.digest, v1.digest);

  // v2: same base blob, rebuilt package layer, changed + new app files.
  const v2 = await ensureDebianImage(registry.host, 'python-web', { version: 'v2' });
  t.not(v2.digest, v1.digest);
  t.is(v2.manifest.layers[0]!.digest, v1.manifest.layers[0]!.digest);
  t.not(v2.manifest.layers[1]!.digest, v1.manifest.layers[1]!.digest);
  const files2 = byPath((await readImage(client, v2.reference)).merged);
  t.is(files2.get('app/static/new-in-v2.txt')?.type, 'reg');
  t.not(files2.get('app/VERSION')?.digest, files.get('app/VERSION')?.digest);
  t.is(files2.get('usr/bin/python3.11')?.digest, files.get('usr/bin/python3.11')?.digest, 'unchanged package files keep their content');
  t.true(files2.has('usr/bin/less'));
});

test('ensureDebianImage refuses an unknown image name', async (t) => {
  await t.throwsAsync(ensureDebianImage('127.0.0.1:1', 'nope' as 'redis'), { code: 'SL_ERR_INVALID_ARGUMENT' });
});
