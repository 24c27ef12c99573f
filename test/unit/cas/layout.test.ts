/**
 * The CAS's sharded layout (issue 18): blobs live in `sha256/<2 hex>/<hex>`; a root written by an
 * older version (flat `sha256/<hex>`, a daemon upgraded in place) is migrated at open(): blobs the
 * durable log vouched for stay trusted (re-recorded with the stamp their rename gave them, not
 * re-hashed), unlogged ones are verified, bad ones dropped; a migration cut short by a crash goes on.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { casBlobFilesSync, casEntriesSync, countingStore, putContent } from '../../helpers/cas.js';
import { tempDir } from '../../helpers/tmp.js';

const hexOf = (b: Buffer): string => createHash('sha256').update(b).digest('hex');


/** Writes `data` as an older version did: flat `sha256/<hex>`, 0444, optionally with its log record. */
function oldBlob(dir: string, data: Buffer, logged: boolean, name = hexOf(data)): string {
  const p = join(dir, 'sha256', name);
  writeFileSync(p, data, { mode: 0o444 });
  chmodSync(p, 0o444);
  if (logged) {
    const st = statSync(p, { bigint: true });
    appendFileSync(join(dir, 'durable.log'), `${name} ${st.size} ${st.ino} ${st.ctimeNs}\n`);
  }
  return name;
}

test('open() migrates a flat root into shards, keeping logged blobs trusted without re-hashing', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'sha256'), { recursive: true });
  const logged = Array.from({ length: 30 }, (_, i) => randomBytes(50 + i * 13));
  for (const b of logged) oldBlob(dir, b, true);
  const unlogged = randomBytes(777);
  oldBlob(dir, unlogged, false);
  const bad = oldBlob(dir, randomBytes(300), false, hexOf(Buffer.from('something else')));
  writeFileSync(join(dir, 'sha256', '.tmp-leftover'), 'partial');

  const { store, syncs } = countingStore(dir);
  await store.open();
  t.deepEqual(store.recovery, { trusted: 30, verified: 1, dropped: ['sha256:' + bad], migrated: 31 });
  t.is(syncs(), 1, 'the migrated blobs are recorded with one sync');
  t.deepEqual(readdirSync(join(dir, 'sha256')).filter((n) => n.length !== 2), [], 'nothing left in the flat directory');
  for (const b of [...logged, unlogged]) {
    const p = store.path('sha256:' + hexOf(b))!;
    t.is(p, join(dir, 'sha256', hexOf(b).slice(0, 2), hexOf(b)));
    t.true(readFileSync(p).equals(b));
  }
  t.is(store.path('sha256:' + bad), null);

  const again = countingStore(dir);
  await again.store.open();
  t.deepEqual(again.store.recovery, { trusted: 31, verified: 0, dropped: [], migrated: 0 }, 'the new stamps were logged: nothing is hashed again');
  t.is(again.syncs(), 0);
});

test('a migration cut short by a crash goes on at the next open; a digest in both places keeps its shard copy', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'sha256'), { recursive: true });
  const blobs = Array.from({ length: 10 }, (_, i) => randomBytes(100 + i));
  for (const b of blobs) oldBlob(dir, b, true);
  // The crash: half of the blobs were renamed into their shards (ctime moved, not yet re-recorded).
  for (const b of blobs.slice(0, 5)) {
    const h = hexOf(b);
    mkdirSync(join(dir, 'sha256', h.slice(0, 2)), { recursive: true });
    renameSync(join(dir, 'sha256', h), join(dir, 'sha256', h.slice(0, 2), h));
  }
  // A downgrade wrote one of the moved ones flat again.
  oldBlob(dir, blobs[0]!, false);

  const { store } = countingStore(dir);
  await store.open();
  t.is(store.recovery.dropped.length, 0);
  t.is(store.recovery.migrated, 5);
  t.is(store.recovery.trusted + store.recovery.verified, 10);
  t.deepEqual(casBlobFilesSync(dir), blobs.map((b) => join(hexOf(b).slice(0, 2), hexOf(b))).sort());
  for (const b of blobs) t.true(readFileSync(store.path('sha256:' + hexOf(b))!).equals(b));
  const again = countingStore(dir);
  await again.store.open();
  t.deepEqual(again.store.recovery, { trusted: 10, verified: 0, dropped: [], migrated: 0 });
});

test('new content goes into its shard; delete removes it from there', async (t) => {
  const dir = tempDir(t);
  const { store } = countingStore(dir);
  await store.open();
  const data = randomBytes(1234);
  const d = await putContent(store, data);
  t.deepEqual(casEntriesSync(dir), [join(dir, 'sha256', hexOf(data).slice(0, 2), hexOf(data))]);
  await store.delete(d);
  t.deepEqual(casEntriesSync(dir), []);
  t.is(store.path(d), null);
});

test('a new store marks its blob directory top-dir (chattr +T) where the file system has the flag', async (t) => {
  const dir = tempDir(t);
  const { store } = countingStore(dir);
  await store.open();
  const blobDir = join(store.root, 'sha256');
  // lsattr prints the flags of ext2/3/4 directories; elsewhere (tmpfs, overlay) it fails and the
  // store keeps the plain layout (best effort, cas/store.ts markTopDir).
  const flags = await new Promise<string | undefined>((resolve) =>
    execFile('lsattr', ['-d', blobDir], (err, out) => resolve(err ? undefined : out.split(' ')[0])),
  );
  if (flags === undefined) {
    t.log(`lsattr cannot read ${blobDir}: not an ext file system here, nothing to check`);
    t.pass();
    return;
  }
  t.true(flags.includes('T'), `flags of ${blobDir}: ${flags}`);
  t.is(readdirSync(blobDir).length, 256, 'the shards exist');
});
