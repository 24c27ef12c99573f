/**
 * The worker's layer store and image records never claim what a power cut could have lost
 * (layer-store.ts "the rule", docs/design-notes.md "Durable state"): a layer is marked complete only
 * after its TOC file was written and a syncfs started after that write finished; a TOC, header or
 * record that comes back empty, truncated or foreign is treated as absent (dropped, logged), and a
 * restart drops the image records that need one instead of failing.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger, type Fields } from '../../../src/log.js';
import { encodeToc } from '../../../src/layers/toc-codec.js';
import type { LayerToc } from '../../../src/layers/toc.js';
import { sha256Digest } from '../../../src/oci/digest.js';
import { LocalContentStore, digestHex } from '../../../src/worker/cas/store.js';
import { batchedSyncfs } from '../../../src/worker/cas/syncfs.js';
import { ImageRecords } from '../../../src/worker/images/records.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { Puller } from '../../../src/worker/pull/puller.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { checkedHeader, deltaServer, identityItems, layerOfFiles, madeUpLayer } from '../../helpers/delta-header.js';
import { openImageService } from '../../helpers/image-service.js';
import { tempDir } from '../../helpers/tmp.js';

const REF = 'localhost:5000/app:v1';

/** A logger keeping every record. */
function memoryLog(): { log: ReturnType<typeof createLogger>; lines: Fields[] } {
  const lines: Fields[] = [];
  return { log: createLogger({ level: 'debug', sink: (l) => lines.push(JSON.parse(l) as Fields) }), lines };
}

test('a TOC file left empty, truncated, zeroed or describing another layer is absent: its file and complete marker go, with a warning', async (t) => {
  const root = tempDir(t, 'sl-layers-');
  const [a, b] = [madeUpLayer('a', 50), madeUpLayer('b', 50)];
  const damage: [string, (path: string) => Promise<void>][] = [
    ['empty', (p) => truncate(p, 0)],
    ['truncated', (p) => truncate(p, Math.floor(encodeToc(a).length / 2))],
    ['zeroed', (p) => writeFile(p, Buffer.alloc(encodeToc(a).length))],
    ['another layer', (p) => writeFile(p, encodeToc(b))],
  ];
  for (const [what, harm] of damage) {
    const before = await new LayerStore(root).open();
    await before.addToc(a.diffID, encodeToc(a)).written;
    await before.markComplete([a.diffID]);
    const path = join(root, 'tocs', digestHex(a.diffID));
    await harm(path);

    const { log, lines } = memoryLog();
    const after = await new LayerStore(root, { log }).open(); // a restart: nothing cached
    t.is(await after.toc(a.diffID), undefined, what);
    t.deepEqual(await after.completeLayers(), [], `${what}: no longer announced as have`);
    t.false(existsSync(path), `${what}: the file is gone, so the next pull writes it again`);
    t.is(await after.toc(a.diffID), undefined, `${what}: still absent, no error`);
    t.deepEqual(lines.filter((l) => l.msg === 'layer-toc-unreadable').map((l) => l.diffID), [a.diffID], `${what}: one warning naming the layer`);
  }
  // A readable TOC is unaffected.
  const store = await new LayerStore(root).open();
  await store.addToc(b.diffID, encodeToc(b)).written;
  t.deepEqual((await new LayerStore(root).open().then((s) => s.toc(b.diffID)))?.entries.length, b.entries.length);
});

test('batchedSyncfs: calls of one turn share a run; a call during a run gets a run that starts after it', async (t) => {
  const events: string[] = [];
  let release: (() => void) | undefined;
  const sync = batchedSyncfs(async (dir) => {
    events.push(`start ${dir}`);
    await new Promise<void>((r) => (release = r));
    events.push('end');
  });
  const first = [sync('/x'), sync('/x')];
  while (release === undefined) await new Promise((r) => setImmediate(r));
  const during = sync('/x');
  const r1 = release;
  r1();
  await Promise.all(first);
  t.deepEqual(events, ['start /x', 'end'], 'two calls of one turn: one run');
  while (release === r1) await new Promise((r) => setImmediate(r));
  t.deepEqual(events, ['start /x', 'end', 'start /x'], 'the call made during the run waits for a second run');
  release!();
  await during;
  t.is(events.length, 4);
});

/**
 * Pulls `tocs` (+ `contents` as items of the top layer) with one batched syncfs shared by the
 * content store and the layer store, as lazy-pull.ts wires them; records, at each syncfs, whether
 * the TOC files were fully written when it started and whether a marker existed when it ended.
 */
async function pullRecordingSyncs(t: ExecutionContext, tocs: LayerToc[], contents: Buffer[] = []) {
  const h = { ...checkedHeader(tocs, REF), items: identityItems(contents) };
  const client = new ProxyClient({ url: await deltaServer(t, h, contents) });
  t.teardown(() => client.close());
  const layerRoot = tempDir(t, 'sl-layers-');
  const tocFiles = tocs.map((toc) => join(layerRoot, 'tocs', digestHex(toc.diffID)));
  const markers = tocs.map((toc) => join(layerRoot, 'complete', digestHex(toc.diffID)));
  const syncs: { tocsWritten: boolean; markerBeforeEnd: boolean }[] = [];
  const syncfs = batchedSyncfs(async () => {
    const tocsWritten = tocFiles.every((f, i) => existsSync(f) && readFileSync(f).equals(encodeToc(tocs[i]!)));
    await new Promise((r) => setTimeout(r, 5)); // a flush takes time: a marker written meanwhile would show
    syncs.push({ tocsWritten, markerBeforeEnd: markers.some((m) => existsSync(m)) });
  });
  const store = await new LocalContentStore(tempDir(t), { syncfs }).open();
  const layers = await new LayerStore(layerRoot, { syncfs }).open();
  const puller = new Puller({ client, tracker: new ContentTracker(store), layers, lowerTreesDelayMs: -1 });
  const p = await puller.pull(REF);
  t.teardown(() => p.receiver.close());
  await p.durable;
  return { syncs, layers, store };
}

test('a pull marks its layers complete only after a syncfs that started once their TOC files were written (also with no content to sync)', async (t) => {
  const tocs = [madeUpLayer('a', 200), madeUpLayer('b', 200)];
  const { syncs, layers } = await pullRecordingSyncs(t, tocs);
  t.deepEqual(await layers.completeLayers(), tocs.map((toc) => toc.diffID).sort());
  t.true(
    syncs.some((s) => s.tocsWritten && !s.markerBeforeEnd),
    `a syncfs started after the TOC writes and ended before the markers: ${JSON.stringify(syncs)}`,
  );
  t.is(syncs.length, 1, 'one syncfs for the pull');
});

test('a pull that streams content: its content and TOCs are made durable by one shared syncfs, before the markers', async (t) => {
  const contents = [Buffer.from('first file\n'), Buffer.from('second file, a little longer\n')];
  const top = layerOfFiles('top', contents);
  const tocs = [madeUpLayer('base', 50), top];
  const { syncs, layers, store } = await pullRecordingSyncs(t, tocs, contents);
  t.deepEqual(await layers.completeLayers(), tocs.map((toc) => toc.diffID).sort());
  t.true(contents.every((c) => store.has(sha256Digest(c))));
  t.deepEqual(syncs, [{ tocsWritten: true, markerBeforeEnd: false }], 'one syncfs, after the TOC writes, before the markers');
});

test('restart: image records whose header or TOCs are unreadable are dropped with a log line; the others are restored', async (t) => {
  const root = tempDir(t, 'sl-restart-');
  const layers = await new LayerStore(join(root, 'layers')).open();
  const records = await new ImageRecords(join(root, 'images'), layers).open();
  const images = {
    good: checkedHeader([madeUpLayer('base', 20), madeUpLayer('good', 20)], 'r/good:1'),
    badHeader: checkedHeader([madeUpLayer('base', 20), madeUpLayer('h', 20)], 'r/badheader:1'),
    badToc: checkedHeader([madeUpLayer('base', 20), madeUpLayer('t', 20)], 'r/badtoc:1'),
    badRecord: checkedHeader([madeUpLayer('base', 20), madeUpLayer('r', 20)], 'r/badrecord:1'),
  };
  for (const h of Object.values(images)) {
    await Promise.all(h.layers.map((l) => layers.addToc(l.diffID, l.toc).written));
    await records.putHeader(h);
    await records.put({ ref: h.ref, name: h.ref, manifestDigest: h.manifestDigest, complete: true, pulledAt: 1 });
  }
  await layers.markComplete(images.badToc.diffIDs);
  await truncate(join(root, 'layers', 'headers', digestHex(images.badHeader.manifestDigest)), 40);
  await truncate(join(root, 'layers', 'tocs', digestHex(images.badToc.diffIDs[1]!)), 0);
  await writeFile(join(root, 'images', `${digestHex(images.badRecord.manifestDigest)}.json`), '{"ref":"r/bad');

  // The daemon's start, over the same root.
  const { log, lines } = memoryLog();
  const layers2 = await new LayerStore(join(root, 'layers'), { log }).open();
  const records2 = await new ImageRecords(join(root, 'images'), layers2, { log }).open();
  const tracker = new ContentTracker(await new LocalContentStore(tempDir(t)).open());
  const service = await openImageService(t, { root, layers: layers2, records: records2, tracker, log });

  t.deepEqual(
    service.status().map((s) => s.ref),
    ['r/good:1'],
  );
  const dropped = lines.filter((l) => l.msg === 'image-record-dropped');
  t.deepEqual(dropped.map((l) => [l.ref, l.reason]).sort(), [
    ['r/badheader:1', 'header unreadable'],
    ['r/badtoc:1', 'TOCs missing or unreadable'],
  ]);
  t.deepEqual(dropped.find((l) => l.ref === 'r/badtoc:1')?.missingTocs, [images.badToc.diffIDs[1]]);
  t.deepEqual(lines.filter((l) => l.msg === 'image-record-unreadable').map((l) => l.manifest), [images.badRecord.manifestDigest]);
  t.deepEqual(await readdir(join(root, 'images')), [`${digestHex(images.good.manifestDigest)}.json`], 'only the readable record is left');
  t.deepEqual(await readdir(join(root, 'layers', 'headers')), [digestHex(images.good.manifestDigest)], "the dropped records' headers went with them");
  t.deepEqual(await layers2.completeLayers(), [images.badToc.diffIDs[0]!], 'the unreadable TOC is no longer announced');
});

test('records.header() refuses a stored header that does not decode or hash to its manifest (typed), and reads a good one back', async (t) => {
  const root = tempDir(t, 'sl-rec-');
  const layers = await new LayerStore(join(root, 'layers')).open();
  const records = await new ImageRecords(join(root, 'images'), layers).open();
  const h = checkedHeader([madeUpLayer('x', 3)]);
  await records.putHeader(h);
  t.deepEqual((await records.header(h.manifestDigest))?.diffIDs, h.diffIDs);
  const path = join(root, 'layers', 'headers', digestHex(h.manifestDigest));
  for (const bytes of [Buffer.alloc(0), Buffer.alloc(64), readFileSync(path).subarray(0, 30)]) {
    await writeFile(path, bytes);
    await t.throwsAsync(records.header(h.manifestDigest), { code: 'SL_ERR_WORKER_STATE_CORRUPT' });
  }
  // Another image's (valid) header under this name: its manifest does not hash to the name.
  const other = checkedHeader([madeUpLayer('y', 3)]);
  await records.putHeader(other);
  await writeFile(path, readFileSync(join(root, 'layers', 'headers', digestHex(other.manifestDigest))));
  await t.throwsAsync(records.header(h.manifestDigest), { code: 'SL_ERR_WORKER_STATE_CORRUPT' });
});
