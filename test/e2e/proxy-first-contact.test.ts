/**
 * Issue 10 (first contact) and issue 11's proxy side, against a real `starlight proxy` process and a
 * real docker-registry:
 * - POST /v1/sessions/<id>/next: with a consumer that stops reading, a bumped item at the end of the
 *   stream arrives before the items queued ahead of it; the endpoint's 204/400/401/404 answers;
 * - /v1/content/<digest> of an image being indexed for the first time waits for it;
 * - a file over the in-memory send-time limit is sent brotli-encoded (through a temp file) and intact,
 *   to a delta client and to a mount;
 * - failed first indexes (layer blob missing, blob corrupt mid-layer, registry unreachable): every
 *   waiting client gets an HTTP error naming the image and the layer (a client with image=1 an HTTP
 *   error or, once the IMAGE frame went out, an ERROR frame naming them); no image row, no row of the
 *   failed layer, no staged or temp file survives; after a repair the same image indexes;
 * - image=1 ("Image first"): the IMAGE frame comes first and equals the header's image, on first
 *   contact and from a warm proxy (issue 19, session 11); a failed first index after it ends with an
 *   ERROR frame naming image and layer; the header lists every content of the image, and `early=1`
 *   (early items, retired in session 13) changes nothing; a mount through a cold proxy has every
 *   file's bytes.
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { DeltaDecoder, HTTP_HEADER_SESSION, SESSION_ID_RE, decodeDelta } from '../../src/protocol/index.js';
import { STORE_FILE } from '../../src/proxy/store.js';
import { blobDataPath, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { mountSupported, startMount } from './mount-support.js';
import { type BuiltLayer, fetchDelta, makeLayer, metrics, pushLayers, sha256, startProxyProcess } from './proxy-support.js';

const TOKEN = 'first-contact-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };
/** Files in the many-items image and their size: ~24 MB, far more than socket buffers hold. */
const FILES = 120;
const FILE_BYTES = 200 * 1024;
/** Bound on polling loops, ms. */
const POLL_MS = 60_000;

function startProxy(t: ExecutionContext, reg: TestRegistry, data = tempDir(t, 'sl-first-')): ReturnType<typeof startProxyProcess> {
  const tokenFile = join(tempDir(t, 'sl-tok-'), 'tokens');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  return startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', data, '--token-file', tokenFile]);
}

/** A GET whose body is read only when asked (res is paused). */
function getPaused(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: AUTH }, (res) => {
      res.pause();
      resolve(res);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * POST …/next on a connection of its own: a reused keep-alive socket can be closed by the server's
 * idle timer just as it is reused on a loaded machine (ECONNRESET), which is not what this test checks.
 */
function bump(proxyUrl: string, id: string, body: unknown, headers: Record<string, string> = AUTH): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const req = request(`${proxyUrl}/v1/sessions/${id}/next`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

test('a bumped item near the end arrives before the items queued ahead of it; the endpoint answers 204/400/401/404', async (t) => {
  const reg = await startRegistry(t);
  const spec: Record<string, Buffer> = {};
  for (let i = 0; i < FILES; i++) spec[`data/f${String(i).padStart(3, '0')}`] = randomBytes(FILE_BYTES);
  await pushLayers(reg.host, 'many:v1', [makeLayer(t, spec)]);
  const p = await startProxy(t, reg);

  const res = await getPaused(`${p.url}/v1/delta?to=${reg.host}/many:v1`);
  t.is(res.statusCode, 200);
  const id = res.headers[HTTP_HEADER_SESSION] as string;
  t.regex(id, SESSION_ID_RE);
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const dec = new DeltaDecoder();
  let items = 0;
  const completed: number[] = [];
  const pull = async (): Promise<boolean> => {
    const n = await chunks.next();
    if (n.done === true) return false;
    for (const ev of dec.push(n.value)) {
      if (ev.type === 'header') items = ev.header.items.length;
      else if (ev.type === 'chunk' && ev.last) completed.push(ev.index);
    }
    return true;
  };
  while (items === 0 && (await pull()));
  t.is(items, FILES);
  const last = FILES - 1;

  // The consumer reads nothing meanwhile: the proxy has filled the socket and waits mid-stream.
  t.is((await bump(p.url, id, { items: [FILES] })).status, 400, 'index out of range');
  t.is((await bump(p.url, id, '{"items":"7"}')).status, 400, 'bad body');
  t.is((await bump(p.url, id, 'not json')).status, 400, 'not JSON');
  t.is((await bump(p.url, id, { items: Array.from({ length: 1025 }, () => 0) })).status, 400, 'too many');
  t.is((await bump(p.url, id, { items: [last] }, {})).status, 401, 'no token');
  t.is((await bump(p.url, 'nosuchsession', { items: [last] })).status, 404, 'unknown session');
  const ok = await bump(p.url, id, { items: [last, last - 1] });
  t.is(ok.status, 204);

  while (await pull());
  dec.finish();
  t.true(dec.isDone());
  t.is(completed.length, FILES, 'every item exactly once');
  t.is(new Set(completed).size, FILES);
  const pos = completed.indexOf(last);
  t.log(`bumped item ${last} arrived as item #${pos + 1} of ${FILES}`);
  t.true(pos < FILES - 20, `the bumped item arrived before at least 20 items queued ahead of it (it came #${pos + 1})`);
  t.is(completed[pos + 1], last - 1, 'the bump list is sent in its order');
  t.is((await bump(p.url, id, { items: [0] })).status, 404, 'a finished session is gone');
});

test('/v1/content/<digest> of an image being indexed for the first time waits for it', async (t) => {
  const reg = await startRegistry(t);
  const wanted = randomBytes(3 << 20);
  const spec: Record<string, Buffer> = { 'app/wanted.bin': wanted };
  for (let i = 0; i < 20; i++) spec[`data/f${i}`] = randomBytes(1 << 20);
  await pushLayers(reg.host, 'big:v1', [makeLayer(t, spec)]);
  const p = await startProxy(t, reg);
  const delta = fetchDelta(p.url, { to: `${reg.host}/big:v1` }, AUTH);
  const deadline = Date.now() + POLL_MS;
  while (((await metrics(p.url)).get('starlight_proxy_registry_blob_fetches_total') ?? 0) < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const res = await fetch(`${p.url}/v1/content/${sha256(wanted)}`, { headers: AUTH });
  t.is(res.status, 200);
  t.is(res.headers.get('starlight-encoding'), 'identity', 'random bytes do not compress');
  // Buffer.equals, not t.deepEqual: ava compares a Buffer byte by byte (3 MiB: 6–13 s of this process's one
  // thread under load), which stalls the other tests of this file, run concurrently in the same process: a
  // fetch deadline of theirs that passes meanwhile fires before their answer, already received, is read.
  t.true(Buffer.from(await res.arrayBuffer()).equals(wanted), 'the content as pushed');
  t.is((await delta).contents.size, 21);
});

test('a large compressible file on first contact arrives brotli-encoded and intact (a delta, then a mount of a fresh proxy); a random one identity; no temp file stays', async (t) => {
  const reg = await startRegistry(t);
  // 24 MiB of hex text: over the proxy's in-memory send-time limit (16 MiB), brotli q1 takes it to ~half.
  const big = Buffer.from(randomBytes(12 << 20).toString('hex'));
  const random = randomBytes(18 << 20);
  await pushLayers(reg.host, 'large:v1', [makeLayer(t, { 'data/big.txt': big, 'data/random.bin': random, 'etc/conf': 'x=1\n' })]);
  const image = `${reg.host}/large:v1`;
  const data = tempDir(t, 'sl-first-');
  const p = await startProxy(t, reg, data);
  const d = await fetchDelta(p.url, { to: image, deferred: '1' }, AUTH); // checks every item's digest
  const bi = d.header.items.findIndex((i) => i.digest === sha256(big));
  const ri = d.header.items.findIndex((i) => i.digest === sha256(random));
  t.true(d.header.deferred?.includes(bi), 'first contact: the large item is deferred');
  t.is(d.header.items[bi]!.encoding, 'br');
  t.true(d.header.items[bi]!.encodedSize < big.length * 0.9, `encoded ${d.header.items[bi]!.encodedSize} of ${big.length}`);
  t.true(d.contents.get(bi)!.equals(big));
  t.is(d.header.items[ri]!.encoding, 'identity', 'random bytes do not compress');
  const bound = big.length * 0.9 + random.length + (1 << 20);
  t.true(d.wireBytes < bound, `${d.wireBytes} bytes on the wire`);
  t.deepEqual(
    readdirSync(join(data, 'staging')).filter((f) => f.endsWith('.tmp')),
    [],
    'no send-time temp file stays',
  );

  if (!mountSupported) return;
  // A worker (chunk digests checked as the decoded bytes arrive) gets the same from a proxy that never saw the image.
  const p2 = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-first-')]);
  const m = await startMount(t, p2.url, image);
  await m.waitForLine(/^complete$/, POLL_MS);
  t.true(readFileSync(join(m.mountpoint, 'data/big.txt')).equals(big));
  t.true(readFileSync(join(m.mountpoint, 'data/random.bin')).equals(random));
  const deadline = Date.now() + POLL_MS;
  let sent = 0;
  while ((sent = (await metrics(p2.url)).get('starlight_proxy_delta_bytes_sent_total') ?? 0) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.true(sent > 0 && sent < bound, `the mount's stream sent ${sent} bytes`);
});

test('image=1 on first contact and warm: the IMAGE frame comes first, the header lists every content, early=1 (retired) changes nothing; a mount through a cold proxy has every file', async (t) => {
  const reg = await startRegistry(t);
  // Layer 1: a few small files. Layer 2: 48 MiB of text that keeps the index pass busy after the image resolved.
  const files: Record<string, Buffer> = {
    'bin/app': Buffer.from('#!/bin/sh\necho app\n'.repeat(50)),
    'lib/x86_64-linux-gnu/libc.so.6': Buffer.from('libc '.repeat(40_000)),
    'usr/share/doc/readme.txt': Buffer.from('docs '.repeat(1000)),
  };
  const data: Record<string, Buffer> = {};
  for (let i = 0; i < 48; i++) data[`data/part${String(i).padStart(2, '0')}.txt`] = Buffer.from(randomBytes(512 * 1024).toString('hex'));
  await pushLayers(reg.host, 'first:v1', [makeLayer(t, files), makeLayer(t, data)]);
  const image = `${reg.host}/first:v1`;
  const all = [...new Set(Object.values({ ...files, ...data }).map((b) => sha256(b)))].sort();
  const p = await startProxy(t, reg);
  // early=1, as a worker from before session 13 with --early-items on asks: ignored (an EARLY frame
  // would fail the decoder: its type is reserved now).
  const d = await fetchDelta(p.url, { to: image, deferred: '1', early: '1', image: '1' }, AUTH); // every item verified
  // image=1: the image came first (IMAGE frame), the header's own.
  const { ref, platform, manifestDigest, manifestMediaType, diffIDs } = d.header;
  t.like(d.image, { ref, platform, manifestDigest, manifestMediaType, diffIDs });
  t.true(Buffer.from(d.image!.manifest).equals(Buffer.from(d.header.manifest)) && Buffer.from(d.image!.config).equals(Buffer.from(d.header.config)));
  t.deepEqual(d.header.items.map((i) => i.digest).sort(), all, 'the header lists every content of the image');
  t.false((await metrics(p.url)).has('starlight_proxy_early_items_sent_total'), 'the early-items metric is gone');
  // The image is indexed now: the IMAGE frame still first (the worker's containerd calls overlap the
  // planning); with early=1 or without, the same items.
  const warm = await fetchDelta(p.url, { to: image, deferred: '1', early: '1', image: '1' }, AUTH);
  t.like(warm.image, { ref, platform, manifestDigest, manifestMediaType, diffIDs }, 'a warm proxy sends the IMAGE frame too');
  t.true(Buffer.from(warm.image!.manifest).equals(Buffer.from(warm.header.manifest)) && Buffer.from(warm.image!.config).equals(Buffer.from(warm.header.config)));
  t.deepEqual(warm.header.items.map((i) => i.digest).sort(), all);
  const plain = await fetchDelta(p.url, { to: image, deferred: '1', image: '1' }, AUTH);
  t.deepEqual(plain.header.items.map((i) => i.digest).sort(), all, 'without early=1: the same items');

  if (!mountSupported) return;
  // Through a proxy that never saw the image, every file's bytes.
  const p2 = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-first-')]);
  const m = await startMount(t, p2.url, image);
  await m.waitForLine(/^complete$/, POLL_MS);
  for (const [path, b] of Object.entries({ ...files, ...data })) t.true(readFileSync(join(m.mountpoint, path)).equals(b), path);
});

interface FailureCase {
  name: string;
  /** Breaks the registry after the push; returns how to repair it (or undefined: no repair). */
  breakIt(reg: TestRegistry, layer: BuiltLayer, layerDigest: string): (() => void) | undefined;
  status: number[];
  /** The message must name the layer (not possible when the registry is unreachable before the manifest). */
  namesLayer: boolean;
}

const CASES: FailureCase[] = [
  {
    name: 'layer blob 404',
    breakIt: (reg, _l, digest) => {
      const path = blobDataPath(reg, digest);
      renameSync(path, `${path}.away`);
      return () => renameSync(`${path}.away`, path);
    },
    status: [404, 502],
    namesLayer: true,
  },
  {
    name: 'digest mismatch mid-layer',
    breakIt: (reg, _l, digest) => {
      const path = blobDataPath(reg, digest);
      const good = readFileSync(path);
      const bad = Buffer.from(good);
      for (let i = bad.length >> 1; i < (bad.length >> 1) + 64; i++) bad[i]! ^= 0x5a;
      writeFileSync(path, bad);
      return () => writeFileSync(path, good);
    },
    status: [502],
    namesLayer: true,
  },
  {
    name: 'registry unreachable',
    breakIt: () => undefined,
    status: [502],
    namesLayer: false,
  },
];

for (const c of CASES) {
  test(`failed first index (${c.name}): every waiting client gets an error naming image and layer; nothing half-indexed survives`, async (t) => {
    const reg = await startRegistry(t);
    const good = makeLayer(t, { 'bin/app': randomBytes(100_000), 'etc/conf': 'x=1\n' });
    const broken = makeLayer(t, Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`lib/f${i}.so`, randomBytes(200_000)])));
    await pushLayers(reg.host, 'app:v1', [good, broken]);
    const manifest = await (await fetch(`${reg.url}/v2/app/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json();
    const brokenDigest = (manifest as { layers: { digest: string }[] }).layers[1]!.digest;
    const data = tempDir(t, 'sl-first-');
    const p = await startProxy(t, reg, data);
    const repair = c.breakIt(reg, broken, brokenDigest);
    if (c.name === 'registry unreachable') await reg.stop();
    const image = `${reg.host}/app:v1`;

    const answers = await Promise.all(
      Array.from({ length: 3 }, async () => {
        const r = await fetch(`${p.url}/v1/delta?to=${image}`, { headers: AUTH });
        return { status: r.status, body: (await r.json()) as { errors: { code: string; message: string }[] } };
      }),
    );
    // A client with image=1 (after the others' runs: a new index run) gets the IMAGE frame once the
    // manifest resolved, then the error as an ERROR frame.
    let imageFrames = 0;
    const imageAnswer = await (async () => {
      const r = await fetch(`${p.url}/v1/delta?to=${image}&image=1`, { headers: AUTH });
      if (r.status !== 200) return { status: r.status, message: ((await r.json()) as { errors: { message: string }[] }).errors[0]!.message };
      try {
        for await (const ev of decodeDelta(r.body as unknown as AsyncIterable<Uint8Array>)) {
          t.is(ev.type, 'image', 'no header for an image that failed');
          if (ev.type === 'image') imageFrames++;
        }
      } catch (err) {
        return { status: 200, message: (err as Error).message };
      }
      return { status: 200, message: 'stream ended without an error' };
    })();
    t.log(`image=1: HTTP ${imageAnswer.status}, ${imageFrames} IMAGE frame(s): ${imageAnswer.message}`);
    // The manifest resolves unless the registry is unreachable: the IMAGE frame went out before the failing layer.
    if (c.namesLayer) t.is(imageFrames, 1);
    t.true(imageAnswer.status === 200 || c.status.includes(imageAnswer.status), `HTTP ${imageAnswer.status}`);
    t.true(imageAnswer.message.includes(image), `names the image: ${imageAnswer.message}`);
    if (c.namesLayer) t.true(imageAnswer.message.includes(brokenDigest), `names the layer: ${imageAnswer.message}`);
    for (const a of answers) {
      t.true(c.status.includes(a.status), `HTTP ${a.status}: ${JSON.stringify(a.body)}`);
      const msg = a.body.errors[0]!.message;
      t.true(msg.includes(image), `names the image: ${msg}`);
      if (c.namesLayer) t.true(msg.includes(brokenDigest), `names the layer: ${msg}`);
    }
    t.log(answers[0]!.body.errors[0]);

    // Nothing half-indexed: no image row, no row of the broken layer, no staged or temp file.
    const db = new Database(join(data, STORE_FILE), { readonly: true });
    t.teardown(() => db.close());
    t.is((db.prepare('SELECT count(*) AS n FROM images').get() as { n: number }).n, 0);
    t.is((db.prepare('SELECT count(*) AS n FROM layers WHERE diff_id = ?').get(broken.diffID) as { n: number }).n, 0);
    const contentsOfBroken = db.prepare('SELECT count(*) AS n FROM contents WHERE source_diff_id = ?').get(broken.diffID) as { n: number };
    t.is(contentsOfBroken.n, 0);
    // The healthy layer indexed fine: its stage lives until the background encoder has cached it.
    const deadline = Date.now() + POLL_MS;
    while (readdirSync(join(data, 'staging')).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    t.deepEqual(readdirSync(join(data, 'staging')), []);
    t.deepEqual(readdirSync(join(data, 'content', 'tmp')), []);

    if (repair !== undefined) {
      repair();
      const d = await fetchDelta(p.url, { to: image }, AUTH);
      t.is(d.contents.size, 32, 'after the repair the image indexes and streams');
    }
  });
}
