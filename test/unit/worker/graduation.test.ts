/**
 * Graduation (src/worker/images/graduation.ts, layer-dir.ts) on real directories: one dir per layer
 * in overlayfs' layer format (whiteouts, opaque dirs incl. an implied one, hardlinks incl. a target
 * deleted by an upper layer and one replaced inside its layer, implied dirs with the attributes of
 * the layer below), whose overlay mount shows exactly the merged tree (with per-layer overlayfs'
 * nlink); a dir only visible once complete; layers shared by chains; missing content refused;
 * leftovers of a crash removed; prune(). Owners, devices, trusted.* xattrs and mounts need root.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { mergeLayers } from '../../../src/layers/merge.js';
import type { LayerToc, TocEntry } from '../../../src/layers/toc.js';
import { chainIds } from '../../../src/worker/images/chain.js';
import { Graduations } from '../../../src/worker/images/graduation.js';
import { diffShapes, shapeOfDir, shapeOfTree } from '../../helpers/tree-shape.js';
import { tempDir } from '../../helpers/tmp.js';

const root = process.getuid?.() === 0;
const hex = (chainId: string): string => chainId.slice('sha256:'.length);
const T = 1_600_000_000;

/** Contents by digest (sha256 of the text, so the tree's digests match the files' hashes). */
const texts = new Map<string, string>();
function digestOf(text: string): string {
  const d = 'sha256:' + createHash('sha256').update(text).digest('hex');
  texts.set(d, text);
  return d;
}

function entry(e: Partial<TocEntry> & { path: string }, content?: string): TocEntry {
  const base: TocEntry = { type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: T, ...e };
  if (content !== undefined) {
    base.size = Buffer.byteLength(content);
    base.digest = digestOf(content);
  }
  return base;
}

function toc(n: number, entries: TocEntry[]): LayerToc {
  return { version: 2, diffID: 'sha256:' + String(n).repeat(64), uncompressedSize: 0, entries };
}

function cas(t: Parameters<typeof tempDir>[0]): (d: string) => string | null {
  const dir = tempDir(t, 'sl-grad-cas-');
  for (const [digest, text] of texts) writeFileSync(join(dir, digest), text);
  return (d) => (texts.has(d) ? join(dir, d) : null);
}

const L0 = toc(1, [
  entry({ path: '' }),
  entry({ path: 'bin' }),
  entry({ path: 'bin/sh', type: 'reg', mode: 0o755 }, '#!sh'),
  entry({ path: 'bin/ls', type: 'hardlink', linkname: 'bin/sh', mode: 0o755 }, '#!sh'),
  entry({ path: 'bin/su', type: 'reg', mode: 0o4755, uid: 0 }, 'su'),
  entry({ path: 'etc', mode: 0o711, uid: 5, gid: 6, mtime: T + 1, xattrs: { 'user.k': Buffer.from('v') } }),
  entry({ path: 'etc/x', type: 'reg', mode: 0o644 }, 'x'),
  entry({ path: 'etc/empty', type: 'reg', mode: 0o600, uid: 1000, gid: 1000, digest: digestOf('') }),
  entry({ path: 'etc/l', type: 'symlink', linkname: '../bin/su', mode: 0o777, uid: 7, gid: 8, mtime: T + 5 }),
  entry({ path: 'etc/n', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 }),
  entry({ path: 'etc/p', type: 'fifo', mode: 0o600 }),
  entry({ path: 'opt' }),
  entry({ path: 'opt/app', mode: 0o750, xattrs: { 'user.dir': Buffer.from('app') } }),
  entry({ path: 'opt/app/old', type: 'reg', mode: 0o644 }, 'old'),
  entry({ path: 'srv', mode: 0o700, uid: 3, gid: 3 }),
  entry({ path: 'srv/old', type: 'reg', mode: 0o644 }, 'srv old'),
  entry({ path: 'var' }),
  entry({ path: 'var/log' }),
  entry({ path: 'var/log/old.log', type: 'reg', mode: 0o644 }, 'log'),
  entry({ path: 'var/log/keep.log', type: 'reg', mode: 0o644 }, 'keep'),
]);

const L1 = toc(2, [
  // etc only implied: its layer dir takes etc's attributes from layer 0 (containerd's mkparent)
  entry({ path: 'etc/motd', type: 'reg', mode: 0o644, mtime: T + 2 }, 'welcome'),
  // an opaque dir listed, and one only implied by its marker
  entry({ path: 'opt/app', mode: 0o755, opaque: true, mtime: T + 2 }),
  entry({ path: 'opt/app/new', type: 'reg', mode: 0o644 }, 'new'),
  entry({ path: 'srv', implied: true, opaque: true, mtime: 0 }),
  // whiteouts: a file, the target of a lower hardlink, a path that never existed, one under the opaque dir
  entry({ path: 'var/log/old.log', type: 'whiteout' }),
  entry({ path: 'bin/sh', type: 'whiteout' }),
  entry({ path: 'ghost/nothing', type: 'whiteout' }),
  entry({ path: 'opt/app/old', type: 'whiteout' }),
  // a hardlink whose target was replaced later in this layer keeps the first content
  entry({ path: 'h1', type: 'reg', mode: 0o644 }, 'h1 second'),
  entry({ path: 'h2', type: 'hardlink', linkname: 'h1', mode: 0o644 }, 'h1 first'),
  // a hardlink group inside the layer, through a chain of links
  entry({ path: 'g1', type: 'reg', mode: 0o640 }, 'group'),
  entry({ path: 'g2', type: 'hardlink', linkname: 'g1', mode: 0o640 }, 'group'),
  entry({ path: 'g3', type: 'hardlink', linkname: 'g2', mode: 0o640 }, 'group'),
]);

/** An update: v1's two layers + one. */
const L2 = toc(3, [entry({ path: 'etc/v2', type: 'reg', mode: 0o644 }, 'v2')]);

/** A lower layer's `a` that the upper one replaces. */
const HIDDEN_LOWER = toc(7, [entry({ path: '' }), entry({ path: 'a', type: 'reg', mode: 0o644 }, 'lower a'), entry({ path: 'b', type: 'reg', mode: 0o644 }, 'lower b')]);
const HIDING_UPPER = toc(8, [entry({ path: 'a', type: 'reg', mode: 0o644 }, 'upper a')]);

const CHAIN = chainIds([L0.diffID, L1.diffID]);
const trusted = (name: string, p: string): string | null => {
  try {
    return execFileSync('getfattr', ['--only-values', '-n', name, p], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return null;
  }
};

(root ? test.serial : test.skip)('each layer becomes an overlayfs layer dir; their overlay is the merged tree', async (t) => {
  const g = await new Graduations(join(tempDir(t, 'sl-grad-'), 'g')).open();
  const locate = cas(t);
  t.is(g.layers(CHAIN), undefined);
  const dirs = await g.graduate(CHAIN, [L0, L1], locate);
  t.deepEqual(dirs.map((d) => basename(d)), [CHAIN[1]!, CHAIN[0]!].map(hex), 'named by chain id, top first');
  t.deepEqual(g.layers(CHAIN), dirs);
  const [top, bottom] = dirs as [string, string];
  const st = (d: string, p: string) => lstatSync(join(d, p));

  // The bottom layer: every attribute of its TOC.
  t.is(st(bottom, 'bin/su').mode & 0o7777, 0o4755, 'setuid survives the chown');
  t.deepEqual([st(bottom, 'etc').mode & 0o7777, st(bottom, 'etc').uid, st(bottom, 'etc').mtimeMs / 1000], [0o711, 5, T + 1], 'a directory keeps its mtime after its children were created');
  t.is(st(bottom, 'bin/sh').ino, st(bottom, 'bin/ls').ino, 'a hardlink of the layer is a hardlink');
  t.is(st(bottom, 'etc/empty').uid, 1000);
  t.is(st(bottom, 'etc/n').rdev, (1 << 8) | 3);
  t.true(st(bottom, 'etc/p').isFIFO());
  t.deepEqual([st(bottom, 'etc/l').uid, st(bottom, 'etc/l').mtimeMs / 1000], [7, T + 5]);

  // The top layer: whiteouts, opaque dirs, implied dirs.
  for (const w of ['var/log/old.log', 'bin/sh']) {
    t.true(st(top, w).isCharacterDevice() && st(top, w).rdev === 0, `${w} is a 0/0 whiteout`);
  }
  t.false(existsSync(join(top, 'ghost/nothing')), 'a whiteout of nothing is left out');
  t.true(st(top, 'ghost').isDirectory(), 'its parent is there, as in containerd\'s layer');
  t.false(existsSync(join(top, 'opt/app/old')), 'a whiteout under an opaque dir is left out');
  t.is(trusted('trusted.overlay.opaque', join(top, 'opt/app')), 'y');
  t.is(trusted('trusted.overlay.opaque', join(top, 'srv')), 'y', 'an implied opaque dir');
  t.deepEqual([st(top, 'srv').mode & 0o7777, st(top, 'srv').uid], [0o700, 3], 'with the attributes of the dir below');
  t.deepEqual([st(top, 'etc').mode & 0o7777, st(top, 'etc').uid, st(top, 'etc').gid], [0o711, 5, 6], 'an implied dir copies the dir below');
  t.is(trusted('user.k', join(top, 'etc')), 'v', 'with its xattrs');
  t.is(trusted('trusted.overlay.opaque', join(top, 'etc')), null);
  t.is(readFileSync(join(top, 'h2'), 'utf8'), 'h1 first');
  t.not(st(top, 'h1').ino, st(top, 'h2').ino, 'a link whose target was replaced is its own file');
  t.is(st(top, 'g3').ino, st(top, 'g1').ino, 'a chain of links is one inode');
  t.is(st(top, 'g1').nlink, 3);

  // The overlay of both: the merged tree, nlink as per-layer overlayfs counts it.
  const mnt = tempDir(t, 'sl-grad-mnt-');
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${dirs.join(':')}`, mnt]);
  t.teardown(() => execFileSync('umount', [mnt]));
  const shown = await shapeOfDir(mnt, { nlink: true });
  const merged = shapeOfTree(mergeLayers([L0, L1]), undefined, { nlink: true });
  // bin/ls: its other name was deleted above; per-layer overlayfs shows the lower inode's 2.
  merged.get('bin/ls')!.nlink = 2;
  t.deepEqual(diffShapes(shown, merged, { names: ['overlay', 'merged'] }), []);
  t.is(readFileSync(join(mnt, 'etc/motd'), 'utf8'), 'welcome');
  t.deepEqual(readdirSync(join(mnt, 'opt/app')), ['new']);
  t.deepEqual(readdirSync(join(mnt, 'srv')), []);
});

(root ? test.serial : test.skip)('chains share their common layers, also after a restart; prune frees only what no kept chain has', async (t) => {
  const base = join(tempDir(t, 'sl-grad-'), 'g');
  const g = await new Graduations(base).open();
  const locate = cas(t);
  const v2 = chainIds([L0.diffID, L1.diffID, L2.diffID]);
  const v1dirs = await g.graduate(CHAIN, [L0, L1], locate);
  const inode = lstatSync(v1dirs[1]!).ino;
  const d2 = await g.graduate(v2, [L0, L1, L2], locate);
  t.deepEqual(d2.slice(1), v1dirs, 'v2 mounts the two layer dirs built for v1');
  t.is(lstatSync(d2[2]!).ino, inode);
  t.deepEqual(readdirSync(join(base, 'layers')).sort(), v2.map(hex).sort(), 'three layer dirs for both chains');
  const again = await new Graduations(base).open();
  t.deepEqual(again.layers(v2), d2, 'the records survive a restart');
  const told: string[] = [];
  const beforeRemove = async (dir: string, now: string): Promise<void> => {
    // Called with the dir's name as mounts knew it, while its files are still there, moved aside.
    t.false(existsSync(dir));
    t.true(existsSync(join(now, 'etc/v2')));
    told.push(dir);
  };
  t.deepEqual(await again.prune(new Set([CHAIN[1]!]), beforeRemove), [hex(v2[2]!)], 'v2 gone: only its own layer is freed');
  t.deepEqual(told, [d2[0]]);
  t.deepEqual(again.layers(CHAIN), v1dirs);
  t.is(again.layers(v2), undefined);
  await again.prune(new Set());
  t.deepEqual(readdirSync(join(base, 'layers')), []);
  t.deepEqual(readdirSync(join(base, 'chains')), []);
});

(root ? test.serial : test.skip)('a lower file an upper layer hides is left out when its content is absent; a chain showing it gets its own dir', async (t) => {
  const base = join(tempDir(t, 'sl-grad-'), 'g');
  const g = await new Graduations(base).open();
  const all = cas(t);
  const absent = HIDDEN_LOWER.entries[1]!.digest!;
  const [lower, upper] = [HIDDEN_LOWER, HIDING_UPPER];
  const streamed = (d: string) => (d === absent ? null : all(d));
  const chain = chainIds([lower.diffID, upper.diffID]);
  const [top, bottom] = await g.graduate(chain, [lower, upper], streamed);
  t.false(existsSync(join(bottom!, 'a')), 'the hidden file without content is left out');
  t.is(readFileSync(join(bottom!, 'b'), 'utf8'), 'lower b');
  t.deepEqual(JSON.parse(readFileSync(`${bottom!}.omit`, 'utf8')), ['a']);
  t.is(readFileSync(join(top!, 'a'), 'utf8'), 'upper a');
  // The lower layer as an image of its own shows `a`: the dir above does not fit it.
  await t.throwsAsync(g.graduate(chain.slice(0, 1), [lower], streamed), { message: /\/a has content .* which is not present/ });
  const [alone] = await g.graduate(chain.slice(0, 1), [lower], all);
  t.is(basename(alone!), `${hex(chain[0]!)}-1`, 'a second dir for the same layer');
  t.is(readFileSync(join(alone!, 'a'), 'utf8'), 'lower a');
  t.deepEqual(g.layers(chain)!.map((d) => basename(d)), [hex(chain[1]!), hex(chain[0]!)], 'the first chain keeps its dirs');
  t.deepEqual(await g.prune(new Set([chain[0]!])), [hex(chain[1]!), hex(chain[0]!)].sort());
  t.false(existsSync(`${bottom!}.omit`));
});

test('missing content is refused and leaves nothing behind; open() removes half-built dirs', async (t) => {
  const base = join(tempDir(t, 'sl-grad-'), 'g');
  const g = await new Graduations(base).open();
  const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const l = toc(4, [entry({ path: '', ...me }), entry({ path: 'f', type: 'reg', mode: 0o644, size: 3, digest: 'sha256:gone', ...me })]);
  const chain = chainIds([l.diffID]);
  await t.throwsAsync(g.graduate(chain, [l], () => null), { message: /\/f has content sha256:gone, which is not present/ });
  t.is(g.layers(chain), undefined);
  t.deepEqual(readdirSync(join(base, 'layers')), []);
  mkdirSync(join(base, 'layers', 'new-crashed'));
  writeFileSync(join(base, 'layers', `${hex(chain[0]!)}.omit`), '[]');
  await new Graduations(base).open();
  t.deepEqual(readdirSync(join(base, 'layers')), [], 'a half-built dir and an omit list without its dir are removed');
});

test('a hardlink to another layer is refused (containerd cannot unpack it either)', async (t) => {
  const base = join(tempDir(t, 'sl-grad-'), 'g');
  const g = await new Graduations(base).open();
  const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const lower = toc(5, [entry({ path: '', ...me }), entry({ path: 'elsewhere', type: 'reg', mode: 0o644, ...me }, 'lower')]);
  const upper = toc(6, [entry({ path: 'a', type: 'hardlink', linkname: 'elsewhere', mode: 0o644, ...me })]);
  const chain = chainIds([lower.diffID, upper.diffID]);
  await t.throwsAsync(g.graduate(chain, [lower, upper], cas(t)), { message: /\/a is a hardlink to elsewhere, which is not in its layer/ });
  t.is(g.layers(chain), undefined);
  t.deepEqual(readdirSync(join(base, 'layers')), [hex(chain[0]!)], 'only the complete lower layer');
});
