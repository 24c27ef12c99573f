/** Pure parts of the snapshotter: mount options, filters, label parsing, gRPC conversions. */
import test from 'ava';
import { hasCode } from '../../../src/errors.js';
import { matchesAny, parseFilters } from '../../../src/worker/snapshotter/filters.js';
import { infoFromWire, infoToWire } from '../../../src/worker/snapshotter/grpc-proto.js';
import { fromGrpcError, toGrpcError } from '../../../src/worker/snapshotter/grpc-errors.js';
import { parseRemoteHints } from '../../../src/worker/snapshotter/labels.js';
import { snapshotMounts } from '../../../src/worker/snapshotter/mounts.js';
import { StarlightError } from '../../../src/errors.js';
import type { Info } from '../../../src/worker/snapshotter/types.js';

const layout = { fsDir: (id: number) => `/r/${id}/fs`, workDir: (id: number) => `/r/${id}/work` };
const plain = { indexOff: false, userxattr: false };
const local = (id: number) => ({ id, remote: false });
const remote = (id: number) => ({ id, remote: true });

test('mounts: containerd overlay rules', (t) => {
  t.deepEqual(snapshotMounts({ id: 1, kind: 'active', parents: [] }, layout, plain), [{ type: 'bind', source: '/r/1/fs', options: ['rw', 'rbind'] }]);
  t.deepEqual(snapshotMounts({ id: 1, kind: 'view', parents: [] }, layout, plain), [{ type: 'bind', source: '/r/1/fs', options: ['ro', 'rbind'] }]);
  t.deepEqual(snapshotMounts({ id: 3, kind: 'view', parents: [local(2)] }, layout, plain), [{ type: 'bind', source: '/r/2/fs', options: ['ro', 'rbind'] }]);
  t.deepEqual(snapshotMounts({ id: 4, kind: 'view', parents: [local(3), local(2)] }, layout, plain), [
    { type: 'overlay', source: 'overlay', options: ['lowerdir=/r/3/fs:/r/2/fs'] },
  ]);
  t.deepEqual(snapshotMounts({ id: 5, kind: 'active', parents: [local(2)] }, layout, { indexOff: true, userxattr: true }), [
    { type: 'overlay', source: 'overlay', options: ['index=off', 'userxattr', 'workdir=/r/5/work', 'upperdir=/r/5/fs', 'lowerdir=/r/2/fs'] },
  ]);
});

test('mounts: the first remote parent ends the lowerdir (its view holds the chain below)', (t) => {
  t.deepEqual(snapshotMounts({ id: 9, kind: 'active', parents: [remote(3), remote(2), remote(1)] }, layout, plain)[0]!.options, [
    'workdir=/r/9/work',
    'upperdir=/r/9/fs',
    'lowerdir=/r/3/fs',
  ]);
  t.deepEqual(snapshotMounts({ id: 9, kind: 'active', parents: [local(8), remote(3), remote(2)] }, layout, plain)[0]!.options.at(-1), 'lowerdir=/r/8/fs:/r/3/fs', 'mixed chain');
  t.deepEqual(snapshotMounts({ id: 9, kind: 'view', parents: [remote(3), remote(2)] }, layout, plain), [{ type: 'bind', source: '/r/3/fs', options: ['ro', 'rbind'] }]);
});

const info = (over: Partial<Info>): Info => ({ name: 'n', parent: '', kind: 'committed', created: 0n, updated: 0n, labels: {}, ...over });

test('mounts: a graduated remote parent is used through its plain layer dirs (issue 12)', (t) => {
  const grad = { id: 3, remote: true, dirs: ['/g/c3', '/g/c2', '/g/c1'] };
  t.deepEqual(snapshotMounts({ id: 9, kind: 'active', parents: [grad, remote(2)] }, layout, plain)[0]!.options.at(-1), 'lowerdir=/g/c3:/g/c2:/g/c1');
  t.deepEqual(snapshotMounts({ id: 9, kind: 'active', parents: [local(8), grad, remote(2)] }, layout, plain)[0]!.options.at(-1), 'lowerdir=/r/8/fs:/g/c3:/g/c2:/g/c1', 'mixed chain');
  t.deepEqual(snapshotMounts({ id: 9, kind: 'view', parents: [grad] }, layout, plain), [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/g/c3:/g/c2:/g/c1'] }], 'a view of several layer dirs is a read-only overlay');
  const single = { id: 3, remote: true, dirs: ['/g/c1'] };
  t.deepEqual(snapshotMounts({ id: 9, kind: 'view', parents: [single] }, layout, plain), [{ type: 'bind', source: '/g/c1', options: ['ro', 'rbind'] }], 'one layer dir: a bind, as containerd does');
});

test('filters: containerd syntax', (t) => {
  const i = info({ name: 'sha256:b', parent: 'sha256:a', labels: { 'containerd.io/snapshot.ref': 'sha256:b', x: 'a,b' } });
  const m = (...f: string[]) => matchesAny(i, parseFilters(f));
  t.true(m());
  t.true(m('labels."containerd.io/snapshot.ref"==sha256:b,parent==sha256:a'));
  t.false(m('labels."containerd.io/snapshot.ref"==sha256:b,parent==sha256:x'));
  t.true(m('kind==active', 'kind==committed'));
  t.true(m('labels.x=="a,b"'), 'quoted value with a comma');
  t.true(m('labels.missing!=v'));
  t.false(m('labels.missing'));
  t.true(m('name~=^sha256'));
  for (const bad of ['labels."x', '==a', 'name~=(', 'name==a;b,']) {
    t.true(hasCode(t.throws(() => parseFilters([bad])), 'SL_ERR_SNAPSHOT_INVALID'), bad);
  }
});

test('labels: remote hints need a target and a view or CRI layer', (t) => {
  t.is(parseRemoteHints({}), null);
  t.is(parseRemoteHints({ 'containerd.io/snapshot.ref': 'sha256:c' }), null);
  t.deepEqual(parseRemoteHints({ 'containerd.io/snapshot.ref': 'sha256:c', 'containerd.io/snapshot/starlight.view': 'v1' }), { chainId: 'sha256:c', view: 'v1' });
  t.deepEqual(
    parseRemoteHints({
      'containerd.io/snapshot.ref': 'sha256:c',
      'containerd.io/snapshot/cri.layer-digest': 'sha256:l',
      'containerd.io/snapshot/cri.image-ref': 'r/i:t',
      'containerd.io/snapshot/cri.image-layers': 'sha256:l,sha256:m',
    }),
    { chainId: 'sha256:c', layerDigest: 'sha256:l', imageRef: 'r/i:t', imageLayers: ['sha256:l', 'sha256:m'] },
  );
});

test('grpc conversions round-trip and errors keep their code', (t) => {
  const i = info({ kind: 'active', created: 1_733_450_042_397_489_757n, updated: 1_733_450_042_397_489_758n, labels: { a: 'b' } });
  t.deepEqual(infoFromWire(infoToWire(i)), i);
  const e = toGrpcError(new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', 'x'));
  t.is(e.code, 9);
  t.is(fromGrpcError(e, 'ctx').code, 'SL_ERR_SNAPSHOT_PRECONDITION');
  const bare = toGrpcError(new Error('boom'));
  t.is(bare.code, 13);
  t.is(fromGrpcError(Object.assign(new Error('x'), { code: 6, details: 'x', metadata: undefined }), 'c').code, 'SL_ERR_SNAPSHOT_EXISTS');
});
