/**
 * Issue 14: the worker checks a delta header against what it asked for before storing or showing
 * anything of it. Each case builds a real image (fixtures/image-writer.ts), a header as the proxy would
 * send it, then breaks one thing the way a buggy proxy or a man in the middle would.
 */
import test from 'ava';
import type { LayerToc } from '../../../src/layers/toc.js';
import type { DeltaHeader } from '../../../src/protocol/types.js';
import { checkHeaderImage, checkHeaderItems } from '../../../src/worker/pull/header-check.js';
import { imageHeader, sha256 } from '../../helpers/image-header.js';

const REF = '127.0.0.1:5000/hc/app:v1';

async function fixture(): Promise<{ header: DeltaHeader; tocs: LayerToc[] }> {
  return imageHeader(REF);
}

test('a header that matches its image passes', async (t) => {
  const { header, tocs } = await fixture();
  t.notThrows(() => checkHeaderImage(header, REF));
  t.notThrows(() => checkHeaderItems(header, tocs, REF));
});

const broken: [string, (h: DeltaHeader) => DeltaHeader][] = [
  ['manifest bytes changed (digest kept)', (h) => ({ ...h, manifest: Buffer.from(Buffer.from(h.manifest).toString().replace('schemaVersion', 'schemaversion')) })],
  ['manifest digest of another image', (h) => ({ ...h, manifestDigest: sha256(Buffer.from('other')) })],
  ['config changed (manifest kept)', (h) => ({ ...h, config: Buffer.from(Buffer.from(h.config).toString().replace('amd64', 'arm64')) })],
  ['a diffID swapped in the chain', (h) => ({ ...h, diffIDs: [h.diffIDs[0]!, sha256(Buffer.from('x'))] })],
  ['a layer dropped from the chain', (h) => ({ ...h, diffIDs: h.diffIDs.slice(0, 1) })],
];

for (const [name, breakIt] of broken) {
  test(`refused: ${name}`, async (t) => {
    const { header } = await fixture();
    t.throws(() => checkHeaderImage(breakIt(header), REF), { code: 'SL_ERR_IMAGE_MISMATCH' } as never);
  });
}

test('refused: an item in no TOC of the chain, or with another size than its TOC says', async (t) => {
  const { header, tocs } = await fixture();
  const foreign = { ...header, items: [...header.items, { digest: sha256(Buffer.from('evil')), size: 4, encodedSize: 4, encoding: 'identity' as const }] };
  t.throws(() => checkHeaderItems(foreign, tocs, REF), { code: 'SL_ERR_IMAGE_MISMATCH' } as never);
  const bigger = { ...header, items: header.items.map((it, i) => (i === 0 ? { ...it, size: it.size * 1000 } : it)) };
  t.throws(() => checkHeaderItems(bigger, tocs, REF), { code: 'SL_ERR_IMAGE_MISMATCH' } as never);
});
