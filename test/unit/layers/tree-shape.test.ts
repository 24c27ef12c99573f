/** test/helpers/tree-shape.ts on a small directory it builds itself: equal shapes, and each kind of difference reported. */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TocEntry } from '../../../src/layers/toc.js';
import { diffShapes, shapeOfDir, shapeOfTree } from '../../helpers/tree-shape.js';
import { tempDir } from '../../helpers/tmp.js';

const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const T = 1_600_000_000;

(existsSync('/usr/bin/setfattr') && process.getuid?.() === 0 ? test : test.skip)('shapeOfDir equals shapeOfTree of the same tree; diffShapes names each difference', async (t) => {
  const root = join(tempDir(t, 'starlight-shape-'), 'r');
  await mkdir(join(root, 'd'), { recursive: true });
  await writeFile(join(root, 'd/f'), 'hello');
  await link(join(root, 'd/f'), join(root, 'd/h'));
  await symlink('f', join(root, 'd/l'));
  execFileSync('setfattr', ['-n', 'user.k', '-v', '0x00ff', join(root, 'd/f')]);
  execFileSync('chmod', ['0755', root, join(root, 'd')]);
  execFileSync('chmod', ['0640', join(root, 'd/f')]);
  execFileSync('chown', ['-h', '0:0', root, join(root, 'd'), join(root, 'd/f'), join(root, 'd/l')]);
  for (const p of ['d/f', 'd', '']) await utimes(join(root, p), T, T);
  execFileSync('touch', ['-h', '-d', `@${T}`, join(root, 'd/l')]);

  const e = (x: Partial<TocEntry> & Pick<TocEntry, 'path' | 'type'>): TocEntry => ({ mode: 0o755, uid: 0, gid: 0, size: 0, mtime: T, ...x });
  const entries: TocEntry[] = [
    e({ path: '', type: 'dir' }),
    e({ path: 'd', type: 'dir' }),
    e({ path: 'd/f', type: 'reg', mode: 0o640, size: 5, digest: sha('hello'), xattrs: { 'user.k': new Uint8Array([0, 255]) } }),
    e({ path: 'd/h', type: 'hardlink', mode: 0o640, size: 5, digest: sha('hello'), linkname: 'd/f', xattrs: { 'user.k': new Uint8Array([0, 255]) } }),
    e({ path: 'd/l', type: 'symlink', mode: 0o777, linkname: 'f' }),
  ];
  const disk = await shapeOfDir(root, { nlink: true, concurrency: 2 });
  t.deepEqual(diffShapes(shapeOfTree(entries, undefined, { nlink: true }), disk, { names: ['toc', 'disk'] }), []);

  const changed = entries.map((x) => ({ ...x }));
  changed[2] = { ...changed[2]!, mode: 0o600, digest: sha('other') };
  changed[4] = { ...changed[4]!, linkname: 'g' };
  changed.push(e({ path: 'd/extra', type: 'fifo' }));
  const diffs = diffShapes(shapeOfTree(changed), disk, { names: ['toc', 'disk'] });
  t.deepEqual(diffs, [
    'd/extra: only in toc (fifo)',
    'd/f: mode toc="600" disk="640"',
    `d/f: sha256 toc="${sha('other')}" disk="${sha('hello')}"`,
    'd/l: link toc="g" disk="f"',
  ]);
  t.deepEqual(diffShapes(shapeOfTree(changed), disk, { ignoreFields: ['mode', 'sha256', 'link'], ignoreMtime: new Set(['d']) }), ['d/extra: only in a (fifo)']);
});
