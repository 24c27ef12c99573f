import test from 'ava';
import { Packr } from 'msgpackr';
import { formatTocLine } from '../../../src/layers/listing.js';
import { decodeToc, encodeToc, TOC_MAGIC } from '../../../src/layers/toc-codec.js';
import { TOC_VERSION, type LayerToc } from '../../../src/layers/toc.js';

const toc: LayerToc = {
  version: TOC_VERSION,
  diffID: 'sha256:' + 'a'.repeat(64),
  uncompressedSize: 2 ** 40 + 3,
  entries: [
    { path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0, implied: true, opaque: true },
    { path: 'f', type: 'reg', mode: 0o4755, uid: 4_000_000, gid: 1, size: 2 ** 33, mtime: 1700000000.123456, digest: 'sha256:' + 'b'.repeat(64), offset: 512, xattrs: { 'user.z': new Uint8Array([1]), 'security.capability': new Uint8Array([0, 255]) } },
    { path: 'l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: -5, linkname: '../x' },
    { path: 'c', type: 'char', mode: 0o600, uid: 0, gid: 0, size: 0, mtime: 1, devmajor: 1, devminor: 3, layer: 2 },
    { path: 'w', type: 'whiteout', mode: 0, uid: 0, gid: 0, size: 0, mtime: 1 },
  ],
};

test('encode/decode round-trips and is deterministic (xattr insertion order does not matter)', (t) => {
  const a = encodeToc(toc);
  t.deepEqual(decodeToc(a), toc);
  t.true(encodeToc(decodeToc(a)).equals(a));
  const reordered = structuredClone(toc);
  reordered.entries[1]!.xattrs = { 'security.capability': new Uint8Array([0, 255]), 'user.z': new Uint8Array([1]) };
  t.true(encodeToc(reordered).equals(a));
  const other = structuredClone(toc);
  other.entries[2]!.linkname = '../y';
  t.false(encodeToc(other).equals(a));
});

test('wrong version, foreign and corrupt bytes are SL_ERR_IMAGE_BAD_TOC', (t) => {
  const p = new Packr({ useRecords: false });
  t.throws(() => decodeToc(p.pack([TOC_MAGIC, TOC_VERSION + 1, 'sha256:x', 0, []])), { code: 'SL_ERR_IMAGE_BAD_TOC' });
  t.throws(() => decodeToc(p.pack({ hello: 1 })), { code: 'SL_ERR_IMAGE_BAD_TOC' });
  t.throws(() => decodeToc(p.pack([TOC_MAGIC, TOC_VERSION, 'sha256:x', 0, [['p', 'nonsense']]])), { code: 'SL_ERR_IMAGE_BAD_TOC' });
  t.throws(() => decodeToc(encodeToc(toc).subarray(0, 40)), { code: 'SL_ERR_IMAGE_BAD_TOC' });
});

test('formatTocLine renders a tar -tv like line', (t) => {
  t.is(formatTocLine(toc.entries[2]!), 'lrwxrwxrwx 0/0                  0 1969-12-31 23:59 l -> ../x');
  t.regex(formatTocLine(toc.entries[1]!), /^-rwsr-xr-x 4000000\/1 +8589934592 2023-11-14 22:13 f  sha256:bbbbbbbbbbbb  xattrs=security.capability,user.z$/);
  t.regex(formatTocLine(toc.entries[3]!), /^crw------- 0\/0 +1,3 /);
  t.regex(formatTocLine(toc.entries[0]!), / \. \(opaque\) \(implied\)$/);
});
