/**
 * Graduations (src/worker/images/graduation.ts) on a real directory: materialised attributes, a tree
 * only visible once complete, missing content refused, leftovers of a crash removed, remove().
 * Owners and device nodes need root (skipped otherwise).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MergedTree, TocEntry } from '../../../src/layers/toc.js';
import { Graduations } from '../../../src/worker/images/graduation.js';
import { tempDir } from '../../helpers/tmp.js';

const root = process.getuid?.() === 0;
const T = 1_600_000_000;
const MANIFEST = 'sha256:' + 'ab'.repeat(32);

function tree(entries: Partial<TocEntry>[]): MergedTree {
  return { diffIDs: [], entries: entries.map((e) => ({ path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: T, ...e }) as TocEntry) };
}

function cas(t: Parameters<typeof tempDir>[0], contents: Record<string, string>): (d: string) => string | null {
  const dir = tempDir(t, 'sl-grad-cas-');
  for (const [digest, text] of Object.entries(contents)) writeFileSync(join(dir, digest), text);
  return (d) => (contents[d] !== undefined ? join(dir, d) : null);
}

(root ? test : test.skip)('a graduated tree has every attribute of the merged tree; it appears only when complete', async (t) => {
  const g = await new Graduations(join(tempDir(t, 'sl-grad-'), 'g')).open();
  const locate = cas(t, { 'sha256:a': 'hello', 'sha256:b': 'setuid' });
  const tr = tree([
    { path: '' },
    { path: 'bin', mode: 0o750, uid: 2, gid: 3, mtime: T + 1 },
    { path: 'bin/su', type: 'reg', mode: 0o4755, uid: 0, gid: 0, size: 6, digest: 'sha256:b', mtime: T + 2 },
    { path: 'empty', type: 'reg', mode: 0o600, uid: 1000, gid: 1000, digest: 'sha256:e3', mtime: T + 3 },
    { path: 'etc', mode: 0o755, xattrs: { 'user.k': Buffer.from('v') } },
    { path: 'etc/a', type: 'reg', mode: 0o644, size: 5, digest: 'sha256:a', mtime: T + 4 },
    { path: 'etc/a2', type: 'hardlink', linkname: 'etc/a', mode: 0o644, size: 5, digest: 'sha256:a', mtime: T + 4 },
    { path: 'etc/l', type: 'symlink', linkname: '../bin/su', uid: 5, gid: 6, mtime: T + 5 },
    { path: 'etc/n', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
    { path: 'etc/p', type: 'fifo', mode: 0o600 },
  ]);
  const id = `${MANIFEST}/1`;
  t.is(g.get(id), undefined);
  const dir = await g.graduate(id, tr, locate);
  t.is(g.get(id), dir);
  const st = (p: string) => lstatSync(join(dir, p));
  t.is(st('bin').mode & 0o7777, 0o750);
  t.deepEqual([st('bin').uid, st('bin').gid, st('bin').mtimeMs / 1000], [2, 3, T + 1], 'a directory keeps its mtime after its children were created');
  t.is(st('bin/su').mode & 0o7777, 0o4755, 'setuid survives the chown');
  t.is(readFileSync(join(dir, 'bin/su'), 'utf8'), 'setuid');
  t.is(st('empty').size, 0);
  t.is(st('empty').uid, 1000);
  t.is(st('etc/a').ino, st('etc/a2').ino, 'a hardlink of the image is a hardlink');
  t.is(st('etc/a').nlink, 2);
  t.is(readlinkSync(join(dir, 'etc/l')), '../bin/su');
  t.deepEqual([st('etc/l').uid, st('etc/l').mtimeMs / 1000], [5, T + 5]);
  t.true(st('etc/n').isCharacterDevice());
  t.is(st('etc/n').rdev, (1 << 8) | 3);
  t.true(st('etc/p').isFIFO());
  t.is(execFileSync('getfattr', ['--only-values', '-n', 'user.k', join(dir, 'etc')], { encoding: 'utf8' }), 'v');

  await g.remove(MANIFEST);
  t.false(existsSync(dir));
  t.is(g.get(id), undefined);
});

test('missing content is refused and leaves nothing behind; open() removes half-built trees', async (t) => {
  const base = join(tempDir(t, 'sl-grad-'), 'g');
  const g = await new Graduations(base).open();
  const tr = tree([{ path: '' }, { path: 'f', type: 'reg', mode: 0o644, size: 3, digest: 'sha256:gone', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }]);
  await t.throwsAsync(g.graduate(`${MANIFEST}/0`, tr, () => null), { message: /content of \/f .* is not present/ });
  t.is(g.get(`${MANIFEST}/0`), undefined);
  mkdirSync(join(base, 'new-crashed'));
  await new Graduations(base).open();
  t.false(existsSync(join(base, 'new-crashed')));
});
