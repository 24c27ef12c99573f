/**
 * SharedStore contract suite (src/proxy/shared-store.ts), run against every backend through a
 * factory: SQLite (test/unit/proxy/shared-store-sqlite.test.ts) and PostgreSQL
 * (test/unit/proxy/shared-store-pg.test.ts, a real server from test/helpers/postgres.ts).
 */
import type { ExecutionContext, TestFn } from 'ava';
import type { SharedStore } from '../../src/proxy/shared-store.js';
import type { ImageRecord, LayerRecord, TraceMeta } from '../../src/proxy/store.js';

/** A fresh, empty store for test `t` (closed and removed in its teardown), and a way to open a second handle on the same data. */
export type SharedStoreFactory = (t: ExecutionContext) => Promise<{ store: SharedStore; reopen: () => Promise<SharedStore> }>;

const D = (n: number): string => 'sha256:' + n.toString(16).padStart(64, '0');

function image(n: number, diffIDs: string[]): ImageRecord {
  return { manifestDigest: D(n), mediaType: 'application/vnd.oci.image.manifest.v1+json', manifest: Buffer.from(`{"m":${n}}`), config: Buffer.from(`{"c":${n}}`), repository: 'r.example/app', diffIDs };
}

function layer(n: number): LayerRecord {
  return { diffID: D(n), layerDigest: D(n + 1000), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', compressedSize: 12345678901, uncompressedSize: 23456789012, repository: 'r.example/app', toc: Buffer.from([0, 1, 2, 255, n & 255]) };
}

const meta = (m: string, group?: string): TraceMeta => ({ manifestDigest: m, repository: 'r.example/app', ref: 'r.example/app:1', platform: 'linux/amd64', receivedAt: 1700000000000, ...(group !== undefined ? { group } : {}) });

export function sharedStoreSuite(test: TestFn, name: string, factory: SharedStoreFactory): void {
  test(`${name}: images and manifests round-trip; a ref is last-writer-wins`, async (t) => {
    const { store } = await factory(t);
    t.is(await store.imageDigest('r.example/app:1', 'linux/amd64'), undefined);
    t.is(await store.manifest(D(1)), undefined);
    await store.putImage('r.example/app:1', 'linux/amd64', image(1, [D(10), D(11)]));
    t.deepEqual(await store.manifest(D(1)), image(1, [D(10), D(11)]));
    t.is(await store.imageDigest('r.example/app:1', 'linux/amd64'), D(1));
    t.is(await store.imageDigest('r.example/app:1', 'linux/arm64'), undefined);
    await store.putImage('r.example/app:1', 'linux/amd64', image(2, [D(12)]));
    t.is(await store.imageDigest('r.example/app:1', 'linux/amd64'), D(2));
    t.deepEqual((await store.manifest(D(1)))?.diffIDs, [D(10), D(11)], 'older manifest kept');
  });

  test(`${name}: a layer is recorded with its contents; the first record of a digest wins`, async (t) => {
    const { store } = await factory(t);
    t.is(await store.layer(D(10)), undefined);
    await store.putLayerIndex(layer(10), [
      { digest: D(100), size: 5, sourceDiffID: D(10) },
      { digest: D(101), size: 6_000_000_000, sourceDiffID: D(10) },
    ]);
    t.deepEqual(await store.layer(D(10)), layer(10));
    await store.putLayerIndex(layer(11), [{ digest: D(101), size: 6_000_000_000, sourceDiffID: D(11) }]);
    const got = (await store.contents([D(100), D(101), D(999)])).sort((a, b) => a.digest.localeCompare(b.digest));
    t.deepEqual(got, [
      { digest: D(100), size: 5, sourceDiffID: D(10) },
      { digest: D(101), size: 6_000_000_000, sourceDiffID: D(10) },
    ]);
    t.deepEqual(await store.contents([]), []);
    t.deepEqual((await store.layersKnown([D(11), D(12), D(10)])).sort(), [D(10), D(11)]);
  });

  test(`${name}: traces get increasing ids, the newest are kept per image and group, with the image's layers`, async (t) => {
    const { store } = await factory(t);
    const tr = (i: number) => ({ startedAt: i, windowMs: 1000, entries: [{ path: `f${i}`, ms: i }] });
    t.is(await store.addTraces(meta(D(1)), [tr(1), tr(2)], [D(10), D(11)], 3), 2);
    await store.addTraces(meta(D(1), 'web'), [tr(3)], [D(10)], 3);
    await store.addTraces(meta(D(1)), [tr(4), tr(5)], [D(10)], 3);
    const all = await store.tracesSince(0, 100);
    t.deepEqual(all.map((x) => x.trace.startedAt), [2, 3, 4, 5], 'oldest ungrouped trace pruned (keep 3), oldest first');
    t.true(all.every((x, i) => i === 0 || x.id > all[i - 1]!.id));
    t.is(all[1]!.meta.group, 'web');
    t.is(all[0]!.meta.group, undefined);
    t.deepEqual(all[0]!.meta, meta(D(1)));
    t.deepEqual(all[0]!.layers, [D(10), D(11)]);
    t.deepEqual(all[0]!.trace, tr(2));
    const later = await store.tracesSince(all[1]!.id, 1);
    t.deepEqual(later.map((x) => x.trace.startedAt), [4], 'since id, limited');
    await store.addTraces(meta(D(0)), [tr(6)], [], 3);
    t.deepEqual(await store.tracedImages(), [D(0), D(1)]);
  });

  test(`${name}: the index lock excludes other holders, across handles on the same store`, async (t) => {
    const { store, reopen } = await factory(t);
    const other = await reopen();
    const events: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = store.withIndexLock('layer:x', async () => {
      events.push('a-in');
      await gate;
      events.push('a-out');
      return 1;
    });
    // a-in is recorded before the second holder is asked for the lock
    const deadline = Date.now() + 30_000;
    while (!events.includes('a-in') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const second = other.withIndexLock('layer:x', async () => {
      events.push('b-in');
      return 2;
    });
    const unrelated = await other.withIndexLock('layer:y', async () => 3);
    t.is(unrelated, 3, 'another key is not blocked');
    t.deepEqual(events, ['a-in']);
    release();
    t.deepEqual(await Promise.all([first, second]), [1, 2]);
    t.deepEqual(events, ['a-in', 'a-out', 'b-in']);
    await t.throwsAsync(store.withIndexLock('layer:x', async () => Promise.reject(new Error('boom'))), { message: 'boom' });
    t.is(await other.withIndexLock('layer:x', async () => 4), 4, 'a failed holder released the lock');
  });

  test(`${name}: schema version is current and survives reopen`, async (t) => {
    const { store, reopen } = await factory(t);
    const v = await store.schemaVersion();
    t.true(v >= 1);
    await store.putImage('a:1', 'linux/amd64', image(3, []));
    const again = await reopen();
    t.is(await again.schemaVersion(), v);
    t.is(await again.imageDigest('a:1', 'linux/amd64'), D(3));
  });
}
