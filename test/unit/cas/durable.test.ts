/**
 * Durability of the CAS (issue 14): content is known complete only after sync() (one syncfs + log
 * records); open() trusts logged blobs whose size, inode and ctime still match, re-verifies every
 * other blob and drops what no longer hashes to its name (truncated, zeroed), so it is fetched again.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ItemPool } from '../../../src/worker/stream/item-pool.js';
import { countingStore, putContent } from '../../helpers/cas.js';
import { tempDir } from '../../helpers/tmp.js';

const digestOf = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');


test('one sync makes many commits durable with one syncfs; a reopen trusts them without hashing', async (t) => {
  const dir = tempDir(t);
  const { store, syncs } = countingStore(dir);
  await store.open();
  const pool = new ItemPool(store, { threads: 2 });
  t.teardown(() => pool.close());
  const blobs = Array.from({ length: 40 }, (_, i) => randomBytes(100 + i * 37));
  await Promise.all(blobs.map((b) => pool.put({ digest: digestOf(b), size: b.length, encoding: 'identity', chunks: [b] })));
  const streamed = await putContent(store, randomBytes(3000));
  await Promise.all([store.sync(), store.sync(), store.sync()]);
  t.true(syncs() >= 1 && syncs() <= 2, `concurrent syncs share runs (got ${syncs()})`);
  const before = syncs();
  await store.sync();
  t.is(syncs(), before, 'nothing new: no syncfs');
  const again = countingStore(dir);
  await again.store.open();
  t.deepEqual(again.store.recovery, { trusted: 41, verified: 0, dropped: [], migrated: 0 });
  t.is(again.syncs(), 0);
  t.truthy(again.store.path(streamed));
  for (const b of blobs) t.true(readFileSync(again.store.path(digestOf(b))!).equals(b));
});

test('blobs never synced are re-verified at open and then logged; bad ones are dropped', async (t) => {
  const dir = tempDir(t);
  const { store } = countingStore(dir);
  await store.open();
  const good = await putContent(store, Buffer.from('kept: its bytes still hash to its name'));
  const cut = await putContent(store, randomBytes(5000));
  const zeroed = await putContent(store, randomBytes(5000));
  // What a power cut can leave of data that was never flushed: a short file, a run of zeros.
  const cutPath = store.path(cut)!;
  chmodSync(cutPath, 0o644);
  truncateSync(cutPath, 100);
  const zPath = store.path(zeroed)!;
  chmodSync(zPath, 0o644);
  writeFileSync(zPath, Buffer.alloc(5000));
  const again = countingStore(dir);
  await again.store.open();
  t.is(again.store.recovery.trusted, 0);
  t.is(again.store.recovery.verified, 1);
  t.deepEqual(again.store.recovery.dropped.sort(), [cut, zeroed].sort());
  t.is(again.syncs(), 1, 're-verified blobs are made durable at open');
  t.truthy(again.store.path(good));
  t.is(again.store.path(cut), null);
  t.is(again.store.path(zeroed), null);
  t.false(existsSync(cutPath), 'a bad blob is deleted (fetched again, never served)');
  const third = countingStore(dir);
  await third.store.open();
  t.deepEqual(third.store.recovery, { trusted: 1, verified: 0, dropped: [], migrated: 0 });
});

test('a logged blob changed afterwards (truncated, zeroed at the same size) is caught by its stamp', async (t) => {
  const dir = tempDir(t);
  const { store } = countingStore(dir);
  await store.open();
  const a = await putContent(store, randomBytes(8000));
  const b = await putContent(store, randomBytes(8000));
  const c = await putContent(store, randomBytes(8000));
  await store.sync();
  chmodSync(store.path(a)!, 0o644);
  truncateSync(store.path(a)!, 0);
  chmodSync(store.path(b)!, 0o644);
  writeFileSync(store.path(b)!, Buffer.alloc(8000));
  const again = countingStore(dir);
  await again.store.open();
  t.deepEqual(again.store.recovery.dropped.sort(), [a, b].sort());
  t.is(again.store.recovery.trusted, 1);
  t.truthy(again.store.path(c));
});

test('deleted then fetched again: the old record does not vouch for the new blob', async (t) => {
  const dir = tempDir(t);
  const { store } = countingStore(dir);
  await store.open();
  const data = randomBytes(4096);
  const d = await putContent(store, data);
  await store.sync();
  await store.delete(d);
  await putContent(store, data);
  // Not synced: a crash now must not trust it from the first record (new inode/ctime).
  const again = countingStore(dir);
  await again.store.open();
  t.is(again.store.recovery.trusted, 0);
  t.is(again.store.recovery.verified, 1);
});

test('a torn last record and foreign lines in the log are ignored', async (t) => {
  const dir = tempDir(t);
  const { store } = countingStore(dir);
  await store.open();
  const d = await putContent(store, randomBytes(2048));
  await store.sync();
  appendFileSync(join(dir, 'durable.log'), `garbage\n${'ab'.repeat(32)} 12 3`);
  const again = countingStore(dir);
  await again.store.open();
  t.deepEqual(again.store.recovery, { trusted: 1, verified: 0, dropped: [], migrated: 0 });
  t.truthy(again.store.path(d));
});

test('a failed flush rejects sync and the same blobs are retried by the next one', async (t) => {
  const dir = tempDir(t);
  let fail = true;
  let calls = 0;
  const store = await new LocalContentStore(dir, {
    syncfs: async () => {
      calls++;
      if (fail) throw new Error('EIO');
    },
  }).open();
  const d = await putContent(store, randomBytes(1000));
  await t.throwsAsync(store.sync(), { message: 'EIO' });
  t.truthy(store.path(d), 'still readable');
  fail = false;
  await store.sync();
  t.is(calls, 2);
  const again = countingStore(dir);
  await again.store.open();
  t.deepEqual(again.store.recovery, { trusted: 1, verified: 0, dropped: [], migrated: 0 });
});
