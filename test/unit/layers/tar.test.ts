import test from 'ava';
import { Readable } from 'node:stream';
import { hasCode } from '../../../src/errors.js';
import { ByteReader } from '../../../src/layers/bytes.js';
import { parseTar, type TarHeader } from '../../../src/layers/tar.js';
import { writeTarBuffer, type WriterEntry } from '../../../fixtures/image-writer.js';
import { fixChecksum } from '../../helpers/hostile-layers.js';

interface Parsed extends TarHeader {
  data: Buffer;
}

/** Parses `tar` fed in chunks of `chunk` bytes (to exercise boundaries). */
async function parse(tar: Buffer, chunk = 1 << 20): Promise<Parsed[]> {
  const parts: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) parts.push(tar.subarray(i, i + chunk));
  const reader = new ByteReader(Readable.from(parts)[Symbol.asyncIterator]());
  const out: Parsed[] = [];
  await parseTar(reader, async (h, body) => {
    const pieces: Buffer[] = [];
    await body.read((p) => void pieces.push(Buffer.from(p)));
    out.push({ ...h, data: Buffer.concat(pieces) });
  });
  return out;
}

const longName = `a/${'n'.repeat(130)}/${'m'.repeat(120)}`;
const entries: WriterEntry[] = [
  { path: 'dir', type: 'dir', mode: 0o1777, uid: 5, gid: 6, mtime: 1234 },
  { path: longName, type: 'reg', content: Buffer.from('long'), mtime: 99.75 },
  { path: 'dir/f', type: 'reg', content: Buffer.alloc(1000, 'x'), uid: 4_000_000 },
  { path: 'dir/link', type: 'symlink', linkname: 'z'.repeat(200) },
  { path: 'dir/hard', type: 'hardlink', linkname: 'dir/f' },
  { path: 'dir/c', type: 'char', devmajor: 4, devminor: 64 },
  { path: 'dir/b', type: 'block', devmajor: 259, devminor: 1 },
  { path: 'dir/p', type: 'fifo' },
];

test('PAX: long names and links, fractional mtime, big uid, xattrs, all entry types', async (t) => {
  const tar = await writeTarBuffer([...entries, { path: 'x', type: 'reg', content: Buffer.from('v'), xattrs: { 'user.a': 'b', 'security.capability': new Uint8Array([1, 0, 255]) } }]);
  for (const chunk of [1 << 20, 7, 512, 513]) {
    const got = await parse(tar, chunk);
    t.deepEqual(got.map((e) => e.type), ['dir', 'file', 'file', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'file']);
    t.is(got[0]!.name, 'dir/');
    t.is(got[0]!.mode, 0o1777);
    t.is(got[1]!.name, longName);
    t.is(got[1]!.mtime, 99.75);
    t.is(got[1]!.data.toString(), 'long');
    t.is(got[2]!.uid, 4_000_000);
    t.is(got[2]!.data.length, 1000);
    t.is(got[3]!.linkname, 'z'.repeat(200));
    t.is(got[4]!.linkname, 'dir/f');
    t.deepEqual([got[5]!.devmajor, got[5]!.devminor, got[6]!.devmajor, got[6]!.devminor], [4, 64, 259, 1]);
    t.deepEqual(got[8]!.xattrs, { 'security.capability': new Uint8Array([1, 0, 255]), 'user.a': new Uint8Array(Buffer.from('b')) });
  }
});

test('GNU: L/K long names and base-256 uid', async (t) => {
  const tar = await writeTarBuffer(entries, { format: 'gnu' });
  const got = await parse(tar, 100);
  t.is(got[1]!.name, longName);
  t.is(got[2]!.uid, 4_000_000);
  t.is(got[3]!.linkname, 'z'.repeat(200));
  t.is(got[1]!.mtime, 99); // GNU format has no fractional mtimes
});

test('base-256 size field and ustar prefix', async (t) => {
  const tar = await writeTarBuffer([{ path: 'f', type: 'reg', content: Buffer.from('hello') }]);
  tar.fill(0, 124, 136);
  tar[124] = 0x80;
  tar[135] = 5;
  fixChecksum(tar, 0);
  const got = await parse(tar);
  t.is(got[0]!.size, 5);
  t.is(got[0]!.data.toString(), 'hello');
  const pre = await writeTarBuffer([{ path: `${'p'.repeat(120)}/file`, type: 'reg' }]);
  t.is(pre.subarray(0, 512).toString('latin1', 345, 349), 'pppp'); // written with a ustar prefix, no PAX
  t.is((await parse(pre))[0]!.name, `${'p'.repeat(120)}/file`);
});

test('bad checksum, garbage, truncation and lone zero blocks are SL_ERR_IMAGE_BAD_TAR', async (t) => {
  const tar = await writeTarBuffer(entries);
  const bad = Buffer.from(tar);
  bad[10] = bad[10]! ^ 0xff;
  await t.throwsAsync(parse(bad), { code: 'SL_ERR_IMAGE_BAD_TAR' });
  await t.throwsAsync(parse(Buffer.alloc(2048, 'garbage!')), { code: 'SL_ERR_IMAGE_BAD_TAR' });
  await t.throwsAsync(parse(tar.subarray(0, 700)), { code: 'SL_ERR_IMAGE_BAD_TAR' }); // inside data
  await t.throwsAsync(parse(tar.subarray(0, 300)), { code: 'SL_ERR_IMAGE_BAD_TAR' }); // inside a header
  const pax = await writeTarBuffer([{ path: 'p'.repeat(300), type: 'reg' }]);
  await t.throwsAsync(parse(pax.subarray(0, 1024)), { code: 'SL_ERR_IMAGE_BAD_TAR' }); // after an extended header
  const one = await writeTarBuffer([{ path: 'a', type: 'reg' }]);
  const lone = Buffer.concat([one.subarray(0, 512), Buffer.alloc(512), one.subarray(0, 512), Buffer.alloc(1024)]);
  await t.throwsAsync(parse(lone), { code: 'SL_ERR_IMAGE_BAD_TAR' });
  const octal = Buffer.from(one);
  octal.write('9', 100, 'latin1');
  fixChecksum(octal, 0);
  const err = await t.throwsAsync(parse(octal));
  t.true(hasCode(err, 'SL_ERR_IMAGE_BAD_TAR'));
});

test('a missing end-of-archive marker is accepted at an entry boundary; trailing zeros are drained', async (t) => {
  const tar = await writeTarBuffer([{ path: 'a', type: 'reg', content: Buffer.from('1') }]);
  t.is((await parse(tar.subarray(0, 1024))).length, 1);
  t.is((await parse(Buffer.concat([tar, Buffer.alloc(8192)]))).length, 1);
  t.is((await parse(Buffer.alloc(0))).length, 0);
});

test('unsupported entry types are SL_ERR_IMAGE_UNSUPPORTED', async (t) => {
  const tar = await writeTarBuffer([{ path: 'a', type: 'reg' }]);
  tar.write('S', 156, 'latin1');
  fixChecksum(tar, 0);
  await t.throwsAsync(parse(tar), { code: 'SL_ERR_IMAGE_UNSUPPORTED' });
});

test('unread bodies are skipped; old-style regular file names ending in / are dirs', async (t) => {
  const tar = await writeTarBuffer([
    { path: 'a', type: 'reg', content: Buffer.alloc(5000, 1) },
    { path: 'olddir/', type: 'reg' },
  ]);
  tar.write('\0', 5120 + 512 + 156, 'latin1');
  fixChecksum(tar, 5120 + 512);
  const names: string[] = [];
  const types: string[] = [];
  await parseTar(new ByteReader(Readable.from([tar])[Symbol.asyncIterator]()), (h) => {
    names.push(h.name);
    types.push(h.type);
  });
  t.deepEqual(names, ['a', 'olddir/']);
  t.deepEqual(types, ['file', 'dir']);
});
