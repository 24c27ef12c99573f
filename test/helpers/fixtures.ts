/**
 * Fixture images as layer lists (lowest layer first), built by fixtures/image-writer.ts. Together they
 * cover: hardlinks (incl. one whose target an upper layer deletes, and one whose target it replaces),
 * symlinks, whiteouts of files and of whole dirs, opaque dirs, xattrs (user.* and security.capability),
 * names and link targets > 100 bytes, empty files, a file > 64 MiB (generated, never stored), char and
 * block devices and a fifo, a layer with implied parents, gzip + zstd + uncompressed layers, a file
 * replaced by a dir and a dir replaced by a file, GNU-format headers with base-256 uids.
 *
 * Rule kept so the overlay oracle can compare modes: a dir a layer only implies, while a lower layer
 * lists it, is 0755 root:root in that lower layer (see merge.ts on implied dirs).
 */
import type { LayerSpec, WriterEntry } from '../../fixtures/image-writer.js';

export interface FixtureImage {
  name: string;
  layers: LayerSpec[];
}

/** security.capability v2 value granting cap_net_bind_service (permitted + effective). */
const CAP_NET_BIND = Buffer.from('0100000200040000000000000000000000000000', 'hex');
const LONG_DIR = `deep/${'d'.repeat(90)}/${'e'.repeat(60)}`;
const MIB = 1024 * 1024;
/** Size of the big file: over 64 MiB and not a multiple of the tar block or of the write chunk. */
export const BIG_FILE_SIZE = 64 * MIB + 4097;

/** Deterministic, compressible, non-repeating content: 32-byte lines numbered in hex. */
export function lineContent(offset: number, length: number): Buffer {
  const first = Math.floor(offset / 32);
  const last = Math.floor((offset + length - 1) / 32);
  const lines: string[] = [];
  for (let i = first; i <= last; i++) lines.push(`${i.toString(16).padStart(16, '0')} starlight fix.\n`);
  const all = Buffer.from(lines.join(''), 'latin1');
  const skip = offset - first * 32;
  return all.subarray(skip, skip + length);
}

const text = (s: string) => Buffer.from(s);
const T1 = 1_600_000_000;
const T2 = 1_650_000_000;

const base: WriterEntry[] = [
  { path: './', type: 'dir', mtime: T1 },
  { path: 'bin', type: 'dir', mtime: T1 },
  { path: 'bin/sh', type: 'reg', mode: 0o755, content: text('#!shell\n'), mtime: T1 },
  { path: 'bin/ls', type: 'hardlink', mode: 0o755, linkname: 'bin/sh', mtime: T1 },
  { path: 'bin/ping', type: 'reg', mode: 0o755, content: text('ping'), xattrs: { 'security.capability': CAP_NET_BIND }, mtime: T1 },
  { path: 'bin/su', type: 'reg', mode: 0o4755, content: text('su'), mtime: T1 },
  { path: 'etc', type: 'dir', mtime: T1 },
  { path: 'etc/hostname', type: 'reg', content: text('fixture\n'), xattrs: { 'user.origin': 'layer1', 'user.bin': new Uint8Array([0, 1, 255]) }, mtime: T1 + 0.5 },
  { path: 'etc/empty', type: 'reg', content: Buffer.alloc(0), mtime: T1 },
  { path: 'etc/passwd', type: 'reg', content: text('root:x:0:0::/root:/bin/sh\n'), mtime: T1 },
  { path: 'usr', type: 'dir', mtime: T1 },
  { path: 'usr/lib', type: 'dir', mtime: T1 },
  { path: 'usr/lib/libfoo.so.1', type: 'reg', content: text('libfoo v1'), mtime: T1 },
  { path: 'usr/lib/libfoo.so', type: 'symlink', linkname: 'libfoo.so.1', mtime: T1 },
  { path: 'usr/lib/libfoo.hard', type: 'hardlink', linkname: 'usr/lib/libfoo.so.1', mtime: T1 },
  { path: 'dev', type: 'dir', mtime: T1 },
  { path: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3, mtime: T1 },
  { path: 'dev/loop0', type: 'block', mode: 0o660, gid: 6, devmajor: 7, devminor: 0, mtime: T1 },
  { path: 'run', type: 'dir', mtime: T1 },
  { path: 'run/initctl', type: 'fifo', mode: 0o600, mtime: T1 },
  { path: 'tmp', type: 'dir', mode: 0o1777, mtime: T1 },
  { path: 'home', type: 'dir', mtime: T1 },
  { path: 'home/user', type: 'dir', mode: 0o700, uid: 1000, gid: 1000, mtime: T1 },
  { path: 'home/user/.profile', type: 'reg', uid: 1000, gid: 1000, content: text('export A=1\n'), mtime: T1 },
  { path: 'opt', type: 'dir', mtime: T1 },
  { path: 'opt/app', type: 'dir', mode: 0o750, mtime: T1, xattrs: { 'user.dir': 'app' } },
  { path: 'opt/app/old.txt', type: 'reg', content: text('old'), mtime: T1 },
  { path: 'opt/app/sub', type: 'dir', mtime: T1 },
  { path: 'opt/app/sub/deep.txt', type: 'reg', content: text('deep'), mtime: T1 },
  { path: 'var', type: 'dir', mtime: T1 },
  { path: 'var/log', type: 'dir', mtime: T1 },
  { path: 'var/log/old.log', type: 'reg', content: text('log'), mtime: T1 },
  { path: 'var/log/keep.log', type: 'reg', content: text('keep'), mtime: T1 },
  { path: 'tobedir', type: 'reg', content: text('file now, dir later'), mtime: T1 },
  { path: 'tobefile', type: 'dir', mtime: T1 },
  { path: 'tobefile/child', type: 'reg', content: text('child'), mtime: T1 },
  { path: 'deep', type: 'dir', mtime: T1 },
  { path: `deep/${'d'.repeat(90)}`, type: 'dir', mtime: T1 },
  { path: LONG_DIR, type: 'dir', mtime: T1 },
  { path: `${LONG_DIR}/${'f'.repeat(120)}.txt`, type: 'reg', content: text('long name'), mtime: T1 },
  { path: 'deep/longlink', type: 'symlink', linkname: `${LONG_DIR}/${'f'.repeat(120)}.txt`, mtime: T1 },
];

const upper: WriterEntry[] = [
  // dir over dir: attributes of the upper dir win, children merge
  { path: 'etc', type: 'dir', mode: 0o755, mtime: T2 },
  { path: 'etc/motd', type: 'reg', content: text('welcome\n'), mtime: T2 },
  // whiteout of a file
  { path: 'var/log/.wh.old.log', type: 'reg', mtime: T2 },
  // opaque dir with its own new entry
  { path: 'opt/app', type: 'dir', mode: 0o755, mtime: T2 },
  { path: 'opt/app/.wh..wh..opq', type: 'reg', mtime: T2 },
  { path: 'opt/app/new.txt', type: 'reg', content: text('new'), mtime: T2 },
  // a file replaced by a dir, a dir replaced by a file
  { path: 'tobedir', type: 'dir', mtime: T2 },
  { path: 'tobedir/inner', type: 'reg', content: text('inner'), mtime: T2 },
  { path: 'tobefile', type: 'reg', content: text('was a dir'), mtime: T2 },
  // the hardlink target is replaced: usr/lib/libfoo.hard keeps "libfoo v1"
  { path: 'usr/lib/libfoo.so.1', type: 'reg', content: text('libfoo v2!'), mtime: T2 },
];

const implied: WriterEntry[] = [
  // no directory entries at all: srv/, srv/www/ are new; etc/ and bin/ exist below (0755 root)
  { path: 'srv/www/index.html', type: 'reg', content: text('<html/>'), mtime: T2 },
  { path: 'etc/ssl/cert.pem', type: 'reg', content: text('PEM'), mtime: T2 },
  // deletes the hardlink target: bin/ls keeps its content
  { path: 'bin/.wh.sh', type: 'reg', mtime: T2 },
  // whiteout of a whole dir subtree
  { path: 'home/.wh.user', type: 'reg', mtime: T2 },
  // whiteout of a path that never existed (its implied parent stays, empty)
  { path: 'ghost/.wh.nothing', type: 'reg', mtime: T2 },
];

export const FIXTURES: FixtureImage[] = [
  {
    name: 'rootfs',
    layers: [
      { entries: base, compression: 'gzip' },
      { entries: upper, compression: 'zstd' },
      { entries: implied, compression: 'none' },
    ],
  },
  {
    name: 'big',
    layers: [
      {
        entries: [
          { path: 'data', type: 'dir', mtime: T1 },
          { path: 'data/big.bin', type: 'reg', content: { size: BIG_FILE_SIZE, generate: lineContent }, mtime: T1 },
          { path: 'data/zeros', type: 'reg', content: { size: 3 * MIB + 1, fill: 0 }, mtime: T1 },
        ],
        compression: 'gzip',
      },
      {
        entries: [
          { path: 'data/small', type: 'reg', content: text('small'), mtime: T2 },
          { path: 'data/big.link', type: 'hardlink', linkname: 'data/small', mtime: T2 },
        ],
        compression: 'zstd',
      },
    ],
  },
  {
    name: 'gnu',
    layers: [
      {
        format: 'gnu',
        compression: 'gzip',
        entries: [
          { path: 'g', type: 'dir', mtime: T1 },
          { path: `g/${'n'.repeat(150)}`, type: 'reg', uid: 3_000_000, gid: 3_000_001, content: text('gnu long'), mtime: T1 },
          { path: 'g/lnk', type: 'symlink', linkname: `${'t'.repeat(140)}/x`, mtime: T1 },
        ],
      },
    ],
  },
];
