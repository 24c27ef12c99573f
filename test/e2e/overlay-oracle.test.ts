/**
 * Oracle for issue 2: `starlight image toc REF --merged --json` (the real CLI, reading the image from a
 * real docker-registry) must list exactly the tree that overlayfs shows when the same layer blobs are
 * extracted by GNU tar and stacked read-only (test/helpers/tree-shape.ts mountOverlayReference).
 * mergeLayers() over locally built TOCs is checked against the same reference (cheap, and it tells a
 * CLI/registry bug from a merge bug). Compared per path: type, mode, uid, gid, size, mtime (seconds),
 * link target, rdev, xattrs (trusted.overlay.* ignored) and sha256 of contents. mtime is skipped only
 * for dirs that the topmost layer holding them merely implies (tar -x creates those "now").
 *
 * Images: every fixture of test/helpers/fixtures.ts, and the Debian bookworm python-web image of
 * bench/images/ensure.ts (built once, cached under /var/cache/starlight; the first run on a machine
 * takes a few minutes). Needs root, overlayfs, GNU tar, zstd, getfattr/setfattr, docker-registry.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mergeLayers } from '../../src/layers/merge.js';
import type { LayerToc } from '../../src/layers/toc.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { pushDebian, pushLayers } from './mount-support.js';
import { startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { diffShapes, mountOverlayReference, shapeOfDir, shapeOfTree, tarCreatedDirs, tocEntryFromJson, type Shapes } from '../helpers/tree-shape.js';

/** bin/starlight.js of this checkout (tests run from dist/test/e2e). */
const CLI = fileURLToPath(new URL('../../../bin/starlight.js', import.meta.url));
/** Bound for one CLI run, ms (the Debian image indexes ~170 MB of tar). */
const CLI_TIMEOUT_MS = 180_000;
/** Bound for the Debian test, ms: a cold debootstrap build plus extraction and hashing. */
const DEBIAN_TIMEOUT_MS = 15 * 60_000;

const supported =
  process.getuid?.() === 0 &&
  readFileSync('/proc/filesystems', 'utf8').includes('overlay') &&
  ['/usr/bin/tar', '/usr/bin/getfattr', '/usr/bin/setfattr', '/usr/bin/zstd', '/usr/bin/docker-registry'].every((p) => existsSync(p));
const debianSupported = supported && existsSync('/usr/sbin/debootstrap');

/** Runs `starlight image toc REF --merged --json` and returns the shapes of what it printed. */
function cliMergedShapes(ref: string): Promise<Shapes> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, 'image', 'toc', ref, '--merged', '--json'], { timeout: CLI_TIMEOUT_MS, maxBuffer: 512 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`starlight image toc ${ref} failed: ${err.message}\n${stderr}`));
      const entries = (JSON.parse(stdout) as Record<string, unknown>[]).map(tocEntryFromJson);
      resolve(shapeOfTree(entries));
    });
  });
}

async function compare(t: ExecutionContext, name: string, ref: string, blobs: string[], tocs: LayerToc[]): Promise<void> {
  const dir = tempDir(t, 'starlight-oracle-');
  const mnt = await mountOverlayReference(t, dir, blobs);
  const reference = await shapeOfDir(mnt, { skipVanished: true });
  const ignoreMtime = tarCreatedDirs(tocs);
  const merged = shapeOfTree(mergeLayers(tocs));
  const cli = await cliMergedShapes(ref);
  const mergeDiffs = diffShapes(merged, reference, { names: ['merge', 'overlay'], ignoreMtime });
  t.deepEqual(mergeDiffs, [], `mergeLayers vs overlayfs for ${name}:\n${mergeDiffs.join('\n')}`);
  const cliDiffs = diffShapes(cli, reference, { names: ['cli', 'overlay'], ignoreMtime });
  t.deepEqual(cliDiffs, [], `starlight image toc --merged vs overlayfs for ${name}:\n${cliDiffs.join('\n')}`);
  t.true(reference.size > 3, 'the reference tree is not trivially empty');
}

for (const fx of FIXTURES) {
  (supported ? test.serial : test.skip)(`overlay oracle (CLI via registry): ${fx.name}`, async (t) => {
    t.timeout(300_000);
    const reg = await startRegistry(t);
    const { ref, blobs, tocs } = await pushLayers(t, reg, `oracle-${fx.name}`, fx.layers);
    await compare(t, fx.name, ref, blobs, tocs);
  });
}

(debianSupported ? test.serial : test.skip)('overlay oracle (CLI via registry): Debian python-web', async (t) => {
  t.timeout(DEBIAN_TIMEOUT_MS);
  const reg = await startRegistry(t);
  const signal = AbortSignal.timeout(DEBIAN_TIMEOUT_MS - 60_000);
  const { ref, blobs, tocs } = await pushDebian(reg, signal);
  await compare(t, 'python-web', ref, blobs, tocs);
  t.true(tocs.reduce((n, toc) => n + toc.entries.length, 0) > 1000, 'a real Debian image has thousands of entries');
});
