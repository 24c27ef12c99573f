/**
 * Startup-trace merge (priority.ts), tier selection with a real metadata store (priority-service.ts),
 * and upload validation (src/protocol/traces.ts): determinism, ties, several traces and workers,
 * groups, layer fallback, v1 → v2 inheritance, persistence, and every kind of malformed body.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { StarlightError } from '../../../src/errors.js';
import type { MergedTree, TocEntry } from '../../../src/layers/toc.js';
import { validateTraceUpload, type TraceUploadBody } from '../../../src/protocol/traces.js';
import { plan } from '../../../src/proxy/planner.js';
import { POSITION_SCALE, mergeTraces, rankFiles, rankMap, type MergeTrace } from '../../../src/proxy/priority.js';
import { PRIOR_PROMOTE_BYTES, PRIOR_PROMOTE_MAX_FILE_BYTES, PriorityService, repositoryOf, type OrderTarget } from '../../../src/proxy/priority-service.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { tempDir } from '../../helpers/tmp.js';
import { buildElf } from '../../helpers/elf-fixture.js';
import { Readable } from 'node:stream';
import type { ImageConfig } from '../../../src/oci/types.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import { StartupService } from '../../../src/proxy/startup-service.js';

const dg = (s: string): string => 'sha256:' + createHash('sha256').update(s).digest('hex');
const reg = (path: string, content = path, layer = 0): TocEntry => ({ path, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: content.length, mtime: 0, digest: dg(content), layer });
const tree = (entries: TocEntry[], diffIDs = [dg('L0')]): MergedTree => ({
  diffIDs,
  entries: [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path))),
});
const tr = (...paths: string[]): MergeTrace => ({ entries: paths.map((p) => ({ path: p, digest: dg(p) })) });
const order = (entries: TocEntry[], traces: MergeTrace[]): string[] => rankFiles(tree(entries).entries, mergeTraces(traces)).map((f) => f.path);

const files = ['a', 'b', 'c', 'd', 'e'].map((p) => reg(p));

test('one trace: the order is exactly the trace order; untraced files are unranked', (t) => {
  t.deepEqual(order(files, [tr('d', 'b', 'e')]), ['d', 'b', 'e']);
  t.deepEqual(order(files, []), []);
});

test('merge is deterministic: any permutation of traces gives the same order', (t) => {
  const traces = [tr('a', 'b', 'c'), tr('c', 'a'), tr('b', 'd', 'a', 'c'), tr('e')];
  const want = order(files, traces);
  const perms = [[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]];
  for (const p of perms) t.deepEqual(order(files, p.map((i) => traces[i]!)), want);
  // a: 0 + 1/2 + 2/4 + absent(1) = 2; b: 1/3 + 1 + 0 + 1 ≈ 2.33; c: 2/3 + 0 + 3/4 + 1 ≈ 2.42; e: 1 + 1 + 1 + 0 = 3; d: 1 + 1 + 1/4 + 1
  t.deepEqual(want, ['a', 'b', 'c', 'e', 'd']);
});

test('ties are broken by path bytes', (t) => {
  // x first in one trace, y first in the other: equal sums
  const f = [reg('y'), reg('x'), reg('Z')];
  t.deepEqual(order(f, [tr('y', 'x'), tr('x', 'y')]), ['x', 'y']);
  t.deepEqual(order(f, [tr('x', 'y'), tr('y', 'x')]), ['x', 'y']);
  t.deepEqual(order(f, [tr('Z'), tr('x')]), ['Z', 'x'], "'Z' (0x5a) sorts before 'x' (0x78)");
});

test('many traces from several workers: a file seen early by most wins over one seen first once', (t) => {
  const workers = [tr('b', 'a'), tr('b', 'a'), tr('b', 'c', 'a'), tr('a', 'b')];
  t.deepEqual(order(files, workers), ['b', 'a', 'c']);
  const s = mergeTraces(workers);
  t.is(s.traces, 4);
  t.is(s.byPath.get('c'), Math.floor(POSITION_SCALE / 3) + 3 * POSITION_SCALE, 'absent counts as after everything');
});

test('a file matches by digest when moved and by path when changed', (t) => {
  const v2 = [reg('new/place', 'a'), reg('b', 'b-changed'), reg('c')];
  t.deepEqual(order(v2, [tr('a', 'b', 'c')]), ['new/place', 'b', 'c']);
});

test('the planner sends ranked files first in rank order, then the heuristic', (t) => {
  const t0 = tree([reg('bin/app'), reg('lib/x.so'), reg('z1'), reg('z2'), reg('z3')]);
  const learned = rankFiles(t0.entries, mergeTraces([tr('z3', 'z1')]));
  const p = plan({ chain: [{ version: 1, diffID: dg('L0'), uncompressedSize: 0, entries: t0.entries }], merged: t0, haveDiffIDs: new Set(), haveDigests: new Set(), rank: rankMap(learned) });
  t.deepEqual(p.items.map((i) => i.path), ['z3', 'z1', 'lib/x.so', 'bin/app', 'z2']);
});

// ---- tiers, with a real store ----

function service(t: import('ava').ExecutionContext): { store: MetadataStore; svc: PriorityService; dir: string } {
  const dir = tempDir(t, 'starlight-prio-');
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  return { store, svc: new PriorityService(store, 'reg.example:5000'), dir };
}

const L = { base: dg('layer-base'), app1: dg('layer-app1'), app2: dg('layer-app2'), other: dg('layer-other') };
const M = { v1: dg('m-v1'), v2: dg('m-v2'), other: dg('m-other') };

function upload(manifestDigest: string, ref: string, traces: [string, string, string?][][], group?: string): TraceUploadBody {
  return {
    version: 1,
    ref,
    manifestDigest,
    platform: 'linux/amd64',
    ...(group !== undefined ? { group } : {}),
    traces: traces.map((entries, k) => ({
      startedAt: 1000 + k,
      windowMs: 30000,
      entries: entries.map(([path, layer, content], i) => ({ path, layer, digest: dg(content ?? path), ms: i })),
    })),
  };
}

const target = (manifestDigest: string, repository: string, diffIDs: string[], entries: TocEntry[]): OrderTarget => ({
  manifestDigest,
  repository,
  diffIDs,
  merged: tree(entries, diffIDs),
});

test('tiers: own group > own > related group > related; v2 inherits v1 until it has traces', (t) => {
  const { svc } = service(t);
  const v1 = target(M.v1, 'reg.example:5000/app', [L.base, L.app1], [reg('lib/base'), reg('etc/base'), reg('app/bin', 'v1bin'), reg('app/conf')]);
  const v2 = target(M.v2, 'reg.example:5000/app', [L.base, L.app2], [reg('lib/base'), reg('etc/base'), reg('app/bin', 'v2bin'), reg('app/moved', 'app/conf'), reg('app/new')]);
  t.is(svc.order(v1).source, 'none');

  svc.record(upload(M.v1, 'app:v1', [[['app/bin', L.app1, 'v1bin'], ['app/conf', L.app1], ['lib/base', L.base]]]), 1);
  svc.record(upload(M.v1, 'app:v1', [[['etc/base', L.base], ['app/bin', L.app1, 'v1bin']]], 'web'), 2);
  t.deepEqual(svc.order(v1, 'web').files.map((f) => f.path), ['etc/base', 'app/bin']);
  t.is(svc.order(v1, 'web').source, 'image-group');
  t.is(svc.order(v1, 'batch').source, 'image', 'unknown group falls back to the image order');
  t.is(svc.order(v1).traces, 2);

  // v2: no traces of its own → v1's (same repository), matched by path (app/bin changed) and digest (moved)
  const inherited = svc.order(v2);
  t.is(inherited.source, 'related');
  t.deepEqual(inherited.files.map((f) => f.path), ['app/bin', 'etc/base', 'app/moved', 'lib/base']);
  t.is(svc.order(v2, 'web').source, 'related-group');
  t.deepEqual(svc.order(v2, 'web').files.map((f) => f.path), ['etc/base', 'app/bin']);

  // v2's own trace wins as soon as it exists (memo invalidated by the upload)
  svc.record(upload(M.v2, 'app:v2', [[['app/new', L.app2], ['lib/base', L.base]]]), 3);
  const own = svc.order(v2);
  t.is(own.source, 'image');
  t.deepEqual(own.files.map((f) => `${f.signal}:${f.path}`), ['trace:app/new', 'trace:lib/base', 'prior-trace:etc/base', 'prior-trace:app/moved'], "then v1's as prior traces");
});

test('prior traces: an image of another repository on the same base layer uses its traces (as prior-trace)', (t) => {
  const { svc } = service(t);
  svc.record(upload(M.v1, 'reg.example:5000/app:v1', [[['lib/base', L.base], ['app/bin', L.app1]]]), 1);
  const other = target(M.other, 'reg.example:5000/other', [L.base, L.other], [reg('lib/base'), reg('srv/main')]);
  const got = svc.order(other);
  t.is(got.source, 'predicted', 'no trace of the image or its repository');
  t.is(got.priorTraces, 1);
  t.deepEqual(got.files.map((f) => [f.path, f.signal]), [['lib/base', 'prior-trace']]);
  const unrelated = target(dg('m-unrelated'), 'reg.example:5000/x', [L.other], [reg('lib/base', 'other bytes'), reg('srv/main')]);
  t.is(svc.order(unrelated).source, 'none', 'no shared layer, no shared repository');
});

test('traces persist across reopen; only the newest KEEP per image and group are kept', (t) => {
  const { store, svc, dir } = service(t);
  for (let i = 0; i < 70; i++) svc.record(upload(M.v1, 'app:v1', [[[`f${i}`, L.base]]]), i);
  t.is(store.traces([M.v1], undefined, 1000).length, 64);
  t.is(store.traces([M.v1], undefined, 1000)[0]!.entries[0]!.path, 'f69', 'newest first');
  store.close();
  const again = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => again.close());
  t.is(again.traces([M.v1], undefined, 1000).length, 64);
  t.deepEqual(again.relatedTracedImages(M.v2, 'reg.example:5000/app', []), [M.v1]);
  t.deepEqual(again.relatedTracedImages(M.v2, 'nope/x', [L.base]), [M.v1]);
});

test('repositoryOf: default registry for refs without a host; "" when unparseable', (t) => {
  t.is(repositoryOf('app:v1', 'reg:5000'), 'reg:5000/app');
  t.is(repositoryOf('localhost:5000/a/b@' + dg('x'), 'reg:5000'), 'localhost:5000/a/b');
  t.is(repositoryOf('UPPER CASE', 'reg:5000'), '');
});

// ---- validation ----

const good = (): Record<string, unknown> => ({
  version: 1,
  ref: 'reg:5000/app:v1',
  manifestDigest: dg('m'),
  platform: 'linux/arm64/v8',
  group: 'web',
  worker: 'edge-17',
  future: 'ignored',
  traces: [{ startedAt: 1, windowMs: 0, entries: [{ path: 'a/b', layer: dg('l'), digest: dg('c'), ms: 0.5 }, { path: 'c', ms: 0.5 }] }],
});

test('validation accepts a good body and drops unknown keys', (t) => {
  const v = validateTraceUpload(good());
  t.is(v.traces[0]!.entries.length, 2);
  t.false('future' in v);
  t.is(v.group, 'web');
});

const bad: [string, (b: Record<string, unknown>) => unknown, string][] = [
  ['not an object', () => [1], 'body'],
  ['version 2', (b) => ({ ...b, version: 2 }), 'version'],
  ['missing version', ({ version: _v, ...b }) => b, 'version'],
  ['empty ref', (b) => ({ ...b, ref: '' }), 'ref'],
  ['bad manifest digest', (b) => ({ ...b, manifestDigest: 'sha256:ABC' }), 'manifestDigest'],
  ['bad platform', (b) => ({ ...b, platform: 'linux' }), 'platform'],
  ['bad group', (b) => ({ ...b, group: '-x' }), 'group'],
  ['long worker', (b) => ({ ...b, worker: 'w'.repeat(257) }), 'worker'],
  ['no traces', (b) => ({ ...b, traces: [] }), 'traces'],
  ['101 traces', (b) => ({ ...b, traces: Array.from({ length: 101 }, () => ({ startedAt: 0, windowMs: 0, entries: [] })) }), 'traces'],
  ['negative startedAt', (b) => ({ ...b, traces: [{ startedAt: -1, windowMs: 0, entries: [] }] }), 'traces[0].startedAt'],
  ['fractional windowMs', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 1.5, entries: [] }] }), 'traces[0].windowMs'],
  ['too many entries', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: Array.from({ length: 65537 }, (_, i) => ({ path: `p${i}`, ms: 0 })) }] }), 'traces[0].entries'],
  ['absolute path', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: [{ path: '/etc/x', ms: 0 }] }] }), 'traces[0].entries[0].path'],
  ['dot-dot path', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: [{ path: 'a/../b', ms: 0 }] }] }), 'traces[0].entries[0].path'],
  ['duplicate path', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: [{ path: 'a', ms: 0 }, { path: 'a', ms: 1 }] }] }), 'traces[0].entries[1].path'],
  ['decreasing ms', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: [{ path: 'a', ms: 2 }, { path: 'b', ms: 1 }] }] }), 'traces[0].entries[1].ms'],
  ['negative ms', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: [{ path: 'a', ms: -1 }] }] }), 'traces[0].entries[0].ms'],
  ['bad entry digest', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: [{ path: 'a', ms: 0, digest: 'md5:x' }] }] }), 'traces[0].entries[0].digest'],
  ['bad entry layer', (b) => ({ ...b, traces: [{ startedAt: 0, windowMs: 0, entries: [{ path: 'a', ms: 0, layer: 5 }] }] }), 'traces[0].entries[0].layer'],
];

for (const [name, mutate, field] of bad) {
  test(`validation refuses: ${name}`, (t) => {
    const err = t.throws(() => validateTraceUpload(mutate(good())), { instanceOf: StarlightError }) as StarlightError;
    t.is(err.code, 'SL_ERR_INVALID_ARGUMENT');
    t.is((err.details as { field: string }).field, field);
  });
}

/**
 * A priority service with a startup predictor over a tree of `bytes` (path → content; executables
 * are the files under a bin/ directory), every content cached, plus the directories `dirs`.
 */
async function predictedService(t: import('ava').ExecutionContext, bytes: Record<string, Buffer>, dirs: string[]): Promise<{ svc: PriorityService; entries: TocEntry[]; cache: ContentCache }> {
  const { store, dir } = service(t);
  const cache = new ContentCache({ dir: join(dir, 'cache'), maxBytes: 1 << 30, store });
  const svc = new PriorityService(store, 'reg.example:5000', new StartupService({ cache, store }));
  const entries: TocEntry[] = Object.entries(bytes).map(([p, b]) => ({ path: p, type: 'reg', mode: /(^|\/)bin\//.test(p) ? 0o755 : 0o644, uid: 0, gid: 0, size: b.length, mtime: 0, digest: 'sha256:' + createHash('sha256').update(b).digest('hex') }));
  for (const e of entries) await cache.put(Readable.from([bytes[e.path]!]), e.size, L.base);
  t.is(store.content(entries[0]!.digest!)?.encoding, 'br', 'the ELF is read back through the brotli decoder');
  for (const d of dirs) entries.push({ path: d, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 });
  return { svc, entries, cache };
}

test('with a startup prediction: own trace > predicted core (entrypoint, loader, libs) > other images\' traces > rest', async (t) => {
  const bytes: Record<string, Buffer> = {
    'bin/app': buildElf({ bits: 64, interp: '/lib/ld.so', needed: ['libc.so.6'] }),
    'lib/ld.so': Buffer.from('loader'),
    'lib/libc.so.6': buildElf({ bits: 64 }),
    'lib/base': Buffer.from('lib/base'),
    'etc/shared': Buffer.from('etc/shared'),
    'srv/data': Buffer.from('srv/data'),
    'lib/libother.so.1': Buffer.from('another program links this'),
  };
  const { svc, entries } = await predictedService(t, bytes, ['', 'bin', 'lib', 'etc', 'srv']);
  const v1 = target(M.v1, 'reg.example:5000/app', [L.base, L.app1], entries);
  const config: ImageConfig = { architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/app'] }, rootfs: { type: 'layers', diff_ids: [] } };

  // Another image's trace (shared base layer) ranks lib/base and libc first — it must not push bin/app down.
  svc.record(upload(M.other, 'reg.example:5000/other:v1', [[['lib/libother.so.1', L.base, 'another program links this'], ['lib/base', L.base], ['lib/libc.so.6', L.base, 'x'], ['srv/data', L.other]]]), 1);
  t.false(svc.prepared(M.v1));
  await svc.prepare({ manifestDigest: M.v1, config, merged: v1.merged });
  t.true(svc.prepared(M.v1));
  const before = svc.order(v1);
  t.is(before.source, 'predicted');
  t.deepEqual(before.files.map((f) => `${f.signal}:${f.path}`), [
    'entrypoint:bin/app',
    'interp:lib/ld.so',
    'needed-lib:lib/libc.so.6',
    'prior-trace:lib/base',
    'prior-trace:srv/data',
    'prior-trace:lib/libother.so.1', // traced first by the other image, but not in bin/app's link closure: last
  ]);
  t.is(before.files.find((f) => f.path === 'lib/libc.so.6')!.via, 'bin/app');

  // The image's own trace wins; the prediction follows for files the trace did not see.
  svc.record(upload(M.v1, 'reg.example:5000/app:v1', [[['etc/shared', L.app1], ['lib/libc.so.6', L.base]]]), 2);
  const after = svc.order(v1);
  t.is(after.source, 'image');
  t.deepEqual(after.files.map((f) => `${f.signal}:${f.path}`), ['trace:etc/shared', 'trace:lib/libc.so.6', 'entrypoint:bin/app', 'interp:lib/ld.so', 'prior-trace:lib/base', 'prior-trace:srv/data', 'prior-trace:lib/libother.so.1']);
});

test('a cached content whose file is gone when the prediction reads it counts as unknown: prepare() settles, the process lives', async (t) => {
  const bytes: Record<string, Buffer> = {
    'bin/app': buildElf({ bits: 64, interp: '/lib/ld.so', needed: ['libc.so.6'] }),
    'lib/ld.so': Buffer.from('loader'),
    'lib/libc.so.6': buildElf({ bits: 64 }),
  };
  const { svc, entries, cache } = await predictedService(t, bytes, ['', 'bin', 'lib']);
  // Removed behind the cache's back (an eviction or a corrupt-file drop between has() and the read): the
  // read stream's ENOENT was an unhandled 'error' (the proxy died) and the decode never ended.
  rmSync(cache.pathOf(entries[0]!.digest!));
  t.true(cache.has(entries[0]!.digest!));
  const v1 = target(M.v1, 'reg.example:5000/app', [L.base], entries);
  const config: ImageConfig = { architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/app'] }, rootfs: { type: 'layers', diff_ids: [] } };
  await svc.prepare({ manifestDigest: M.v1, config, merged: v1.merged });
  t.true(svc.prepared(M.v1));
  const files = svc.order(v1).files.map((f) => f.path);
  t.is(files[0], 'bin/app', 'the entrypoint still comes first');
  t.false(files.includes('lib/ld.so'), 'its loader is not known without its facts');
});

test("other images' traces refine the order of the image's own prediction but add nothing in front of any of it", async (t) => {
  // opt/app is the program home of opt/app/bin/app (REST, small files first: a, b, c); etc/tz is not predicted.
  const bytes: Record<string, Buffer> = {
    'opt/app/bin/app': buildElf({ bits: 64, interp: '/lib/ld.so', needed: ['libc.so.6'] }),
    'lib/ld.so': Buffer.from('loader'),
    'lib/libc.so.6': buildElf({ bits: 64 }),
    'opt/app/share/a.dat': Buffer.alloc(10, 'a'),
    'opt/app/share/b.dat': Buffer.alloc(20, 'b'),
    'opt/app/share/c.dat': Buffer.alloc(30, 'c'),
    'etc/tz': Buffer.from('zone'),
    'lib/libother.so.1': Buffer.from('another program links this'),
  };
  const { svc, entries } = await predictedService(t, bytes, ['', 'opt', 'opt/app', 'opt/app/bin', 'opt/app/share', 'lib', 'etc']);
  const v1 = target(M.v1, 'reg.example:5000/app', [L.base, L.app1], entries);
  const config: ImageConfig = { architecture: 'amd64', os: 'linux', config: { Cmd: ['/opt/app/bin/app'] }, rootfs: { type: 'layers', diff_ids: [] } };
  await svc.prepare({ manifestDigest: M.v1, config, merged: v1.merged });
  const own = svc.order(v1).files.map((f) => `${f.signal}:${f.path}`);
  t.deepEqual(own, ['entrypoint:opt/app/bin/app', 'interp:lib/ld.so', 'needed-lib:lib/libc.so.6', 'home:opt/app/share/a.dat', 'home:opt/app/share/b.dat', 'home:opt/app/share/c.dat']);

  // Another image (shared base layer) read a foreign library, etc/tz, then the LAST of our home files, then libc.
  const c = (p: string): string => bytes[p]!.toString('latin1');
  svc.record(
    upload(M.other, 'reg.example:5000/other:v1', [
      [
        ['lib/libother.so.1', L.base, c('lib/libother.so.1')],
        ['etc/tz', L.base, 'zone'],
        ['opt/app/share/c.dat', L.base, c('opt/app/share/c.dat')],
        ['lib/libc.so.6', L.base, c('lib/libc.so.6')],
      ],
    ]),
    1,
  );
  const prior = svc.order(v1);
  t.is(prior.source, 'predicted');
  t.is(prior.priorTraces, 1);
  t.deepEqual(prior.files.map((f) => `${f.signal}:${f.path}`), [
    'entrypoint:opt/app/bin/app',
    'interp:lib/ld.so',
    'needed-lib:lib/libc.so.6', // core: the prior rank of libc does not move it
    'prior-trace:opt/app/share/c.dat', // a predicted REST file the other image read: first of the rest
    'home:opt/app/share/a.dat',
    'home:opt/app/share/b.dat',
    'prior-trace:etc/tz', // read by the other image only: after the whole prediction
    'prior-trace:lib/libother.so.1', // not in opt/app/bin/app's link closure: last
  ]);
  t.is(prior.files.find((f) => f.path === 'opt/app/share/c.dat')!.via, 'opt/app', 'the promoted file keeps what the prediction said of it');
  // Same set of files in front of every predicted file as without the prior: nothing diluted.
  const lastPredicted = Math.max(...prior.files.filter((f) => f.signal !== 'prior-trace' || f.path === 'opt/app/share/c.dat').map((f) => f.rank));
  t.deepEqual(prior.files.slice(0, lastPredicted + 1).map((f) => f.path).sort(), own.map((s) => s.split(':')[1]!).sort());

  // The image's own trace still comes first; the refined prediction follows for what it did not see.
  svc.record(upload(M.v1, 'reg.example:5000/app:v1', [[['opt/app/share/b.dat', L.base, c('opt/app/share/b.dat')]]]), 2);
  t.deepEqual(svc.order(v1).files.map((f) => `${f.signal}:${f.path}`), [
    'trace:opt/app/share/b.dat',
    'entrypoint:opt/app/bin/app',
    'interp:lib/ld.so',
    'needed-lib:lib/libc.so.6',
    'prior-trace:opt/app/share/c.dat',
    'home:opt/app/share/a.dat',
    'prior-trace:etc/tz',
    'prior-trace:lib/libother.so.1',
  ]);
});

test("other images' traces move up at most PRIOR_PROMOTE_BYTES of predicted files, none larger than PRIOR_PROMOTE_MAX_FILE_BYTES", async (t) => {
  const K = PRIOR_PROMOTE_MAX_FILE_BYTES;
  const n = PRIOR_PROMOTE_BYTES / K; // files of the largest size that fit the budget exactly
  const bytes: Record<string, Buffer> = {
    'opt/app/bin/app': buildElf({ bits: 64, interp: '/lib/ld.so', needed: ['libc.so.6'] }),
    'lib/ld.so': Buffer.from('loader'),
    'lib/libc.so.6': buildElf({ bits: 64 }),
    'opt/app/share/a.dat': Buffer.alloc(10, 'a'),
    'opt/app/share/big.dat': Buffer.alloc(K + 1, 'B'),
  };
  const ks = Array.from({ length: n + 1 }, (_, i) => `opt/app/share/k${String(i).padStart(2, '0')}.dat`);
  ks.forEach((p, i) => (bytes[p] = Buffer.alloc(K, String.fromCharCode(0x41 + i))));
  const { svc, entries } = await predictedService(t, bytes, ['', 'opt', 'opt/app', 'opt/app/bin', 'opt/app/share', 'lib']);
  const v1 = target(M.v1, 'reg.example:5000/app', [L.base, L.app1], entries);
  const config: ImageConfig = { architecture: 'amd64', os: 'linux', config: { Cmd: ['/opt/app/bin/app'] }, rootfs: { type: 'layers', diff_ids: [] } };
  await svc.prepare({ manifestDigest: M.v1, config, merged: v1.merged });
  const c = (p: string): string => bytes[p]!.toString('latin1');
  // The other image read the large file first, then every kNN, then a.dat.
  const read = ['opt/app/share/big.dat', ...ks, 'opt/app/share/a.dat'];
  svc.record(upload(M.other, 'reg.example:5000/other:v1', [read.map((p): [string, string, string] => [p, L.base, c(p)])]), 1);
  t.deepEqual(svc.order(v1).files.map((f) => `${f.signal}:${f.path}`), [
    'entrypoint:opt/app/bin/app',
    'interp:lib/ld.so',
    'needed-lib:lib/libc.so.6',
    ...ks.slice(0, n).map((p) => `prior-trace:${p}`), // the budget, exactly
    'home:opt/app/share/a.dat', // over the budget: stays where the prediction put it (small first)
    `home:${ks[n]!}`,
    'home:opt/app/share/big.dat', // larger than a file may be to move up
  ]);
});
