/** Snapshotter cleanup, daemon option resolution and CLI argument errors (no containerd needed). */
import test from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { hasCode } from '../../../src/errors.js';
import { runSnapshotterCommand, runStarlightGrpcAlias } from '../../../src/cli/snapshotter.js';
import { DEFAULT_ROOT, DEFAULT_SOCKET, WorkerDaemon, resolveDaemonOptions } from '../../../src/worker/daemon.js';
import { SnapshotsClient } from '../../../src/worker/snapshotter/grpc-client.js';
import { StarlightSnapshotter } from '../../../src/worker/snapshotter/snapshotter.js';
import { tempDir } from '../../helpers/tmp.js';

test('cleanup removes directories no snapshot owns, through gRPC too', async (t) => {
  const dir = tempDir(t);
  const d = await WorkerDaemon.start({ root: dir, socket: join(dir, 's.sock') });
  t.teardown(() => d.close());
  const client = new SnapshotsClient({ socket: join(dir, 's.sock') });
  t.teardown(() => client.close());
  await client.prepare('keep', '');
  const snaps = join(dir, 'snapshotter', 'snapshots');
  for (const junk of ['99', 'new-abc', 'rm-7']) await mkdir(join(snaps, junk, 'fs'), { recursive: true });
  await mkdir(join(snaps, 'unrelated'));
  await client.cleanup();
  t.deepEqual((await readdir(snaps)).sort(), ['1', 'unrelated']);
  t.is((await client.stat('keep')).kind, 'active');
});

test('daemon options: defaults and validation', (t) => {
  const o = resolveDaemonOptions({});
  t.is(o.socket, DEFAULT_SOCKET);
  t.is(o.root, DEFAULT_ROOT);
  t.is(o.snapshotterRoot, join(DEFAULT_ROOT, 'snapshotter'));
  t.is(resolveDaemonOptions({ proxy: '10.0.0.1:8090' }).proxy?.href, 'http://10.0.0.1:8090/');
  t.true(hasCode(t.throws(() => resolveDaemonOptions({ root: 'rel' })), 'SL_ERR_CONFIG'));
  t.true(hasCode(t.throws(() => resolveDaemonOptions({ socket: '/' + 'x'.repeat(120) })), 'SL_ERR_CONFIG'));
  t.true(hasCode(t.throws(() => resolveDaemonOptions({ proxy: 'http://[bad' })), 'SL_ERR_CONFIG'));
});

test('snapshotter options: root must be absolute; resolver needs views', async (t) => {
  t.true(hasCode(await t.throwsAsync(StarlightSnapshotter.open({ root: 'x' })), 'SL_ERR_CONFIG'));
  const resolver = { resolve: async () => null, viewRequest: async () => Promise.reject(new Error('n/a')) };
  t.true(hasCode(await t.throwsAsync(StarlightSnapshotter.open({ root: '/tmp/x', resolver })), 'SL_ERR_CONFIG'));
});

test('CLI: bad arguments are invalid-argument errors and start nothing', async (t) => {
  const dir = tempDir(t);
  t.true(hasCode(await t.throwsAsync(runSnapshotterCommand(['--bogus'])), 'SL_ERR_INVALID_ARGUMENT'));
  t.true(hasCode(await t.throwsAsync(runSnapshotterCommand(['--root', dir, '--log-level', 'loud'])), 'SL_ERR_INVALID_ARGUMENT'));
  // Retired with early items (session 13): an unknown option now, and the usage no longer names it.
  const retired = await t.throwsAsync(runSnapshotterCommand(['--root', dir, '--early-items', 'on']));
  t.true(hasCode(retired, 'SL_ERR_INVALID_ARGUMENT'));
  t.regex(retired!.message, /usage: starlight snapshotter/);
  t.notRegex(retired!.message.slice(retired!.message.indexOf('usage:')), /early/i);
  t.true(hasCode(await t.throwsAsync(runSnapshotterCommand(['--root', 'relative'])), 'SL_ERR_CONFIG'));
  t.true(hasCode(await t.throwsAsync(runStarlightGrpcAlias(['serve'])), 'SL_ERR_INVALID_ARGUMENT'));
  t.false(existsSync(join(dir, 'snapshotter')), 'nothing created');
});
