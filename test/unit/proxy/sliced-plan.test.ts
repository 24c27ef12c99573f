/**
 * Issue 14: merging and planning run in slices with the event loop running between them
 * (mergeLayersSliced, planSliced); the result must be exactly the synchronous one, and the loop must
 * actually get turns while they run on a large input.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { mergeLayers, mergeLayersSliced } from '../../../src/layers/merge.js';
import type { LayerToc, TocEntry } from '../../../src/layers/toc.js';
import { plan, planSliced } from '../../../src/proxy/planner.js';

const dg = (s: string): string => 'sha256:' + createHash('sha256').update(s).digest('hex');
const reg = (path: string, content: string): TocEntry => ({ path, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: content.length, mtime: 0, digest: dg(content) });
const dir = (path: string): TocEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 });

/** Three layers of `n` files each; the top one overwrites, deletes and hardlinks some of the bottom's. */
function chain(n: number): LayerToc[] {
  const out: LayerToc[] = [];
  for (let l = 0; l < 3; l++) {
    const entries: TocEntry[] = [dir(`l${l}`)];
    for (let i = 0; i < n; i++) entries.push(reg(`l${l}/d${i % 50}/f${i}${i % 7 === 0 ? '.so.1' : ''}`, `${l}/${i % (n / 2)}`));
    if (l === 2) {
      for (let i = 0; i < n; i += 10) entries.push(reg(`l0/d${i % 50}/f${i}`, `over ${i}`));
      for (let i = 5; i < n; i += 20) entries.push({ path: `l0/d${i % 50}/f${i}`, type: 'whiteout', mode: 0, uid: 0, gid: 0, size: 0, mtime: 0 });
      entries.push({ path: 'l2/link', type: 'hardlink', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0, linkname: 'l2/d1/f1' });
    }
    out.push({ version: 1, diffID: dg(`layer ${l}`), uncompressedSize: 0, entries });
  }
  return out;
}

test('sliced merge and plan give exactly the synchronous result, and the event loop runs meanwhile', async (t) => {
  const tocs = chain(20_000);
  let turns = 0;
  const timer = setInterval(() => turns++, 0);
  try {
    const merged = await mergeLayersSliced(tocs);
    t.deepEqual(merged, mergeLayers(tocs));
    const rank = new Map([[merged.entries[100]!.path, 0]]);
    const input = { chain: tocs, merged, haveDiffIDs: new Set<string>(), haveDigests: new Set([dg('1/3')]), rank };
    const sliced = await planSliced(input);
    t.deepEqual(sliced, plan(input));
    t.true(sliced.items.length > 10_000);
  } finally {
    clearInterval(timer);
  }
  t.true(turns > 0, `timers ran ${turns} times during the sliced work`);
});
