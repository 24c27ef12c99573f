/**
 * Issue 14 durability, start-up side: after a run that did not stop cleanly (kill -9, power cut), a
 * blob truncated or zeroed on disk is found and dropped (so it is fetched again), never served; after
 * a clean stop nothing is re-hashed.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nullLogger } from '../../../src/log.js';
import { checkAfterUncleanStop, markCleanStop } from '../../../src/worker/cas/unclean-stop.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { tempDir } from '../../helpers/tmp.js';

const digestOf = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function put(store: LocalContentStore, data: Buffer): Promise<string> {
  const d = digestOf(data);
  const w = await store.writer(d);
  await w.write(data);
  await w.commit(data.length, d);
  return d;
}

test('after an unclean stop a truncated and a zeroed blob are dropped; good ones stay', async (t) => {
  const root = tempDir(t);
  let store = await new LocalContentStore(root).open();
  t.false((await checkAfterUncleanStop(store, nullLogger)).unclean, 'a first start is clean');
  const good = await put(store, randomBytes(100_000));
  const cut = await put(store, randomBytes(100_000));
  const zeroed = await put(store, randomBytes(4096));
  // Power cut: no clean stop; one blob lost its tail, one its bytes (same size).
  const cutPath = store.path(cut)!;
  chmodSync(cutPath, 0o644);
  truncateSync(cutPath, 4096);
  const zPath = store.path(zeroed)!;
  chmodSync(zPath, 0o644);
  writeFileSync(zPath, Buffer.alloc(4096));

  store = await new LocalContentStore(root).open();
  const r = await checkAfterUncleanStop(store, nullLogger);
  t.true(r.unclean);
  t.is(r.checked, 3);
  t.deepEqual(r.dropped.sort(), [cut, zeroed].sort());
  t.true(store.has(good));
  t.false(store.has(cut), 'the truncated blob is no longer present: it will be fetched again');
  t.false(store.has(zeroed));
  t.false(existsSync(cutPath));

  await markCleanStop(store, nullLogger);
  store = await new LocalContentStore(root).open();
  const again = await checkAfterUncleanStop(store, nullLogger);
  t.deepEqual(again, { unclean: false, checked: 0, dropped: [] }, 'after a clean stop nothing is re-hashed');
  t.true(existsSync(join(root, '.running')), 'this run is marked');
});
