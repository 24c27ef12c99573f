/**
 * Startup traces end to end (issue 6): a real docker-registry, `starlight proxy` as a child process,
 * traces POSTed over HTTP. Before any trace a delta follows the heuristic; after one it sends the
 * traced files first in EXACTLY the trace's order, then the rest in heuristic order; the order
 * survives a restart; a group gets its own order; v2 inherits v1's; `starlight trace show` prints it;
 * malformed and oversized uploads are refused with 400 / 413.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { LearnedOrder } from '../../src/protocol/traces.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { ROOT, fetchDelta, makeLayer, metrics, pushLayers, sha256, startProxyProcess, type BuiltLayer } from './proxy-support.js';

const run = promisify(execFile);
/** ms a `starlight trace show` run may take. */
const CLI_TIMEOUT_MS = 60_000;

const body = (p: string, v = 'v1'): Buffer => Buffer.from(`content of ${p} (${v})\n`.repeat(40));
const L0_FILES = ['bin/app', 'lib/liba.so.1', 'etc/conf', 'usr/share/f1', 'usr/share/f2', 'usr/share/f3'];
const L1_FILES = ['opt/o1', 'opt/o2'];
/** The heuristic order of v1: entrypoint, shared libraries, small etc/ files, then by layer and path. */
const HEURISTIC_V1 = ['bin/app', 'lib/liba.so.1', 'etc/conf', 'usr/share/f1', 'usr/share/f2', 'usr/share/f3', 'opt/o1', 'opt/o2'];

interface Fixture {
  reg: TestRegistry;
  L: BuiltLayer[];
  v1: string;
  v2: string;
  /** digest → path (v1 and v2 contents). */
  pathOf: Map<string, string>;
}

async function fixture(t: ExecutionContext): Promise<Fixture> {
  const reg = await startRegistry(t);
  const spec = (files: string[], v = 'v1'): Record<string, Buffer> => Object.fromEntries(files.map((p) => [p, body(p, v)]));
  const L = [makeLayer(t, spec(L0_FILES)), makeLayer(t, spec(L1_FILES)), makeLayer(t, { 'opt/o3': body('opt/o3'), 'bin/app': body('bin/app', 'v2') })];
  const v1 = await pushLayers(reg.host, 'app:v1', L.slice(0, 2));
  const v2 = await pushLayers(reg.host, 'app:v2', L);
  const pathOf = new Map<string, string>();
  for (const p of [...L0_FILES, ...L1_FILES, 'opt/o3']) pathOf.set(sha256(body(p)), p);
  pathOf.set(sha256(body('bin/app', 'v2')), 'bin/app');
  return { reg, L, v1, v2, pathOf };
}

function traceBody(f: Fixture, paths: string[], group?: string): unknown {
  const layerOf = (p: string): string => (L0_FILES.includes(p) ? f.L[0]!.diffID : f.L[1]!.diffID);
  return {
    version: 1,
    ref: `${f.reg.host}/app:v1`,
    manifestDigest: f.v1,
    platform: 'linux/amd64',
    ...(group !== undefined ? { group } : {}),
    worker: 'edge-1',
    traces: [{ startedAt: Date.now(), windowMs: 30000, entries: paths.map((p, i) => ({ path: p, layer: layerOf(p), digest: sha256(body(p)), ms: i * 1.5 })) }],
  };
}

async function post(url: string, payload: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<{ status: number; json: unknown }> {
  const res = await fetch(new URL('/v1/traces', url), {
    method: 'POST',
    headers,
    body: typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? new Uint8Array(payload) : JSON.stringify(payload),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, json: await res.json() };
}

async function deltaPaths(f: Fixture, url: string, tag: string, extra: Record<string, string> = {}): Promise<string[]> {
  const d = await fetchDelta(url, { to: `${f.reg.host}/app:${tag}`, ...extra });
  if (d.contents.size !== d.header.items.length) throw new Error(`delta delivered ${d.contents.size} of ${d.header.items.length} items`);
  return d.header.items.map((i) => f.pathOf.get(i.digest)!);
}

const errCode = (json: unknown): string => (json as { errors: { code: string }[] }).errors[0]!.code;

test('a trace reorders the delta exactly, survives a restart, and `trace show` prints it', async (t) => {
  const f = await fixture(t);
  const data = tempDir(t, 'starlight-proxy-');
  const args = ['--registry', f.reg.url, '--listen', '127.0.0.1:0', '--data', data];
  const a = await startProxyProcess(t, args);

  t.deepEqual(await deltaPaths(f, a.url, 'v1'), HEURISTIC_V1, 'before any trace: the heuristic');

  const traced = ['opt/o2', 'usr/share/f2', 'not/in/image', 'etc/conf', 'bin/app'];
  const r = await post(a.url, traceBody(f, traced));
  t.is(r.status, 200);
  t.deepEqual(r.json, { accepted: 1 });
  const want = ['opt/o2', 'usr/share/f2', 'etc/conf', 'bin/app', 'lib/liba.so.1', 'usr/share/f1', 'usr/share/f3', 'opt/o1'];
  t.deepEqual(await deltaPaths(f, a.url, 'v1'), want, 'traced files in trace order, then the heuristic');
  t.is((await metrics(a.url)).get('starlight_proxy_traces_accepted_total'), 1);

  // v2 has no traces: it inherits v1's (same repository) — bin/app changed content but keeps its place
  t.deepEqual(await deltaPaths(f, a.url, 'v2'), ['opt/o2', 'usr/share/f2', 'etc/conf', 'bin/app', 'lib/liba.so.1', 'usr/share/f1', 'usr/share/f3', 'opt/o1', 'opt/o3']);

  t.is((await a.stop()).code, 0);
  const b = await startProxyProcess(t, args);
  t.deepEqual(await deltaPaths(f, b.url, 'v1'), want, 'traces survive a restart');

  const show = await run(process.execPath, [join(ROOT, 'bin/starlight.js'), 'trace', 'show', `${f.reg.host}/app:v1`, '--proxy', b.url], { timeout: CLI_TIMEOUT_MS });
  // RANK SIZE SIGNAL PATH [(via …)]: the traced files first, then what the image itself predicts
  const rows = show.stdout.trim().split('\n').slice(2).map((l) => l.trim().split(/\s+/));
  const tracedRows = rows.filter((c) => c[2] === 'trace');
  t.deepEqual(tracedRows.map((c) => c[3]), ['opt/o2', 'usr/share/f2', 'etc/conf', 'bin/app']);
  t.deepEqual(tracedRows.map((c) => Number(c[0])), [1, 2, 3, 4]);
  t.is(Number(rows[0]![1]), body('opt/o2').length);
});

test('groups: a group gets its own order; others fall back to the merged image order (= GET /v1/traces)', async (t) => {
  const f = await fixture(t);
  const p = await startProxyProcess(t, ['--registry', f.reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'starlight-proxy-')]);
  t.is((await post(p.url, traceBody(f, ['usr/share/f1', 'opt/o1']))).status, 200);
  t.is((await post(p.url, traceBody(f, ['usr/share/f3', 'lib/liba.so.1'], 'web'))).status, 200);

  const web = await deltaPaths(f, p.url, 'v1', { group: 'web' });
  t.deepEqual(web.slice(0, 2), ['usr/share/f3', 'lib/liba.so.1']);
  t.deepEqual(web.slice(2), HEURISTIC_V1.filter((x) => !web.slice(0, 2).includes(x)));

  const learned = (await (await fetch(new URL(`/v1/traces?ref=${f.reg.host}/app:v1&group=batch`, p.url))).json()) as LearnedOrder;
  t.is(learned.source, 'image');
  t.is(learned.traces, 2);
  const batch = await deltaPaths(f, p.url, 'v1', { group: 'batch' });
  t.deepEqual(batch.slice(0, learned.entries.length), learned.entries.map((e) => e.path));
  t.deepEqual(learned.entries.map((e) => e.rank), [1, 2, 3, 4]);
  t.deepEqual(batch, await deltaPaths(f, p.url, 'v1'), 'no group = the group-less order');

  const byManifest = (await (await fetch(new URL(`/v1/traces?manifest=${f.v1}&group=web`, p.url))).json()) as LearnedOrder;
  t.is(byManifest.source, 'image-group');
  t.deepEqual(byManifest.entries.map((e) => e.path), ['usr/share/f3', 'lib/liba.so.1']);
});

test('uploads: 400 on malformed bodies and parameters, 413 over 16 MiB, 404 unknown manifest', async (t) => {
  const f = await fixture(t);
  const dir = tempDir(t, 'starlight-proxy-');
  const p = await startProxyProcess(t, ['--registry', f.reg.url, '--listen', '127.0.0.1:0', '--data', join(dir, 'data')]);
  const good = traceBody(f, ['etc/conf']) as Record<string, unknown>;

  const notJson = await post(p.url, '{"version":1,');
  t.is(notJson.status, 400);
  t.is(errCode(notJson.json), 'SL_ERR_INVALID_ARGUMENT');
  const v2 = await post(p.url, { ...good, version: 2 });
  t.is(v2.status, 400);
  t.is((v2.json as { errors: { detail: { field: string } }[] }).errors[0]!.detail.field, 'version');
  const unordered = await post(p.url, { ...good, traces: [{ startedAt: 1, windowMs: 0, entries: [{ path: 'a', ms: 5 }, { path: 'b', ms: 1 }] }] });
  t.is(unordered.status, 400);
  t.is(errCode(unordered.json), 'SL_ERR_INVALID_ARGUMENT');
  const wrongType = await post(p.url, good, { 'content-type': 'text/plain' });
  t.is(wrongType.status, 400);

  const huge = Buffer.alloc(16 * 1024 * 1024 + 1, 0x20);
  const big = await post(p.url, huge);
  t.is(big.status, 413);
  t.is(errCode(big.json), 'SL_ERR_BODY_TOO_LARGE');

  const badGroup = await fetch(new URL(`/v1/delta?to=${f.reg.host}/app:v1&group=-bad`, p.url));
  t.is(badGroup.status, 400);
  const both = await fetch(new URL(`/v1/traces?ref=app:v1&manifest=${f.v1}`, p.url));
  t.is(both.status, 400);
  const unknown = await fetch(new URL(`/v1/traces?manifest=${sha256(Buffer.from('nope'))}`, p.url));
  t.is(unknown.status, 404);

  t.is((await post(p.url, good)).status, 200, 'the proxy still accepts a good upload after the refusals');
  t.is((await metrics(p.url)).get('starlight_proxy_traces_accepted_total'), 1);
});
