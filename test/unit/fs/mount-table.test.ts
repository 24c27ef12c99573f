import test from 'ava';
import { parseMountInfo } from '../../../src/worker/fs/mount-table.js';
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
    { dev: '0:40', mountPoint: '/tmp/a b/mnt', fsType: 'fuse.starlight', source: 'starlight' },
    { dev: '0:6', mountPoint: '/dev', fsType: 'devtmpfs', source: 'devtmpfs' },
  ]);
});

test('FUSE errno mapping: canceled → EINTR, not-found → ENOENT, everything else → EIO', (t) => {
  t.is(errnoFor(new StarlightError('SL_ERR_CANCELED', 'x')), constants.errno.EINTR);
  t.is(errnoFor(new StarlightError('SL_ERR_OCI_NOT_FOUND', 'x')), constants.errno.ENOENT);
  t.is(errnoFor(new StarlightError('SL_ERR_INTERNAL', 'x')), constants.errno.EIO);
  t.is(errnoFor(new Error('plain')), constants.errno.EIO);
});
