/**
 * TocWire: header TOCs compressed once per diffID; warm() compresses a TOC as soon as the indexer
 * recorded it, so the first header that needs it (an update's, a first contact's) does not wait.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { brotliDecompressSync } from 'node:zlib';
import { encodeToc } from '../../../src/layers/toc-codec.js';
import { TOC_VERSION, type LayerToc } from '../../../src/layers/toc.js';
import { TocWire } from '../../../src/proxy/session/toc-wire.js';

const dg = (s: string): string => 'sha256:' + createHash('sha256').update(s).digest('hex');

function tocBytes(n: number): { diffID: string; toc: Uint8Array } {
  const toc: LayerToc = {
    version: TOC_VERSION,
    diffID: dg(`layer ${n}`),
    uncompressedSize: 1,
    entries: Array.from({ length: 500 }, (_, i) => ({ path: `usr/share/doc/pkg${i}/copyright`, type: 'reg' as const, mode: 0o644, uid: 0, gid: 0, size: i, mtime: 1, digest: dg(`${n}/${i}`) })),
  };
  return { diffID: toc.diffID, toc: encodeToc(toc) };
}

async function until(cond: () => boolean, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

test('a warmed TOC is compressed before any header asks, and the header gets that copy', async (t) => {
  const wire = new TocWire();
  const a = tocBytes(1);
  const b = tocBytes(2);
  t.false(wire.has(a.diffID));
  wire.warm(a.diffID, a.toc);
  t.true(await until(() => wire.has(a.diffID)), 'compressed in the background');
  t.false(wire.has(b.diffID), 'only what was warmed');
  const [la, lb] = await wire.brotli([a, b]);
  t.is(la!.encoding, 'br');
  t.deepEqual(brotliDecompressSync(la!.toc), Buffer.from(a.toc));
  t.deepEqual(brotliDecompressSync(lb!.toc), Buffer.from(b.toc));
  t.is((await wire.brotli([a]))[0]!.toc, la!.toc, 'the warmed copy, not a second compression');
  wire.warm(a.diffID, a.toc); // warming again is a no-op
  t.is((await wire.brotli([a]))[0]!.toc, la!.toc);
});
