import test from 'ava';
import { createHash } from 'node:crypto';
import { mergeLayers } from '../../../src/layers/merge.js';
import type { LayerToc, MergedTree, TocEntry } from '../../../src/layers/toc.js';
import type { ImageConfig } from '../../../src/oci/types.js';
import { haveContent, plan, resolvePath, type PlanInput } from '../../../src/proxy/planner.js';

const dg = (s: string): string => 'sha256:' + createHash('sha256').update(s).digest('hex');
const reg = (path: string, content: string, size = content.length): TocEntry => ({ path, type: 'reg', mode: 0o755, uid: 0, gid: 0, size, mtime: 0, digest: dg(content) });
const dir = (path: string): TocEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 });
const sym = (path: string, linkname: string): TocEntry => ({ path, type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 0, linkname });
const layer = (id: string, entries: TocEntry[]): LayerToc => ({ version: 1, diffID: dg(id), uncompressedSize: 0, entries });

/** Test-local overlay merge (last wins, whiteouts remove) — enough for planner inputs. */
function merge(chain: LayerToc[]): MergedTree {
  const m = new Map<string, TocEntry>();
  for (const l of chain) {
    for (const e of l.entries) {
      if (e.type === 'whiteout') m.delete(e.path);
      else m.set(e.path, e);
    }
  }
  return { diffIDs: chain.map((l) => l.diffID), entries: [...m.values()].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path))) };
}

const config: ImageConfig = {
  architecture: 'amd64',
  os: 'linux',
  config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['app', '--serve'] },
  rootfs: { type: 'layers', diff_ids: [] },
};

const base = layer('base', [
  dir('bin'), sym('usr/bin', '../bin'), dir('usr'),
  reg('bin/app', 'APP'), reg('bin/zzz', 'zzz'), reg('lib/libc.so.6', 'libc'), reg('etc/passwd', 'root'), reg('etc/huge', 'h', 100_000),
  reg('opt/big', 'big'), reg('opt/dup', 'libc'), reg('opt/empty', '', 0), reg('opt/hidden', 'hidden'),
]);
const top = layer('top', [reg('opt/new', 'new'), { ...reg('opt/hidden', ''), type: 'whiteout', digest: undefined }, reg('bin/zzz', 'zzz2')]);

function input(over: Partial<PlanInput> = {}): PlanInput {
  const chain = [base, top];
  return { chain, merged: merge(chain), haveDiffIDs: new Set(), haveDigests: new Set(), config, ...over };
}

test('cold plan: order by heuristic, dedup, no empty/hidden/overwritten files', (t) => {
  const p = plan(input());
  t.deepEqual(p.layers.map((l) => l.diffID), [base.diffID, top.diffID]);
  t.deepEqual(p.items.map((i) => i.path), ['bin/app', 'lib/libc.so.6', 'etc/passwd', 'etc/huge', 'opt/big', 'bin/zzz', 'opt/new']);
  t.is(new Set(p.items.map((i) => i.digest)).size, p.items.length);
  t.false(p.items.some((i) => i.digest === dg('hidden') || i.digest === dg('zzz')));
  t.is(p.items.find((i) => i.path === 'opt/new')!.sourceDiffID, top.diffID);
  t.is(p.items.find((i) => i.path === 'bin/zzz')!.sourceDiffID, top.diffID);
});

test('a hardlink whose target an upper layer replaced is ordered and sourced by its own lower layer', (t) => {
  // test/helpers/fixtures.ts rootfs: usr/lib/libfoo.hard keeps "libfoo v1" after usr/lib/libfoo.so.1 is
  // replaced. The merged tree (the real merge) makes it a 'reg' of layer 0; no layer has a 'reg' at its
  // path, and it once sorted with the top layer, behind an 8 MiB file there (mount-faults "killed").
  const l0 = layer('l0', [dir('usr'), dir('usr/lib'), reg('usr/lib/libfoo.so.1', 'libfoo v1'), { ...reg('usr/lib/libfoo.hard', 'libfoo v1'), type: 'hardlink', linkname: 'usr/lib/libfoo.so.1' }]);
  const l1 = layer('l1', [reg('usr/lib/libfoo.so.1', 'libfoo v2!')]);
  const l2 = layer('l2', [dir('data'), reg('data/noise.bin', 'noise', 8 * 1024 * 1024)]);
  const chain = [l0, l1, l2];
  const merged = mergeLayers(chain);
  t.is(merged.entries.find((e) => e.path === 'usr/lib/libfoo.hard')?.type, 'reg', 'precondition: the merge turns it into a plain file');
  const p = plan({ chain, merged, haveDiffIDs: new Set(), haveDigests: new Set() });
  t.deepEqual(p.items.map((i) => i.path), ['usr/lib/libfoo.so.1', 'usr/lib/libfoo.hard', 'data/noise.bin'], 'shared library, then the rest by providing layer');
  t.is(p.items.find((i) => i.path === 'usr/lib/libfoo.hard')!.sourceDiffID, l0.diffID);
});

test('have: skips layers and content the worker holds', (t) => {
  const v1 = layer('v1', [reg('x/old', 'big'), reg('x/other', 'APP')]);
  const p = plan(input({ haveDiffIDs: new Set([base.diffID]), haveDigests: haveContent([base, v1], []) }));
  t.deepEqual(p.layers.map((l) => l.diffID), [top.diffID]);
  t.deepEqual(p.items.map((i) => i.path), ['bin/zzz', 'opt/new']);
});

test('rank map (from traces) goes first, by digest or path', (t) => {
  const p = plan(input({ rank: new Map([[dg('new'), 1], ['opt/big', 0]]) }));
  t.deepEqual(p.items.slice(0, 3).map((i) => i.path), ['opt/big', 'opt/new', 'bin/app']);
});

test('deterministic: same input in another entry order gives the same plan', (t) => {
  const a = plan(input());
  const shuffled = input();
  shuffled.merged = { ...shuffled.merged, entries: [...shuffled.merged.entries].reverse() };
  t.deepEqual(plan(shuffled), a);
  t.deepEqual(plan(input()), a);
});

test('entrypoint resolution follows PATH and symlinks; no config falls back to layer/path order', (t) => {
  const m = new Map(merge([base]).entries.map((e) => [e.path, e] as const));
  t.is(resolvePath('/usr/bin/app', m), 'bin/app');
  t.is(resolvePath('/nope/app', m), undefined);
  const p = plan(input({ config: undefined }));
  t.deepEqual(p.items.map((i) => i.path).slice(0, 3), ['lib/libc.so.6', 'etc/passwd', 'bin/app']);
});
