import test from 'ava';
import type { DeltaHeader } from '../../../src/protocol/index.js';
import { itemsInOrder } from '../../../src/proxy/session/delta-plan.js';
import type { RankedFile } from '../../../src/proxy/priority.js';

const d = (n: number): string => `sha256:${String(n).padStart(64, '0')}`;

function header(digests: string[], firstItem = 0): DeltaHeader {
  return {
    ref: 'r',
    platform: 'linux/amd64',
    manifestDigest: d(99),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest: new Uint8Array(),
    config: new Uint8Array(),
    diffIDs: [],
    layers: [],
    items: digests.map((digest) => ({ digest, size: 1, encodedSize: 1, encoding: 'identity' })),
    firstItem,
  };
}

const file = (path: string, digest: string, rank: number): RankedFile => ({ path, digest, size: 1, rank });

test('a later order names the items from firstItem on, in its order, each item at its first file', (t) => {
  const h = header([d(0), d(1), d(2), d(3), d(4)], 1);
  const files = [file('a', d(3), 0), file('b', d(0), 1), file('c', d(9), 2), file('d', d(1), 3), file('e', d(3), 4)];
  t.deepEqual(itemsInOrder(h, files), [3, 1], 'item 0 is before firstItem, d(9) has no item, d(3) once');
  t.deepEqual(itemsInOrder(h, []), []);
});
