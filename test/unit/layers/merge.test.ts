import test from 'ava';
import { mergeLayers, mergeLayersSliced, mergeOnto, mergeOntoSliced } from '../../../src/layers/merge.js';
import { TOC_VERSION, type LayerToc, type TocEntry } from '../../../src/layers/toc.js';

type Spec = Partial<TocEntry> & { path: string };
const E = (s: Spec): TocEntry => ({ type: 'reg', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 1, ...s });
const D = (path: string, extra: Partial<TocEntry> = {}) => E({ path, type: 'dir', mode: 0o755, ...extra });
const F = (path: string, digest: string, extra: Partial<TocEntry> = {}) => E({ path, digest: `sha256:${digest}`, size: digest.length, ...extra });
const W = (path: string) => E({ path, type: 'whiteout', mode: 0 });
const layer = (...entries: TocEntry[]): LayerToc => ({ version: TOC_VERSION, diffID: `sha256:${entries.length}`, uncompressedSize: 0, entries });

/** path → short description, the comparison unit of the tables below. */
function view(tocs: LayerToc[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of mergeLayers(tocs).entries) {
    let s = e.type;
    if (e.digest) s += ` ${e.digest.slice(7)}`;
    if (e.linkname) s += ` -> ${e.linkname}`;
    if (e.type === 'dir') s += ` ${e.mode.toString(8)}${e.implied ? ' implied' : ''}`;
    out[e.path] = s;
  }
  return out;
}

const cases: { name: string; layers: LayerToc[]; want: Record<string, string> }[] = [
  {
    name: 'a file over a dir drops its subtree, also for entries under it in the same layer and the hardlink pass',
    layers: [
      layer(D('a'), D('a/b'), F('a/b/c', 'c'), F('z', 'z')),
      layer(F('a', 'file'), F('a/d', 'd'), E({ path: 'a/b/h', type: 'hardlink', linkname: 'z' })),
    ],
    want: { '': 'dir 755 implied', a: 'dir 755 implied', 'a/b': 'dir 755 implied', 'a/b/h': 'hardlink z -> z', 'a/d': 'reg d', z: 'reg z' },
  },
  {
    name: 'upper file wins; implied parents and root',
    layers: [layer(F('a/b/f', 'one')), layer(F('a/b/f', 'two'), F('x', 'x'))],
    want: { '': 'dir 755 implied', a: 'dir 755 implied', 'a/b': 'dir 755 implied', 'a/b/f': 'reg two', x: 'reg x' },
  },
  {
    name: 'whiteout deletes a file and a whole subtree; the whiteout parent stays',
    layers: [layer(D('d'), F('d/f', 'f'), D('d/s'), F('d/s/g', 'g'), F('k', 'k')), layer(W('d/s'), W('k'), W('never/there'))],
    want: { '': 'dir 755 implied', d: 'dir 755', 'd/f': 'reg f', never: 'dir 755 implied' },
  },
  {
    name: "opaque dir hides lower children, keeps its own; upper dir's attributes win",
    layers: [
      layer(D('o', { mode: 0o700 }), F('o/old', 'old'), D('o/sub'), F('o/sub/x', 'x')),
      layer(D('o', { mode: 0o750, opaque: true }), F('o/new', 'new')),
      layer(F('o/top', 'top')),
    ],
    want: { '': 'dir 755 implied', o: 'dir 750', 'o/new': 'reg new', 'o/top': 'reg top' },
  },
  {
    name: 'dir over dir merges children; an implied upper dir keeps the lower attributes',
    layers: [layer(D('d', { mode: 0o711 }), F('d/a', 'a')), layer(F('d/b', 'b')), layer(D('d', { mode: 0o701 }), F('d/c', 'c'))],
    want: { '': 'dir 755 implied', d: 'dir 701', 'd/a': 'reg a', 'd/b': 'reg b', 'd/c': 'reg c' },
  },
  {
    name: 'non-dir over dir replaces the subtree; dir over file replaces the file',
    layers: [layer(D('d'), F('d/x', 'x'), F('f', 'f')), layer(F('d', 'file'), D('f'), F('f/in', 'in'))],
    want: { '': 'dir 755 implied', d: 'reg file', f: 'dir 755', 'f/in': 'reg in' },
  },
  {
    name: 'hardlinks keep their content when the target is deleted or replaced; chains collapse',
    layers: [
      layer(F('t1', 'v1'), E({ path: 'h1', type: 'hardlink', linkname: 't1', digest: 'sha256:v1', size: 2 }), F('t2', 'w1'), E({ path: 'h2', type: 'hardlink', linkname: 't2', digest: 'sha256:w1', size: 2 }), E({ path: 'h3', type: 'hardlink', linkname: 'h2', digest: 'sha256:w1', size: 2 })),
      layer(W('t1'), F('t2', 'w2')),
    ],
    want: { '': 'dir 755 implied', h1: 'reg v1', h2: 'reg w1', h3: 'reg w1', t2: 'reg w2' },
  },
  {
    name: 'hardlinks that stay valid, incl. to a lower layer and to a symlink',
    layers: [
      layer(F('t', 'v'), E({ path: 's', type: 'symlink', linkname: 'x', mode: 0o777 })),
      layer(E({ path: 'h', type: 'hardlink', linkname: 't' }), E({ path: 'hs', type: 'hardlink', linkname: 's' })),
      layer(E({ path: 'h2', type: 'hardlink', linkname: 'h' })),
    ],
    want: { '': 'dir 755 implied', h: 'hardlink v -> t', h2: 'hardlink v -> t', hs: 'symlink -> x', s: 'symlink -> x', t: 'reg v' },
  },
  {
    name: "an explicit root entry sets the root's attributes; sort order is byte order",
    layers: [layer(D('', { mode: 0o700 }), F('a-b', '1'), F('a/b', '2'), F('a0', '3'))],
    want: { '': 'dir 700', a: 'dir 755 implied', 'a-b': 'reg 1', 'a/b': 'reg 2', a0: 'reg 3' },
  },
];

for (const c of cases) {
  test(`merge: ${c.name}`, (t) => {
    const got = view(c.layers);
    t.deepEqual(got, c.want);
    t.deepEqual(Object.keys(got), Object.keys(c.want).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  });
}

test('merged entries carry their layer index and diffIDs; opaque flags are dropped', (t) => {
  const m = mergeLayers([layer(D('o'), F('o/x', 'x')), layer(D('o', { opaque: true }), F('y', 'y'), F('z', 'z'))]);
  t.deepEqual(m.diffIDs, ['sha256:2', 'sha256:3']);
  t.like(m.entries.find((e) => e.path === 'o'), { layer: 1 });
  t.is(m.entries.find((e) => e.path === 'o')?.opaque, undefined);
  t.like(m.entries.find((e) => e.path === 'y'), { layer: 1, digest: 'sha256:y' });
});

test('a hardlink to nothing or to a directory is SL_ERR_IMAGE_BAD_TAR', (t) => {
  t.throws(() => mergeLayers([layer(E({ path: 'h', type: 'hardlink', linkname: 'missing' }))]), { code: 'SL_ERR_IMAGE_BAD_TAR' });
  t.throws(() => mergeLayers([layer(D('d'), E({ path: 'h', type: 'hardlink', linkname: 'd' }))]), { code: 'SL_ERR_IMAGE_BAD_TAR' });
});

// mergeOnto (an update merged onto the tree of its lower chain, issue 19) gives mergeLayers' tree at
// every split of every case above, and leaves the base tree as it was.
for (const c of cases.filter((c) => c.layers.length > 1)) {
  test(`mergeOnto at every split: ${c.name}`, (t) => {
    const whole = mergeLayers(c.layers);
    for (let k = 1; k < c.layers.length; k++) {
      const base = mergeLayers(c.layers.slice(0, k));
      const before = structuredClone(base);
      const upper = c.layers.slice(k);
      const got = mergeOnto(base, upper);
      t.deepEqual(base, before, `split ${k}: base unchanged`);
      const lowerLink = upper.some((l) => l.entries.some((e) => e.type === 'hardlink' && e.digest === undefined));
      if (lowerLink) t.is(got, undefined, `split ${k}: a digest-less hardlink falls back to a full merge`);
      else t.deepEqual(got, whole, `split ${k}`);
    }
  });
}

test('mergeOnto: a hardlink of the base whose file an upper layer replaces becomes a file of its own', (t) => {
  const lower = [layer(F('t', 'v'), E({ path: 'h', type: 'hardlink', linkname: 't', digest: 'sha256:v', size: 1 }))];
  const upper = [layer(F('t', 'new'))];
  const base = mergeLayers(lower);
  t.is(base.entries.find((e) => e.path === 'h')?.type, 'hardlink');
  const got = mergeOnto(base, upper);
  t.deepEqual(got, mergeLayers([...lower, ...upper]));
  t.like(got?.entries.find((e) => e.path === 'h'), { type: 'reg', digest: 'sha256:v', linkname: undefined });
  t.is(base.entries.find((e) => e.path === 'h')?.type, 'hardlink', 'the base keeps its hardlink');
});

// The sliced twins (the worker merges lower parts of pulled chains in the background, issue 19): the same
// trees and the same refusals, with the event loop running between slices (sliceMs 0: every pause).
for (const c of cases.filter((c) => c.layers.length > 1)) {
  test(`mergeLayersSliced / mergeOntoSliced equal the synchronous merges: ${c.name}`, async (t) => {
    t.deepEqual(await mergeLayersSliced(c.layers, 0), mergeLayers(c.layers));
    for (let k = 1; k < c.layers.length; k++) {
      const base = mergeLayers(c.layers.slice(0, k));
      t.deepEqual(await mergeOntoSliced(base, c.layers.slice(k), 0), mergeOnto(base, c.layers.slice(k)), `split ${k}`);
    }
  });
}

test('mergeLayersSliced rejects a hardlink to nothing with SL_ERR_IMAGE_BAD_TAR', async (t) => {
  await t.throwsAsync(mergeLayersSliced([layer(E({ path: 'h', type: 'hardlink', linkname: 'missing' }))], 0), { code: 'SL_ERR_IMAGE_BAD_TAR' });
});

test('a sliced merge lets timers run between its slices', async (t) => {
  // 3 000 entries: several pause points (every 512 entries); a 0 ms slice yields at each.
  const big = layer(...Array.from({ length: 3000 }, (_, i) => F(`f${i}`, `v${i}`)));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  try {
    await mergeLayersSliced([big, layer(F('g', 'w'))], 0);
  } finally {
    clearInterval(timer);
  }
  t.true(ticks > 0, 'a timer ran during the merge');
});
