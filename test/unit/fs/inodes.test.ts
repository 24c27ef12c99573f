import test from 'ava';
import type { MergedTree, TocEntry } from '../../../src/layers/toc.js';
import { buildInodeTable, buildInodeTableSliced, readInode, S_IFMT, INODE_RECORD_SIZE } from '../../../src/worker/fs/inodes.js';
import { hasCode } from '../../../src/errors.js';

const base = { mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000.25 };
const dir = (path: string): TocEntry => ({ ...base, path, type: 'dir' });
const reg = (path: string, size: number, digest: string): TocEntry => ({ ...base, mode: 0o644, path, type: 'reg', size, digest });

function tree(entries: TocEntry[]): MergedTree {
  return { diffIDs: ['sha256:00'], entries };
}

test('encodes dirs, files, links, devices and xattrs', (t) => {
  const tr = tree([
    dir(''),
    dir('a'),
    reg('a/f', 10, 'sha256:f'),
    { ...base, path: 'a/h', type: 'hardlink', linkname: 'a/f', size: 10, digest: 'sha256:f' },
    dir('a/sub'),
    { ...base, path: 'a/z', type: 'symlink', linkname: '../tgt' },
    { ...base, path: 'dev', type: 'char', mode: 0o600, devmajor: 1, devminor: 3 },
    { ...reg('e', 0, 'sha256:e'), xattrs: { 'user.k': new Uint8Array([1, 2, 0, 3]) } },
  ]);
  const located: string[] = [];
  const table = buildInodeTable(tr, (d) => (located.push(d), d === 'sha256:f' ? '/cas/f' : null));
  t.is(table.count, 7); // hardlink shares an inode
  t.is(table.buffers.inodes.length, 7 * INODE_RECORD_SIZE);
  t.deepEqual(located, ['sha256:f']); // empty files never need content
  const root = readInode(table.buffers, 1);
  t.is(root.mode & S_IFMT, 0o040000);
  t.is(root.nlink, 3); // 2 + subdir a
  t.deepEqual(root.children.map((c) => c.name), ['a', 'dev', 'e']);
  const a = readInode(table.buffers, 2);
  t.is(a.nlink, 3);
  t.is(a.parent, 1);
  t.deepEqual(a.children.map((c) => c.name), ['f', 'h', 'sub', 'z']);
  t.is(a.children[0].ino, a.children[1].ino);
  const f = readInode(table.buffers, a.children[0].ino);
  t.is(f.nlink, 2);
  t.is(f.size, 10);
  t.is(f.contentPath, '/cas/f');
  t.is(f.mtimeSec, 1700000000);
  t.is(f.mtimeNsec, 250000000);
  t.is(f.mode, 0o100644);
  const z = readInode(table.buffers, a.children[3].ino);
  t.is(z.link, '../tgt');
  t.is(z.size, 6);
  const dev = readInode(table.buffers, root.children[1].ino);
  t.is(dev.mode, 0o020600);
  t.deepEqual([dev.rdevMajor, dev.rdevMinor], [1, 3]);
  const e = readInode(table.buffers, root.children[2].ino);
  t.deepEqual([...e.xattrs['user.k']], [1, 2, 0, 3]);
  t.is(table.digests[root.children[2].ino], 'sha256:e');
  t.is(table.paths[a.children[1].ino], 'a/f');
  t.deepEqual([...table.absent.keys()], []);
});

test('records absent content per digest', (t) => {
  const table = buildInodeTable(tree([dir(''), reg('x', 5, 'sha256:x'), reg('y', 5, 'sha256:x')]), () => null);
  t.deepEqual(table.absent.get('sha256:x'), [2, 3]);
});

test('sorts children by bytes, not by path order', (t) => {
  const table = buildInodeTable(tree([dir(''), dir('b'), reg('b-c', 1, 'sha256:1'), reg('b/x', 1, 'sha256:2'), reg('B', 1, 'sha256:3')]), () => null);
  t.deepEqual(readInode(table.buffers, 1).children.map((c) => c.name), ['B', 'b', 'b-c']);
});

test('a directory with a name outside the BMP is sorted in UTF-8 byte order, not UTF-16 order', (t) => {
  // U+FF5E (EF BD 9E) < U+1F600 (F0 9F 98 80) in UTF-8, but its UTF-16 unit 0xFF5E > 0xD83D.
  const names = ['\u{1F600}', '\uFF5E', 'a'];
  const table = buildInodeTable(tree([dir(''), ...names.map((n, i) => reg(n, 1, `sha256:${i}`))]), () => null);
  t.deepEqual(readInode(table.buffers, 1).children.map((c) => c.name), ['a', '\uFF5E', '\u{1F600}']);
});

test('rejects trees that break the MergedTree contract', (t) => {
  const bad: TocEntry[][] = [
    [reg('x', 1, 'sha256:1')],
    [dir(''), reg('missing/x', 1, 'sha256:1')],
    [dir(''), { ...base, path: 'h', type: 'hardlink', linkname: 'nope' }],
    [dir(''), dir('d'), { ...base, path: 'h', type: 'hardlink', linkname: 'd' }],
    [dir(''), reg('x', 1, 'sha256:1'), reg('x', 1, 'sha256:1')],
    [dir(''), { ...base, path: 'x', type: 'reg', size: 1 }],
    [dir(''), { ...base, path: 'x', type: 'toString' as TocEntry['type'] }], // not a type, whatever the prototype has
    [dir(''), reg('f', 1, 'sha256:1'), reg('f/x', 1, 'sha256:2')], // a parent that is not a directory
    [dir(''), dir('d'), reg('d/x', 1, 'sha256:1'), { ...base, path: 'd/x', type: 'hardlink', linkname: 'd/x' }],
  ];
  for (const entries of bad) {
    const err = t.throws(() => buildInodeTable(tree(entries), () => null));
    t.true(hasCode(err, 'SL_ERR_FS_BAD_TREE'));
  }
});

test('100k entries encode (time logged; speed is measured in bench/)', (t) => {
  const entries: TocEntry[] = [dir('')];
  for (let d = 0; d < 100; d++) {
    entries.push(dir(`d${d}`));
    for (let f = 0; f < 1000; f++) entries.push(reg(`d${d}/f${f}`, 100, `sha256:${d}-${f}`));
  }
  entries.sort((x, y) => Buffer.compare(Buffer.from(x.path), Buffer.from(y.path)));
  const start = performance.now();
  const table = buildInodeTable(tree(entries), (d) => `/cas/${d}`);
  const ms = performance.now() - start;
  t.log(`100k entries: ${ms.toFixed(0)} ms`);
  t.is(table.count, 100_101);
});

test('the sliced build (a pull builds its view table while containerd answers) gives the same table', async (t) => {
  const entries: TocEntry[] = [dir('')];
  for (let d = 0; d < 20; d++) {
    entries.push(dir(`d${d}`));
    for (let f = 0; f < 200; f++) entries.push(reg(`d${d}/f${f}`, f, `sha256:${d}-${f}`));
    entries.push({ ...base, path: `d${d}/l`, type: 'hardlink', linkname: `d${d}/f1`, size: 1, digest: `sha256:${d}-1` });
  }
  entries.sort((x, y) => Buffer.compare(Buffer.from(x.path), Buffer.from(y.path)));
  // Every third digest present: the absent map and content paths are compared too.
  const locate = (d: string): string | null => (Number(d.split('-')[1]) % 3 === 0 ? `/cas/${d}` : null);
  const whole = buildInodeTable(tree(entries), locate);
  const sliced = await buildInodeTableSliced(tree(entries), locate);
  t.deepEqual(sliced, whole);
  t.is(sliced.count, 1 + 20 * 201);
});
