/**
 * Issue 14, traces: one uploader cannot outweigh the rest (its traces merge as one source), nor flush
 * the others out of the store (newest N per uploader, per (image, group); newest groups per image);
 * and, over HTTP, uploads need a token with the 'trace' scope, while a 'trace'-only token cannot pull,
 * and concurrent uploads are bounded (503 SL_ERR_PROXY_BUSY past the queue).
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { type ClientRequest, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { parseTokenScopes } from '../../../src/proxy/config.js';
import { mergeTraces, rankFiles, type MergeTrace } from '../../../src/proxy/priority.js';
import { PriorityService } from '../../../src/proxy/priority-service.js';
import { parseMetrics } from '../../../src/prometheus.js';
import { MAX_CONCURRENT_TRACE_UPLOADS, MAX_QUEUED_TRACE_UPLOADS, startProxy } from '../../../src/proxy/server.js';
import { KEEP_GROUPS_PER_IMAGE, KEEP_TRACES_PER_UPLOADER, MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import type { TocEntry } from '../../../src/layers/toc.js';
import { pollUntil } from '../../helpers/poll.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (s: string): string => 'sha256:' + createHash('sha256').update(s).digest('hex');
const reg = (path: string): TocEntry => ({ path, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 0, digest: dg(path), layer: 0 });
const tr = (source: string | undefined, ...paths: string[]): MergeTrace => ({ entries: paths.map((p) => ({ path: p, digest: dg(p) })), ...(source !== undefined ? { source } : {}) });
const files = ['a', 'b', 'c'].map(reg);
const order = (traces: MergeTrace[]): string[] => rankFiles(files, mergeTraces(traces)).map((f) => f.path);

test('many traces of one source weigh as one: two honest sources win over one flooding source', (t) => {
  const flood = Array.from({ length: 50 }, () => tr('evil', 'c', 'b', 'a'));
  const honest = [tr('w1', 'a', 'b', 'c'), tr('w2', 'a', 'b', 'c')];
  t.deepEqual(order([...flood, ...honest]), ['a', 'b', 'c']);
  // Without sources (stored before issue 14) every trace still weighs one, as before.
  t.deepEqual(order([...flood.map((x) => ({ entries: x.entries })), ...honest.map((x) => ({ entries: x.entries }))]), ['c', 'b', 'a']);
  // One source alone: its own order.
  t.deepEqual(order(flood), ['c', 'b', 'a']);
});

test('the store keeps the newest traces per uploader and the newest groups per image', (t) => {
  const store = new MetadataStore(join(tempDir(t), STORE_FILE));
  t.teardown(() => store.close());
  const svc = new PriorityService(store, 'r.example');
  const manifestDigest = dg('image');
  const body = (group?: string) => ({
    version: 1 as const,
    ref: 'r.example/app:v1',
    manifestDigest,
    platform: 'linux/amd64',
    ...(group !== undefined ? { group } : {}),
    traces: [{ startedAt: 1, windowMs: 10, entries: [{ path: 'a', ms: 0 }] }],
  });
  for (let i = 0; i < 30; i++) svc.record(body(), i, 'token:evil');
  svc.record(body(), 100, 'token:good');
  const stored = store.traces([manifestDigest], '', 1000);
  t.is(stored.filter((s) => s.worker === 'token:evil').length, KEEP_TRACES_PER_UPLOADER);
  t.is(stored.filter((s) => s.worker === 'token:good').length, 1);
  for (let i = 0; i < KEEP_GROUPS_PER_IMAGE + 10; i++) svc.record(body(`g${i}`), 200 + i, 'token:groups');
  const groups = new Set(store.traces([manifestDigest], undefined, 100_000).map((s) => s.id));
  t.true(groups.size <= KEEP_GROUPS_PER_IMAGE * KEEP_TRACES_PER_UPLOADER);
  t.is(store.traces([manifestDigest], 'g0', 10).length, 0, 'the oldest group was dropped');
  t.is(store.traces([manifestDigest], `g${KEEP_GROUPS_PER_IMAGE + 9}`, 10).length, 1);
});

test("token scopes: uploads need 'trace'; a 'trace'-only token cannot pull; bad lines are config errors", async (t) => {
  t.deepEqual(parseTokenScopes('# c\nboth\npuller pull\ntracer trace\nx pull,trace\n', 'f'), { pull: ['both', 'puller', 'x'], trace: ['both', 'tracer', 'x'] });
  t.throws(() => parseTokenScopes('tok write\n', 'f'), { message: /expected TOKEN/ });
  const proxy = await startProxy({ registries: ['127.0.0.1:1'], host: '127.0.0.1', port: 0, dataDir: tempDir(t), cacheBytes: 1 << 20, tokens: ['puller'], traceTokens: ['tracer'] });
  t.teardown(() => proxy.close());
  const upload = (token?: string) =>
    fetch(`${proxy.url}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ version: 1, ref: '127.0.0.1:1/app:v1', manifestDigest: dg('m'), platform: 'linux/amd64', traces: [{ startedAt: 1, windowMs: 10, entries: [{ path: 'a', ms: 0 }] }] }),
    });
  t.is((await upload()).status, 401);
  t.is((await upload('puller')).status, 401);
  const ok = await upload('tracer');
  t.is(ok.status, 200, await ok.clone().text());
  t.deepEqual(await ok.json(), { accepted: 1 });
  t.is((await fetch(`${proxy.url}/v1/traces?manifest=${dg('m')}`, { headers: { authorization: 'Bearer tracer' } })).status, 401);
  t.not((await fetch(`${proxy.url}/v1/traces?manifest=${dg('m')}`, { headers: { authorization: 'Bearer puller' } })).status, 401);
});

test('a trace body over its limit is refused (413 or reset), never buffered to a 200 or a 500', async (t) => {
  const proxy = await startProxy({ registries: ['127.0.0.1:1'], host: '127.0.0.1', port: 0, dataDir: tempDir(t), cacheBytes: 1 << 20 });
  t.teardown(() => proxy.close());
  const res = await fetch(`${proxy.url}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(64 * 1024 * 1024) }, body: 'x'.repeat(64 * 1024 * 1024) }).catch((e: unknown) => e);
  // Either a 413 or a reset once the proxy stopped reading: never a 200 or a 500.
  if (res instanceof Response) t.is(res.status, 413);
  else t.pass();
});

test(`trace uploads past ${MAX_CONCURRENT_TRACE_UPLOADS} running and ${MAX_QUEUED_TRACE_UPLOADS} waiting get 503 SL_ERR_PROXY_BUSY; slots free up again`, async (t) => {
  const proxy = await startProxy({ registries: ['127.0.0.1:1'], host: '127.0.0.1', port: 0, dataDir: tempDir(t), cacheBytes: 1 << 20 });
  t.teardown(() => proxy.close());
  const { port } = new URL(proxy.url);
  // Uploads that send their headers and a first piece of body, then stall: the running ones hold a
  // slot while reading the body, the others wait for one.
  const stalled: ClientRequest[] = [];
  t.teardown(() => stalled.forEach((r) => r.destroy()));
  for (let i = 0; i < MAX_CONCURRENT_TRACE_UPLOADS + MAX_QUEUED_TRACE_UPLOADS; i++) {
    const r = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/traces', headers: { 'content-type': 'application/json', 'content-length': '1000' }, agent: false });
    r.on('error', () => undefined);
    r.write('{"version":');
    stalled.push(r);
  }
  const gauges = async () => {
    const m = parseMetrics(await (await fetch(`${proxy.url}/metrics`)).text());
    return { running: m.get('starlight_proxy_trace_uploads_running'), waiting: m.get('starlight_proxy_trace_uploads_waiting') };
  };
  await pollUntil('every stalled upload to hold or wait for a slot', async () => {
    const g = await gauges();
    return g.running === MAX_CONCURRENT_TRACE_UPLOADS && g.waiting === MAX_QUEUED_TRACE_UPLOADS;
  }, { timeoutMs: 60_000 });

  const refused = await upload(proxy.url);
  t.is(refused.status, 503);
  const body = (await refused.json()) as { errors: { code: string; message: string }[] };
  t.is(body.errors[0]!.code, 'SL_ERR_PROXY_BUSY');
  t.regex(body.errors[0]!.message, /too many trace uploads/);

  // The stalled uploads go away: their slots come back and an upload is accepted again.
  stalled.forEach((r) => r.destroy());
  await pollUntil('the stalled uploads to release their slots', async () => {
    const g = await gauges();
    return g.running === 0 && g.waiting === 0;
  }, { timeoutMs: 60_000 });
  const ok = await upload(proxy.url);
  t.is(ok.status, 200, await ok.clone().text());
  t.deepEqual(await ok.json(), { accepted: 1 });
});

function upload(url: string): Promise<Response> {
  return fetch(`${url}/v1/traces`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ version: 1, ref: '127.0.0.1:1/app:v1', manifestDigest: dg('m'), platform: 'linux/amd64', traces: [{ startedAt: 1, windowMs: 10, entries: [{ path: 'a', ms: 0 }] }] }),
    signal: AbortSignal.timeout(60_000),
  });
}
