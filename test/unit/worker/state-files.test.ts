/**
 * Replacing the worker's state files (src/worker/state-files.ts): concurrent replacements of one file
 * each land whole, and the temp files a crash leaves before its rename are removed when the stores
 * that write them open, without touching anything else in their directories.
 */
import test from 'ava';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ImageRecords, type ImageRecord } from '../../../src/worker/images/records.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { removeLeftoverTemps, replaceFile, replaceFileDurably } from '../../../src/worker/state-files.js';
import { blockPool } from '../../helpers/block-pool.js';
import { tempDir } from '../../helpers/tmp.js';

const HEX = 'ab'.repeat(32);

test('concurrent replacements of one file each land whole and leave no temp file', async (t) => {
  const dir = tempDir(t, 'sl-state-');
  const path = join(dir, 'state.json');
  const bodies = Array.from({ length: 20 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(1000 * (i + 1)) }));
  await Promise.all(bodies.map((b, i) => (i % 2 === 0 ? replaceFile(path, b) : replaceFileDurably(path, b))));
  t.true(bodies.includes(readFileSync(path, 'utf8')), 'the file is one of the bodies, whole');
  t.deepEqual(await readdir(dir), ['state.json']);
});

test('removeLeftoverTemps removes only temp files of replaceFile, current and older names', async (t) => {
  const dir = tempDir(t, 'sl-state-');
  const keep = [`${HEX}.json`, HEX, 'durable.log', '.tmp-ingest', 'notes.tmp-abc', 'sub'];
  const leftovers = [`${HEX}.json.tmp-123`, `${HEX}.tmp-4567-k2j3h4`, 'durable.log.tmp-99-0'];
  for (const f of [...keep.filter((f) => f !== 'sub'), ...leftovers]) await writeFile(join(dir, f), 'x');
  await mkdir(join(dir, 'sub'));
  t.is(await removeLeftoverTemps(dir), leftovers.length);
  t.deepEqual((await readdir(dir)).sort(), [...keep].sort());
});

test('image records, layer store and content store remove their leftover temp files at open', async (t) => {
  const root = tempDir(t, 'sl-state-');
  const layers = await new LayerStore(join(root, 'layers')).open();
  const records = await new ImageRecords(join(root, 'images'), layers).open();
  const rec: ImageRecord = { ref: 'localhost:5000/app:v1', name: 'localhost:5000/app:v1', manifestDigest: `sha256:${HEX}`, pulledAt: 1, complete: false };
  await records.put(rec);
  const store = await new LocalContentStore(join(root, 'content')).open();
  await store.sync();
  // What a crash between a write and its rename leaves.
  const temps = [
    join(root, 'images', `${HEX}.json.tmp-41-abc`),
    join(root, 'images', `${HEX}.json.tmp-41`),
    join(root, 'layers', 'tocs', `${HEX}.tmp-41-abc`),
    join(root, 'layers', 'complete', `${HEX}.tmp-41-abc`),
    join(root, 'layers', 'headers', `${HEX}.tmp-41-abc`),
    join(root, 'content', 'durable.log.tmp-41'),
  ];
  for (const f of temps) await writeFile(f, 'partial');
  const layers2 = await new LayerStore(join(root, 'layers')).open();
  const records2 = await new ImageRecords(join(root, 'images'), layers2).open();
  await new LocalContentStore(join(root, 'content')).open();
  t.deepEqual(temps.filter((f) => existsSync(f)), []);
  const all = await records2.all();
  t.is(all.length, 1);
  t.is(all[0]!.manifestDigest, rec.manifestDigest);
});

// Serial: the blocked pool would stall the file's other tests meanwhile.
test.serial('replaceFile needs no thread-pool thread: a pull\'s header and record land while the pool is busy', async (t) => {
  const dir = tempDir(t, 'sl-state-');
  const release = await blockPool(dir);
  t.teardown(release);
  const probe = stat(dir).then(() => 'done');
  t.is(await Promise.race([probe, sleep(200, 'blocked')]), 'blocked', 'the thread pool is blocked');
  const path = join(dir, 'record.json');
  t.is(await Promise.race([replaceFile(path, '{"a":1}').then(() => 'written'), sleep(2000, 'hung')]), 'written');
  t.is(readFileSync(path, 'utf8'), '{"a":1}');
  // A failed replace leaves neither the file nor a temp file (a directory is in the way).
  mkdirSync(join(dir, 'taken'));
  await t.throwsAsync(replaceFile(join(dir, 'taken'), 'x'));
  await release();
  t.is(await probe, 'done');
  t.deepEqual((await readdir(dir)).filter((n) => !n.startsWith('fifo-')).sort(), ['record.json', 'taken']);
});
