import test from 'ava';
import { mountsUsing, overlayLowers, parseMountInfo } from '../../../src/worker/fs/mount-table.js';
import { errnoFor } from '../../../src/worker/fs/fuse-views.js';
import { StarlightError } from '../../../src/errors.js';
import { constants } from 'node:os';

test('parses mountinfo lines, including escaped paths and optional fields', (t) => {
  const text = [
    '43 27 0:40 / /tmp/a\\040b/mnt ro,nosuid,nodev,relatime shared:5 master:1 - fuse.starlight starlight ro,user_id=0',
    '24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw',
    'garbage',
    '',
  ].join('\n');
  t.deepEqual(parseMountInfo(text), [
    { dev: '0:40', mountPoint: '/tmp/a b/mnt', fsType: 'fuse.starlight', source: 'starlight', superOptions: 'ro,user_id=0' },
    { dev: '0:6', mountPoint: '/dev', fsType: 'devtmpfs', source: 'devtmpfs', superOptions: 'rw' },
  ]);
});

test('overlay lower layers from super options: lowerdir, lowerdir+, datadir+, escaped separators', (t) => {
  t.deepEqual(overlayLowers('rw,lowerdir=/a/fs:/b/fs,upperdir=/u,workdir=/w,uuid=on'), ['/a/fs', '/b/fs']);
  t.deepEqual(overlayLowers('rw,lowerdir+=/a,lowerdir+=/b\\,c,datadir+=/d\\:e'), ['/a', '/b,c', '/d:e']);
  t.deepEqual(overlayLowers('rw,lowerdir=/a::/data'), ['/a', '/data']);
  t.deepEqual(overlayLowers('rw,upperdir=/u'), []);
});

test('mounts using a view: binds elsewhere and overlays over it count; its own mount and same-path copies do not', (t) => {
  const view = '/var/lib/sl/snapshots/7/fs';
  const own = `50 27 0:77 / ${view} ro,nosuid - fuse.starlight starlight ro,user_id=0`;
  const bind = '51 27 0:77 / /mnt/bind ro - fuse.starlight starlight ro,user_id=0';
  const container = `52 27 0:90 / /run/c/rootfs rw - overlay overlay rw,lowerdir=${view},upperdir=/u,workdir=/w`;
  const below = `53 27 0:91 / /run/d/rootfs rw - overlay overlay rw,lowerdir=/x:${view}/sub,upperdir=/u,workdir=/w`;
  const other = '54 27 0:92 / /run/e/rootfs rw - overlay overlay rw,lowerdir=/var/lib/sl/snapshots/7/fs2,upperdir=/u,workdir=/w';
  t.deepEqual(mountsUsing(view, '0:77', [own, other].join('\n')), [], 'only the view itself and an unrelated overlay');
  t.deepEqual(mountsUsing(view, '0:77', [own, bind, container, below].join('\n')).map((m) => m.mountPoint), ['/mnt/bind', '/run/c/rootfs', '/run/d/rootfs']);
  t.deepEqual(mountsUsing(view, '', [own, container].join('\n')).map((m) => m.mountPoint), ['/run/c/rootfs'], 'dev unknown: overlays still count');
});

test('FUSE errno mapping: canceled → EINTR, not-found → ENOENT, everything else → EIO', (t) => {
  t.is(errnoFor(new StarlightError('SL_ERR_CANCELED', 'x')), constants.errno.EINTR);
  t.is(errnoFor(new StarlightError('SL_ERR_OCI_NOT_FOUND', 'x')), constants.errno.ENOENT);
  t.is(errnoFor(new StarlightError('SL_ERR_INTERNAL', 'x')), constants.errno.EIO);
  t.is(errnoFor(new Error('plain')), constants.errno.EIO);
});
