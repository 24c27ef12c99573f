/**
 * The proxy end to end: a real docker-registry, images pushed to it, `starlight proxy` as a child
 * process, deltas fetched over HTTP and decoded; every content verified against its digest.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { mergeLayers } from '../../src/layers/merge.js';
import { decodeToc } from '../../src/layers/toc-codec.js';
import { endFrame, headerFrame } from '../../src/protocol/frames.js';
import { PREAMBLE_BYTES, FRAME_HEAD_BYTES, CONTENT_HEAD_BYTES } from '../../src/protocol/constants.js';
import { freePort, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { selfSignedCert } from '../helpers/tls.js';
import { runCli } from '../helpers/cli.js';
import { ROOT, fetchDelta, makeLayer, metrics, peakRssKb, pushLayers, sha256, startProxyProcess, type BuiltLayer } from './proxy-support.js';

const appBin = Buffer.from('#!/bin/sh\n' + 'echo starlight app line\n'.repeat(800));
const libfoo = randomBytes(600 * 1024); // incompressible: identity, several chunks
const conf = Buffer.from('x=1\n');
const new1 = Buffer.from('new in v1 layer 1\n'.repeat(100));
const v2only = Buffer.from('only in v2\n'.repeat(300));

interface Fixture {
  reg: TestRegistry;
  L: BuiltLayer[];
  v1Digest: string;
}

async function fixture(t: ExecutionContext): Promise<Fixture> {
  const reg = await startRegistry(t);
  const L = [
    makeLayer(t, {
      'bin/app': appBin,
      'lib/libfoo.so.1': libfoo,
      'etc/conf': conf,
      'usr/share/doc/a': conf,
      'opt/empty': '',
      'opt/hidden': 'secret hidden by a whiteout',
    }),
    makeLayer(t, { 'opt/hidden': null, 'opt/new1': new1 }),
    makeLayer(t, { 'opt/v2only': v2only, 'opt/copy': appBin }),
  ];
  const v1Digest = await pushLayers(reg.host, 'app:v1', L.slice(0, 2));
  await pushLayers(reg.host, 'app:v2', L);
  return { reg, L, v1Digest };
}

function proxyArgs(t: ExecutionContext, reg: TestRegistry, extra: string[] = [], data = tempDir(t, 'starlight-proxy-')): string[] {
  return ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', data, ...extra];
}

test('cold delta of v1: TOCs, visible content only, each digest once, all verified', async (t) => {
  const f = await fixture(t);
  const p = await startProxyProcess(t, proxyArgs(t, f.reg));
  const d = await fetchDelta(p.url, { to: `${f.reg.host}/app:v1` });
  t.is(d.header.manifestDigest, f.v1Digest);
  t.is(sha256(d.header.manifest), f.v1Digest);
  t.deepEqual(d.header.diffIDs, [f.L[0]!.diffID, f.L[1]!.diffID]);
  t.deepEqual(d.header.layers.map((l) => l.diffID), d.header.diffIDs);
  const merged = mergeLayers(d.header.layers.map((l) => decodeToc(l.toc)));
  const visible = new Set(merged.entries.filter((e) => e.type === 'reg' && e.size > 0).map((e) => e.digest!));
  const sent = d.header.items.map((i) => i.digest);
  t.deepEqual([...sent].sort(), [...visible].sort());
  t.is(sent.length, new Set(sent).size);
  t.deepEqual([...sent].sort(), [appBin, libfoo, conf, new1].map(sha256).sort());
  t.is(sent[0], sha256(appBin), 'entrypoint first');
  t.is(sent[1], sha256(libfoo), 'then shared libraries');
  t.is(d.contents.size, sent.length);
  // First contact: nothing waited for compression, so every item goes out as staged (identity)…
  t.true(d.header.items.every((i) => i.encoding === 'identity' && i.encodedSize === i.size));
  t.false(merged.entries.some((e) => e.path === 'opt/hidden'));
  // …while the background encoder fills the cache: notify returns once it is done, and the next delta
  // carries the cached encodings, with no second registry fetch.
  const n = await fetch(`${p.url}/v1/notify?ref=${f.reg.host}/app:v1`, { method: 'POST' });
  t.is(n.status, 200);
  // The busy gauges (the bench waits for them to read 0 before timing): nothing indexed or encoding now.
  const idle = await metrics(p.url);
  t.is(idle.get('starlight_proxy_indexing'), 0);
  t.is(idle.get('starlight_proxy_background_encodes_pending'), 0);
  const warm = await fetchDelta(p.url, { to: `${f.reg.host}/app:v1` });
  t.deepEqual(warm.header.items.map((i) => i.digest), sent);
  t.is(warm.header.items.find((i) => i.digest === sha256(libfoo))!.encoding, 'identity');
  t.is(warm.header.items.find((i) => i.digest === sha256(appBin))!.encoding, 'br');
  t.is(warm.contents.size, sent.length);
  t.is((await metrics(p.url)).get('starlight_proxy_registry_blob_fetches_total'), 2);
});

test('v2 with have=v1: only new content on the wire; stream and /metrics agree', async (t) => {
  const f = await fixture(t);
  const p = await startProxyProcess(t, proxyArgs(t, f.reg));
  await fetchDelta(p.url, { to: `${f.reg.host}/app:v1` });
  const before = (await metrics(p.url)).get('starlight_proxy_delta_bytes_sent_total')!;
  const d = await fetchDelta(p.url, { to: `${f.reg.host}/app:v2`, have: `${f.L[0]!.diffID},${f.L[1]!.diffID}` });
  t.deepEqual(d.header.layers.map((l) => l.diffID), [f.L[2]!.diffID]);
  t.deepEqual(d.header.items.map((i) => i.digest), [sha256(v2only)]);
  const contentBytes = d.header.items.reduce((s, i) => s + i.encodedSize, 0);
  t.is(d.end.contentBytes, contentBytes);
  const expected =
    PREAMBLE_BYTES + headerFrame(d.header).length + contentBytes + d.chunkFrames * (FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES) + endFrame(d.end).length;
  t.is(d.wireBytes, expected);
  const after = (await metrics(p.url)).get('starlight_proxy_delta_bytes_sent_total')!;
  t.is(after - before, d.wireBytes);
  // the same with the v1 image digest as `have`
  const d2 = await fetchDelta(p.url, { to: `${f.reg.host}/app:v2`, have: f.v1Digest });
  t.deepEqual(d2.header.items.map((i) => i.digest), [sha256(v2only)]);
  // resume from item 1 of a cold v1 plan carries only the later items
  const r = await fetchDelta(p.url, { to: `${f.reg.host}/app:v1`, from: '1' });
  t.is(r.header.firstItem, 1);
  t.deepEqual([...r.contents.keys()].sort(), [1, 2, 3]);
});

test('restart keeps the index: no registry blob fetch the second time', async (t) => {
  const f = await fixture(t);
  const data = tempDir(t, 'starlight-proxy-');
  const a = await startProxyProcess(t, proxyArgs(t, f.reg, [], data));
  const d1 = await fetchDelta(a.url, { to: `${f.reg.host}/app:v1` });
  t.is((await metrics(a.url)).get('starlight_proxy_registry_blob_fetches_total'), 2);
  t.is((await a.stop()).code, 0, 'graceful exit on SIGTERM');
  const b = await startProxyProcess(t, proxyArgs(t, f.reg, [], data));
  const d2 = await fetchDelta(b.url, { to: `${f.reg.host}/app:v1` });
  t.deepEqual(
    d2.header.items.map((i) => [i.digest, i.size]),
    d1.header.items.map((i) => [i.digest, i.size]),
  );
  const m = await metrics(b.url);
  t.is(m.get('starlight_proxy_registry_blob_fetches_total'), 0);
  t.is(m.get('starlight_proxy_layers_indexed_total'), 0);
  t.is(m.get('starlight_proxy_cache_misses_total'), 0);
});

test('20 concurrent deltas of a cold image index it once and all complete', async (t) => {
  const f = await fixture(t);
  const p = await startProxyProcess(t, proxyArgs(t, f.reg));
  const all = await Promise.all(Array.from({ length: 20 }, () => fetchDelta(p.url, { to: `${f.reg.host}/app:v2` })));
  for (const d of all) t.deepEqual(d.header.items, all[0]!.header.items);
  const m = await metrics(p.url);
  t.is(m.get('starlight_proxy_layers_indexed_total'), 3);
  t.is(m.get('starlight_proxy_registry_blob_fetches_total'), 3);
  t.is(m.get('starlight_proxy_deltas_served_total'), 20);
  t.log(`proxy peak RSS (VmHWM): ${peakRssKb(p.pid)} kB`);
});

test('evicted content is re-fetched; /v1/content serves one item', async (t) => {
  const f = await fixture(t);
  const p = await startProxyProcess(t, proxyArgs(t, f.reg, ['--cache-size', '800KiB']));
  // A first delta stages the contents; the background encoder caches them after it. notify returns
  // once that is done (without it, the evictions below race the encoder).
  const cached = async (ref: string): Promise<void> => {
    await fetchDelta(p.url, { to: ref });
    t.is((await fetch(`${p.url}/v1/notify?ref=${ref}`, { method: 'POST' })).status, 200);
  };
  await cached(`${f.reg.host}/app:v1`);
  // Files of 180 KiB (under a quarter of the cache: larger ones are served from their layer, never
  // cached) adding up to more than the cache evict app:v1's contents.
  const blobs = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`data/blob${i}`, randomBytes(180 * 1024)]));
  await pushLayers(f.reg.host, 'other:v1', [makeLayer(t, blobs)]);
  await cached(`${f.reg.host}/other:v1`);
  const d = await fetchDelta(p.url, { to: `${f.reg.host}/app:v1` });
  t.is(d.contents.size, 4);
  const m = await metrics(p.url);
  t.true(m.get('starlight_proxy_cache_evictions_total')! > 0);
  t.true(m.get('starlight_proxy_registry_blob_fetches_total')! > 3, 're-fetched a layer');
  t.true(m.get('starlight_proxy_cache_bytes')! <= 800 * 1024);
  const res = await fetch(new URL(`/v1/content/${sha256(conf)}`, p.url));
  t.is(res.status, 200);
  t.is(res.headers.get('starlight-encoding'), 'identity');
  t.deepEqual(Buffer.from(await res.arrayBuffer()), conf);
});

async function errorOf(url: string, init: RequestInit = {}): Promise<{ status: number; code: string; detail: unknown }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(60_000) });
  const body = (await res.json()) as { errors: { code: string; detail: unknown }[] };
  return { status: res.status, code: body.errors[0]!.code, detail: body.errors[0]!.detail };
}

test('errors: 401 without/with a wrong token, 404 unknown image, 400 bad params, 403 other registry', async (t) => {
  const f = await fixture(t);
  const dir = tempDir(t);
  const tokenFile = join(dir, 'tokens');
  writeFileSync(tokenFile, '# tokens\nsecret-one\nsecret-two\n');
  const p = await startProxyProcess(t, proxyArgs(t, f.reg, ['--token-file', tokenFile]));
  const auth = { headers: { authorization: 'Bearer secret-two' } };
  const q = (s: string): string => `${p.url}/v1/delta?${s}`;
  t.deepEqual(await errorOf(q(`to=${f.reg.host}/app:v1`)).then((e) => [e.status, e.code]), [401, 'SL_ERR_PROXY_UNAUTHORIZED']);
  t.deepEqual(
    await errorOf(q(`to=${f.reg.host}/app:v1`), { headers: { authorization: 'Bearer nope' } }).then((e) => [e.status, e.code]),
    [401, 'SL_ERR_PROXY_UNAUTHORIZED'],
  );
  t.is((await fetch(`${p.url}/healthz`)).status, 200);
  const nf = await errorOf(q(`to=${f.reg.host}/nope:v1`), auth);
  t.deepEqual([nf.status, nf.code], [404, 'SL_ERR_OCI_NOT_FOUND']);
  t.true(JSON.stringify(nf.detail).includes('nope'), 'names the image');
  t.deepEqual(await errorOf(q(''), auth).then((e) => [e.status, e.code]), [400, 'SL_ERR_INVALID_ARGUMENT']);
  t.deepEqual(await errorOf(q(`to=${f.reg.host}/app:v1&have=junk`), auth).then((e) => [e.status, e.code]), [400, 'SL_ERR_INVALID_ARGUMENT']);
  t.deepEqual(await errorOf(q(`to=${f.reg.host}/app:v1&from=-1`), auth).then((e) => [e.status, e.code]), [400, 'SL_ERR_INVALID_ARGUMENT']);
  t.deepEqual(await errorOf(q('to=bad::ref'), auth).then((e) => [e.status, e.code]), [400, 'SL_ERR_OCI_REFERENCE']);
  t.deepEqual(await errorOf(q('to=other.example:5000/app:v1'), auth).then((e) => [e.status, e.code]), [403, 'SL_ERR_PROXY_REGISTRY_NOT_ALLOWED']);
  // a ref without a host goes to the first --registry
  const d = await fetchDelta(p.url, { to: 'app:v1' }, auth.headers);
  t.is(d.header.manifestDigest, f.v1Digest);
  // tocs=br: the same TOCs once decoded; any other TOC encoding is refused.
  const tocsOf = (x: typeof d): string[] => x.header.layers.map((l) => `${l.diffID} ${Buffer.from(l.toc).toString('hex')}`);
  t.deepEqual(tocsOf(await fetchDelta(p.url, { to: 'app:v1', tocs: 'br' }, auth.headers)), tocsOf(d));
  t.true(d.header.layers.length > 0);
  t.deepEqual(await errorOf(q(`to=${f.reg.host}/app:v1&tocs=gzip`), auth).then((e) => [e.status, e.code]), [400, 'SL_ERR_INVALID_ARGUMENT']);
  t.deepEqual(await errorOf(`${p.url}/v1/content/sha256:${'0'.repeat(64)}`, auth).then((e) => [e.status, e.code]), [404, 'SL_ERR_PROXY_CONTENT_NOT_FOUND']);
});

test('errors: 502 when the registry is down; bad config exits with a usage code', async (t) => {
  const port = await freePort();
  const p = await startProxyProcess(t, ['--registry', `http://127.0.0.1:${port}`, '--listen', '127.0.0.1:0', '--data', tempDir(t)]);
  const e = await errorOf(`${p.url}/v1/delta?to=app:v1`);
  t.deepEqual([e.status, e.code], [502, 'SL_ERR_OCI_UNREACHABLE']);
  t.is((await metrics(p.url)).get('starlight_proxy_registry_errors_total'), 1);
  const bad = await runCli(['proxy', '--registry', 'x', '--cache-size', 'lots']);
  t.is(bad.code, 64, bad.stderr);
});

test('TLS with --tls-cert/--tls-key; `starlight notify` indexes ahead of the first delta', async (t) => {
  const f = await fixture(t);
  const dir = tempDir(t);
  const { cert, key } = selfSignedCert(dir, 'proxy');
  const p = await startProxyProcess(t, proxyArgs(t, f.reg, ['--tls-cert', cert, '--tls-key', key]));
  t.true(p.url.startsWith('https://'));
  const ca = readFileSync(cert);
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    https
      .get(`${p.url}/healthz`, { ca }, (res) => {
        let b = '';
        res.on('data', (d: Buffer) => (b += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
      })
      .on('error', reject);
  });
  t.deepEqual([status, body], [200, 'ok\n']);

  const plain = await startProxyProcess(t, proxyArgs(t, f.reg));
  const out = execFileSync(process.execPath, [join(ROOT, 'bin/starlight.js'), 'notify', 'app:v1', '--proxy', plain.url], { encoding: 'utf8' });
  t.is((JSON.parse(out) as { manifestDigest: string }).manifestDigest, f.v1Digest);
  t.is((await metrics(plain.url)).get('starlight_proxy_layers_indexed_total'), 2);
  await fetchDelta(plain.url, { to: `${f.reg.host}/app:v1` });
  t.is((await metrics(plain.url)).get('starlight_proxy_layers_indexed_total'), 2, 'delta reused the index');
});

test('a failure after the header arrives as an ERROR frame carrying the cause', async (t) => {
  const f = await fixture(t);
  const p = await startProxyProcess(t, proxyArgs(t, f.reg, ['--cache-size', '800KiB']));
  await fetchDelta(p.url, { to: `${f.reg.host}/app:v1` });
  await pushLayers(f.reg.host, 'other:v1', [makeLayer(t, { 'data/blob': randomBytes(500 * 1024) })]);
  await fetchDelta(p.url, { to: `${f.reg.host}/other:v1` });
  await f.reg.stop();
  // by digest: the manifest comes from the store, so the header goes out; an evicted item then fails
  const err = await t.throwsAsync(fetchDelta(p.url, { to: `${f.reg.host}/app@${f.v1Digest}` }));
  t.is((err as { code?: string }).code, 'SL_ERR_OCI_UNREACHABLE');
  t.is((await metrics(p.url)).get('starlight_proxy_deltas_failed_total'), 1);
});
