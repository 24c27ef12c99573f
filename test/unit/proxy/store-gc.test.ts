/**
 * Issue 14, proxy growth: collectGarbage drops what no image references (superseded manifest, its
 * layer once old enough, contents only that layer held, traces of repositories without images) and
 * re-points a content also held by a kept layer; a proxy started on that store serves on; it also runs
 * periodically (driven here by an injected timer and clock, no sleeps).
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { encodeToc } from '../../../src/layers/toc-codec.js';
import { TOC_VERSION, type TocEntry } from '../../../src/layers/toc.js';
import { createLogger, nullLogger } from '../../../src/log.js';
import { type GcResult, type GcTimers, collectGarbage, startPeriodicGc } from '../../../src/proxy/gc.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (s: string): string => 'sha256:' + createHash('sha256').update(s).digest('hex');
const file = (path: string, digest: string): TocEntry => ({ path, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 0, digest });

function layer(store: MetadataStore, name: string, files: TocEntry[]): string {
  const diffID = dg(name);
  const toc = Buffer.from(encodeToc({ version: TOC_VERSION, diffID, uncompressedSize: 1, entries: files }));
  void store.putLayerIndex({ diffID, layerDigest: dg(`blob-${name}`), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', compressedSize: 1, uncompressedSize: 1, repository: 'r/app', toc }, []);
  return diffID;
}

function image(store: MetadataStore, ref: string, name: string, diffIDs: string[], repository = 'r/app'): string {
  const manifestDigest = dg(name);
  store.putImage(ref, 'linux/amd64', { manifestDigest, mediaType: 'application/vnd.oci.image.manifest.v1+json', manifest: Buffer.from(name), config: Buffer.from('{}'), repository, diffIDs });
  return manifestDigest;
}

test('unreferenced manifests, old layers, their only contents and orphan traces are collected; shared contents re-pointed', (t) => {
  const store = new MetadataStore(join(tempDir(t), STORE_FILE));
  t.teardown(() => store.close());
  const [c1, c2, c3] = [dg('only-in-L1'), dg('in-L1-and-L3'), dg('in-L2')];
  const L1 = layer(store, 'L1', [file('a', c1), file('b', c2)]);
  const L2 = layer(store, 'L2', [file('c', c3)]);
  const L3 = layer(store, 'L3', [file('b2', c2)]);
  for (const [d, src, cached] of [[c1, L1, true], [c2, L1, false], [c3, L2, true]] as const) {
    store.putContent({ digest: d, size: 1, encodedSize: 1, encoding: 'identity', sourceDiffID: src, cached, lastAccess: 0 });
  }
  const m1 = image(store, 'r/app:v1', 'M1', [L1, L2]);
  image(store, 'r/app:v1', 'M2', [L2, L3]); // the tag moved: M1 is referenced by nothing
  const meta = { ref: 'x', platform: 'linux/amd64', receivedAt: 0 };
  store.addTraces({ ...meta, manifestDigest: m1, repository: 'r/app' }, [{ startedAt: 0, windowMs: 1, entries: [{ path: 'a', ms: 0 }] }], [L1], 64);
  store.addTraces({ ...meta, manifestDigest: dg('ghost'), repository: 'evil/spam' }, [{ startedAt: 0, windowMs: 1, entries: [{ path: 'a', ms: 0 }] }], [], 64);

  // Young layers are kept (a worker may still read the superseded image).
  const young = collectGarbage(store, Date.now(), 3600_000, nullLogger);
  t.is(young.manifests, 1);
  t.is(young.layers, 0);
  t.true(store.hasLayer(L1));
  t.is(young.traces, 1, "the repository without images loses its traces; r/app's stay (v1 → v2 inheritance)");

  const r = collectGarbage(store, Date.now() + 1000, 0, nullLogger);
  t.deepEqual({ manifests: r.manifests, layers: r.layers, contents: r.contents }, { manifests: 0, layers: 1, contents: 1 });
  t.deepEqual(r.removedCached, [c1]);
  t.false(store.hasLayer(L1));
  t.true(store.hasLayer(L2) && store.hasLayer(L3));
  t.is(store.content(c1), undefined);
  t.is(store.content(c2)?.sourceDiffID, L3, 're-pointed to the kept layer holding it');
  t.is(store.content(c3)?.sourceDiffID, L2);
  t.is(store.manifest(m1), undefined);
  t.is(store.traces([m1], undefined, 10).length, 1);
  // Nothing left to collect.
  const again = collectGarbage(store, Date.now() + 2000, 0, nullLogger);
  t.is(again.manifests + again.layers + again.contents + again.traces, 0);
});

test('periodic GC: each tick of the interval collects with the injected clock; stop() clears the timer; a failing run is logged, not thrown', (t) => {
  const store = new MetadataStore(join(tempDir(t), STORE_FILE));
  t.teardown(() => store.close());
  const HOUR = 3600_000;
  const DAY = 24 * HOUR;
  let now = Date.now(); // layers record their indexing time from the wall clock; the GC then reads only `now`
  const ticks: { fn: () => void; ms: number }[] = [];
  let cleared: unknown;
  const timers: GcTimers = {
    setInterval: (fn, ms) => (ticks.push({ fn, ms }), 'handle'),
    clearInterval: (h) => (cleared = h),
  };
  const runs: GcResult[] = [];
  const warnings: string[] = [];
  const logger = createLogger({ level: 'warn', sink: (line) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
  const gc = startPeriodicGc({ store, intervalMs: HOUR, minAgeMs: DAY, logger, now: () => now, timers, onCollected: (r) => void runs.push(r) });
  t.is(ticks.length, 1);
  t.is(ticks[0]!.ms, HOUR);

  const c1 = dg('only-in-L1');
  const L1 = layer(store, 'L1', [file('a', c1)]);
  const L2 = layer(store, 'L2', [file('b', dg('in-L2'))]);
  store.putContent({ digest: c1, size: 1, encodedSize: 1, encoding: 'identity', sourceDiffID: L1, cached: true, lastAccess: 0 });
  image(store, 'r/app:v1', 'M1', [L1]);
  image(store, 'r/app:v1', 'M2', [L2]); // the tag moved: M1 and, once old enough, L1 go

  ticks[0]!.fn();
  t.is(runs.length, 1);
  t.is(runs[0]!.manifests, 1, 'the superseded manifest goes at the first tick');
  t.deepEqual(runs[0]!.removedLayers, [], 'its layer is younger than minAgeMs (by the injected clock)');
  t.true(store.hasLayer(L1));

  now += 2 * DAY; // the clock, not the wall, decides the age
  ticks[0]!.fn();
  t.deepEqual(runs[1]!.removedLayers, [L1]);
  t.deepEqual(runs[1]!.removedCached, [c1]);
  t.false(store.hasLayer(L1));
  t.true(store.hasLayer(L2));

  store.close(); // the next run fails: logged, the timer keeps going
  t.notThrows(() => ticks[0]!.fn());
  t.deepEqual(warnings, ['store-gc-failed']);
  gc.stop();
  t.is(cleared, 'handle');
});
