/**
 * Issue 14, proxy side, against a real `starlight proxy` process and a real docker-registry: hostile
 * layers built by the test (test/helpers/hostile-layers.ts) get a typed error naming image, layer
 * and limit (HTTP 503 resource-exhausted for limits, 502 bad data for corrupt input, never 500), the
 * proxy's peak RSS (/proc/<pid>/status VmHWM) and its data dir stay bounded, /healthz keeps
 * answering while a layer of very many entries is indexed, and the proxy still serves afterwards.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { RegistryClient } from '../../src/oci/client.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { duBytes } from '../../bench/drivers/proc.js';
import { pushImage } from '../../fixtures/push-image.js';
import { healthzWhile } from '../helpers/healthz.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { END_OF_ARCHIVE, fileEntry, gzipRepeat, padding, paxHeader, paxRecord, tarHeader, zstdRawFrame, zstdRleFrame } from '../helpers/hostile-layers.js';
import { fetchDelta, peakRssKb, startProxyProcess } from './proxy-support.js';

const TOKEN = 'hostile-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const MIB = 1024 * 1024;
const GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
/**
 * Bound on the proxy's peak RSS over the whole test, MiB (measured 139-221 MiB under load). The
 * 'g'-xattr layer here repeats one name, so before issue 14 its 25 600 copies of 60 KiB were dropped
 * as duplicates replaced each other (measured 119 MiB); with distinct names they would all be kept.
 */
const RSS_BOUND_MIB = 600;
/** --cache-size and --staging-size of the proxy under test; its data dir must stay within their sum (+ store). */
const CACHE = 128 * MIB;
const STAGING = 64 * MIB;
/** Entries of the large well-formed layer (the largest bench layer, postgres's, has ~40 000). */
const MANY = 20_000;

interface Layer {
  data: Buffer;
  mediaType: string;
  diffID: string;
}

async function push(reg: TestRegistry, name: string, layers: Layer[]): Promise<string> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) } }));
  await pushImage(new RegistryClient(), `${reg.host}/${name}:v1`, { config, layers: layers.map((l) => ({ data: l.data, mediaType: l.mediaType })) });
  return `${reg.host}/${name}:v1`;
}

interface ErrorAnswer {
  status: number;
  code: string;
  message: string;
  detail: Record<string, unknown>;
}

async function deltaError(url: string, ref: string): Promise<ErrorAnswer> {
  const res = await fetch(`${url}/v1/delta?to=${encodeURIComponent(ref)}`, { headers: AUTH, signal: AbortSignal.timeout(240_000) });
  const body = (await res.json()) as { errors: { code: string; message: string; detail: Record<string, unknown> }[] };
  return { status: res.status, ...body.errors[0]! };
}

test('hostile layers: typed errors naming image, layer and limit; bounded RSS and disk; /healthz answers; the proxy serves on', async (t) => {
  t.timeout(900_000);
  const reg = await startRegistry(t);
  const data = tempDir(t, 'sl-hostile-');
  const tokenFile = join(tempDir(t, 'sl-tok-'), 'tokens');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  const proxy = await startProxyProcess(t, [
    '--registry', reg.url, '--listen', '127.0.0.1:0', '--data', data, '--token-file', tokenFile,
    '--cache-size', String(CACHE), '--staging-size', String(STAGING), '--max-layer-size', '256MiB',
  ]);

  const cases: { name: string; layer: Layer; status: number; code: string; limit?: string }[] = [];
  // 1. A 'g' header with a 60 KiB xattr followed by 25 600 entries (each would carry it).
  {
    const g = paxHeader('g', [paxRecord('SCHILY.xattr.user.big', Buffer.alloc(60 * 1024, 0x61))]);
    const r = gzipRepeat(g, Buffer.concat(Array<Buffer>(128).fill(fileEntry('same'))), 200, END_OF_ARCHIVE);
    cases.push({ name: 'g-xattrs', layer: { data: r.blob, mediaType: GZIP, diffID: r.diffID }, status: 503, code: 'SL_ERR_IMAGE_LIMIT', limit: 'maxMetadataBytes' });
  }
  // 2. 'x' headers piling up (1 MiB each, 64 of them) before one entry.
  {
    const x = paxHeader('x', [paxRecord('comment', 'c'.repeat(MIB - 64))]);
    const r = gzipRepeat(Buffer.alloc(0), x, 64, Buffer.concat([fileEntry('f'), END_OF_ARCHIVE]));
    cases.push({ name: 'x-pile', layer: { data: r.blob, mediaType: GZIP, diffID: r.diffID }, status: 503, code: 'SL_ERR_IMAGE_LIMIT', limit: 'maxExtendedHeaderBytes' });
  }
  // 3. A zstd bomb: 2 GiB of zeros from 64 KiB of RLE blocks.
  {
    const blocks = 16_384;
    const size = blocks * 128 * 1024;
    const blob = Buffer.concat([zstdRawFrame(tarHeader('zeros', { size })), zstdRleFrame(17, blocks), zstdRawFrame(END_OF_ARCHIVE)]);
    cases.push({ name: 'zstd-bomb', layer: { data: blob, mediaType: ZSTD, diffID: sha256Digest(Buffer.from('x')) }, status: 503, code: 'SL_ERR_IMAGE_LIMIT', limit: 'maxRatio' });
  }
  // 4. A zstd frame declaring a 1 GiB window (fzstd would allocate it and move it per block).
  cases.push({ name: 'zstd-window', layer: { data: zstdRleFrame(30, 1024), mediaType: ZSTD, diffID: sha256Digest(Buffer.from('y')) }, status: 503, code: 'SL_ERR_IMAGE_LIMIT', limit: 'maxZstdWindowBytes' });
  // 5. A gzip bomb (3 MB → 3 GiB of zeros in one file) over --max-layer-size 256MiB.
  {
    const size = 3 * 1024 * MIB;
    const r = gzipRepeat(tarHeader('zeros', { size }), Buffer.alloc(MIB), 3 * 1024, Buffer.concat([padding(size), END_OF_ARCHIVE]));
    cases.push({ name: 'gzip-bomb', layer: { data: r.blob, mediaType: GZIP, diffID: r.diffID }, status: 503, code: 'SL_ERR_IMAGE_LIMIT', limit: 'maxUncompressedBytes' });
  }
  // 6. Garbage: bad data (502), never "internal" (500).
  cases.push({ name: 'garbage-gzip', layer: { data: Buffer.concat([Buffer.from([0x1f, 0x8b]), randomBytes(4096)]), mediaType: GZIP, diffID: sha256Digest(Buffer.from('z')) }, status: 502, code: 'SL_ERR_IMAGE_BAD_COMPRESSION' });
  {
    const tar = randomBytes(8192);
    cases.push({ name: 'garbage-tar', layer: { data: gzipSync(tar), mediaType: GZIP, diffID: sha256Digest(tar) }, status: 502, code: 'SL_ERR_IMAGE_BAD_TAR' });
  }

  for (const c of cases) {
    const ref = await push(reg, c.name, [c.layer]);
    const pending = deltaError(proxy.url, ref);
    const health = await healthzWhile(proxy.url, pending);
    t.is(health.failed, undefined, `${c.name}: ${health.failed ?? ''}`);
    const e = await pending;
    t.log(`${c.name}: blob ${c.layer.data.length} B → HTTP ${e.status} ${e.code}; /healthz slowest ${health.maxMs.toFixed(0)} ms over ${health.polls} polls; peak RSS ${(peakRssKb(proxy.pid) / 1024).toFixed(0)} MiB`);
    t.is(e.status, c.status, `${c.name}: ${e.message}`);
    t.is(e.code, c.code, `${c.name}: ${e.message}`);
    t.true(e.message.includes(ref) && e.message.includes(sha256Digest(c.layer.data)), `${c.name} names image and layer: ${e.message}`);
    if (c.limit !== undefined) {
      t.is(e.detail.limit, c.limit, c.name);
      t.true(e.message.includes(c.limit), `${c.name} names the limit: ${e.message}`);
    }
  }

  // 7. Very many entries (20 000 distinct files): indexes and is served; /healthz is polled meanwhile
  // and its slowest answer (or failure) logged here; the 1 s bound is asserted on a 60 000-file image
  // by proxy-health.test.ts.
  {
    const parts: Buffer[] = [];
    for (let i = 0; i < MANY; i++) parts.push(fileEntry(`d${i % 100}/f${i}`, Buffer.from(String(i))));
    parts.push(END_OF_ARCHIVE);
    const tar = Buffer.concat(parts);
    const ref = await push(reg, 'many', [{ data: gzipSync(tar, { level: 1 }), mediaType: GZIP, diffID: sha256Digest(tar) }]);
    const t0 = performance.now();
    const pending = fetchDelta(proxy.url, { to: ref }, AUTH).catch((err: unknown) => {
      throw new Error(`delta of ${ref} failed after ${(performance.now() - t0).toFixed(0)} ms: ${String(err)}; proxy log tail: ${proxy.stderr().slice(-2000)}`);
    });
    const health = await healthzWhile(proxy.url, pending, { deadlineMs: 60_000 });
    const d = await pending;
    t.log(`many: ${MANY} entries → ${d.header.items.length} items; /healthz slowest ${health.maxMs.toFixed(0)} ms over ${health.polls} polls${health.failed ? ` (${health.failed})` : ''}; peak RSS ${(peakRssKb(proxy.pid) / 1024).toFixed(0)} MiB`);
    t.true(d.header.items.length > 0);
  }

  const peak = peakRssKb(proxy.pid) / 1024;
  const disk = await duBytes([data]);
  t.log(`proxy peak RSS ${peak.toFixed(0)} MiB (bound ${RSS_BOUND_MIB}); data dir ${(disk / MIB).toFixed(1)} MiB (cache ${CACHE / MIB} + staging ${STAGING / MIB} MiB)`);
  t.true(peak < RSS_BOUND_MIB, `peak RSS ${peak.toFixed(0)} MiB`);
  t.true(disk < CACHE + STAGING + 256 * MIB, `data dir ${disk} bytes`);
  t.is((await fetch(`${proxy.url}/healthz`)).status, 200);
});
