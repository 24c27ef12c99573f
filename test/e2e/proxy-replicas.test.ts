/**
 * Proxy replicas on one PostgreSQL (issue 15), end to end: a real docker-registry, a real PostgreSQL
 * (test/helpers/postgres.ts), `starlight proxy --db …` child processes.
 * - An image indexed through replica A is served by replica B without any registry blob fetch by B
 *   (layers copied from the shared store, contents from A's cache).
 * - An image asked from both replicas at once is indexed once (one replica waits for the other).
 * - A trace uploaded to A changes B's order.
 * - PostgreSQL down: 503 SL_ERR_PROXY_DB_UNAVAILABLE naming the database; served again once it is back.
 */
import test, { type ExecutionContext } from 'ava';
import { startPostgres } from '../helpers/postgres.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { type BuiltLayer, fetchDelta, makeLayer, metrics, pushLayers, sha256, startProxyProcess } from './proxy-support.js';

const body = (p: string, v = 'v1'): Buffer => Buffer.from(`content of ${p} (${v})\n`.repeat(40));
const L0_FILES = ['bin/app', 'lib/liba.so.1', 'etc/conf', 'usr/share/f1', 'usr/share/f2', 'usr/share/f3'];
const L1_FILES = ['opt/o1', 'opt/o2'];

interface Fixture {
  reg: TestRegistry;
  L: BuiltLayer[];
  v1: string;
  pathOf: Map<string, string>;
}

async function fixture(t: ExecutionContext): Promise<Fixture> {
  const reg = await startRegistry(t);
  const spec = (files: string[], v = 'v1'): Record<string, Buffer> => Object.fromEntries(files.map((p) => [p, body(p, v)]));
  const L = [makeLayer(t, spec(L0_FILES)), makeLayer(t, spec(L1_FILES)), makeLayer(t, { 'opt/o3': body('opt/o3'), 'bin/app': body('bin/app', 'v2') })];
  const v1 = await pushLayers(reg.host, 'app:v1', L.slice(0, 2));
  await pushLayers(reg.host, 'app:v2', L);
  const pathOf = new Map<string, string>();
  for (const p of [...L0_FILES, ...L1_FILES, 'opt/o3']) pathOf.set(sha256(body(p)), p);
  pathOf.set(sha256(body('bin/app', 'v2')), 'bin/app');
  return { reg, L, v1, pathOf };
}

async function deltaPaths(f: Fixture, url: string, tag: string): Promise<string[]> {
  const d = await fetchDelta(url, { to: `${f.reg.host}/app:${tag}` });
  if (d.contents.size !== d.header.items.length) throw new Error(`delta delivered ${d.contents.size} of ${d.header.items.length} items`);
  return d.header.items.map((i) => f.pathOf.get(i.digest)!);
}

const counter = async (url: string, name: string): Promise<number> => (await metrics(url)).get(`starlight_proxy_${name}`) ?? 0;

/** Uploads one startup trace of app:v1 reading `paths` in this order (POST /v1/traces). */
function uploadTrace(f: Fixture, url: string, paths: string[]): Promise<Response> {
  const layerOf = (p: string): string => (L0_FILES.includes(p) ? f.L[0]!.diffID : f.L[1]!.diffID);
  return fetch(new URL('/v1/traces', url), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      version: 1,
      ref: `${f.reg.host}/app:v1`,
      manifestDigest: f.v1,
      platform: 'linux/amd64',
      traces: [{ startedAt: Date.now(), windowMs: 30000, entries: paths.map((p, i) => ({ path: p, layer: layerOf(p), digest: sha256(body(p)), ms: i })) }],
    }),
    signal: AbortSignal.timeout(30_000),
  });
}

test('two replicas: index once, B serves what A indexed without a blob fetch, a trace on A reorders B', async (t) => {
  const db = await startPostgres(t);
  const f = await fixture(t);
  const args = (name: string): string[] => ['--registry', f.reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, `starlight-proxy-${name}-`), '--db', db.url];
  const a = await startProxyProcess(t, args('a'));
  const b = await startProxyProcess(t, args('b'));

  const viaA = await deltaPaths(f, a.url, 'v1');
  t.is(viaA.length, L0_FILES.length + L1_FILES.length);
  t.is(await counter(a.url, 'registry_blob_fetches_total'), 2, 'A fetched both layers');

  const viaB = await deltaPaths(f, b.url, 'v1');
  t.deepEqual(viaB, viaA, 'same delta from B (every item verified against its digest)');
  t.is(await counter(b.url, 'registry_blob_fetches_total'), 0, 'B fetched no blob from the registry');
  t.is(await counter(b.url, 'layers_indexed_total'), 0, 'B indexed nothing');
  t.is(await counter(b.url, 'peer_content_fetches_total'), viaA.length, 'B filled its cache from A');

  // v2 asked from both at once: its new layer is indexed by exactly one of them.
  const [pa, pb] = await Promise.all([deltaPaths(f, a.url, 'v2'), deltaPaths(f, b.url, 'v2')]);
  t.deepEqual(pa, pb);
  t.is((await counter(a.url, 'layers_indexed_total')) + (await counter(b.url, 'layers_indexed_total')), 3, 'three layers, each indexed once');
  t.is((await counter(a.url, 'registry_blob_fetches_total')) + (await counter(b.url, 'registry_blob_fetches_total')), 3, 'three blob fetches in all');

  // A trace uploaded to A reorders B's stream.
  const traced = ['opt/o2', 'usr/share/f2', 'etc/conf'];
  const res = await uploadTrace(f, a.url, traced);
  t.is(res.status, 200, await res.text());
  const afterB = await deltaPaths(f, b.url, 'v1');
  t.notDeepEqual(afterB, viaB, "B's order changed");
  t.deepEqual(afterB.slice(0, 3), traced, 'the files A was told about come first on B');
  t.deepEqual(await deltaPaths(f, a.url, 'v1'), afterB, 'A and B agree');
});

test('PostgreSQL down: 503 SL_ERR_PROXY_DB_UNAVAILABLE naming the database; recovers when it is back', async (t) => {
  const db = await startPostgres(t);
  const f = await fixture(t);
  const p = await startProxyProcess(t, ['--registry', f.reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'starlight-proxy-'), '--db', db.url]);
  t.is((await deltaPaths(f, p.url, 'v1')).length, L0_FILES.length + L1_FILES.length);

  await db.stop();
  const down = await fetch(new URL(`/v1/delta?to=${f.reg.host}/app:v1`, p.url), { signal: AbortSignal.timeout(60_000) });
  t.is(down.status, 503);
  const err = ((await down.json()) as { errors: { code: string; message: string }[] }).errors[0]!;
  t.is(err.code, 'SL_ERR_PROXY_DB_UNAVAILABLE');
  t.regex(err.message, /proxy database postgres:\/\/\/tmp\/starlight-pg-[^ ]+ is unavailable/);
  t.is((await fetch(new URL('/healthz', p.url))).status, 200, 'the process is alive');

  await db.start();
  t.is((await deltaPaths(f, p.url, 'v1')).length, L0_FILES.length + L1_FILES.length, 'served again');
});

test('a SQLite data dir (single proxy, no --db) joins a database: its index and traces serve the other replicas', async (t) => {
  const db = await startPostgres(t);
  const f = await fixture(t);
  const dataA = tempDir(t, 'starlight-proxy-a-');
  const base = ['--registry', f.reg.url, '--listen', '127.0.0.1:0'];
  const single = await startProxyProcess(t, [...base, '--data', dataA]);
  const heuristic = await deltaPaths(f, single.url, 'v1');
  const traced = ['opt/o1', 'usr/share/f3'];
  const up = await uploadTrace(f, single.url, traced);
  t.is(up.status, 200);
  const ordered = await deltaPaths(f, single.url, 'v1');
  t.notDeepEqual(ordered, heuristic);
  t.is((await single.stop()).code, 0);

  const a = await startProxyProcess(t, [...base, '--data', dataA, '--db', db.url]);
  const b = await startProxyProcess(t, [...base, '--data', tempDir(t, 'starlight-proxy-b-'), '--db', db.url]);
  t.deepEqual(await deltaPaths(f, a.url, 'v1'), ordered, 'A keeps its order (its trace is counted once)');
  t.deepEqual(await deltaPaths(f, b.url, 'v1'), ordered, "B follows A's old trace");
  t.is(await counter(a.url, 'registry_blob_fetches_total'), 0, 'A re-indexed nothing');
  t.is(await counter(b.url, 'registry_blob_fetches_total'), 0, 'B fetched no blob: layers from the database, contents from A');
  const learned = (await (await fetch(new URL(`/v1/traces?manifest=${f.v1}`, a.url))).json()) as { traces: number };
  t.is(learned.traces, 1, 'one trace, not a copy of it per start');
  await a.stop();
  const again = await startProxyProcess(t, [...base, '--data', dataA, '--db', db.url]);
  t.is(((await (await fetch(new URL(`/v1/traces?manifest=${f.v1}`, again.url))).json()) as { traces: number }).traces, 1, 'still one after a restart');
});
