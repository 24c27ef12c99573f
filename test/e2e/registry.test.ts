/**
 * RegistryClient against a real docker-registry: push, resolve (manifest and index), verified and
 * ranged blob reads, corruption, not-found and unreachable errors.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { hasCode } from '../../src/errors.js';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage, pushIndex } from '../../fixtures/push-image.js';
import { MEDIA_TYPES, type Platform } from '../../src/oci/types.js';
import { blobDataPath, freePort, startFront, startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';

/** Bound for each e2e test (registry start + a few requests). */
const TEST_TIMEOUT = '60s';

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function configFor(p: Platform): Buffer {
  return Buffer.from(
    JSON.stringify({ architecture: p.architecture, os: p.os, variant: p.variant, rootfs: { type: 'layers', diff_ids: [`sha256:${'0'.repeat(64)}`] } }),
  );
}

function client(): RegistryClient {
  return new RegistryClient({ credentials: {}, retryBaseMs: 10, timeoutMs: 5000 });
}

test('push then resolve, whole and ranged blob reads', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const c = client();
  const layer1 = randomBytes(300_000);
  const dir = tempDir(t);
  const layer2Path = join(dir, 'layer2');
  const layer2 = randomBytes(70_000);
  writeFileSync(layer2Path, layer2);
  const ref = `${reg.host}/test/app:v1`;
  const pushed = await pushImage(c, ref, {
    config: configFor({ os: 'linux', architecture: 'amd64' }),
    layers: [
      { data: layer1, mediaType: MEDIA_TYPES.ociLayerGzip },
      { data: layer2Path, mediaType: MEDIA_TYPES.ociLayer },
    ],
  });
  t.false(await c.pushBlob(ref, layer1, pushed.manifest.layers[0]), 'second push of a blob is skipped');
  t.deepEqual(await c.listTags(`${reg.host}/test/app`), ['v1']);

  const img = await c.resolve(ref, 'linux/amd64');
  t.is(img.manifestDigest, pushed.digest);
  t.is(img.indexDigest, undefined);
  t.deepEqual(img.platform, { os: 'linux', architecture: 'amd64' });
  t.is(img.manifestMediaType, MEDIA_TYPES.ociManifest);
  t.deepEqual(img.manifestBytes, pushed.manifestBytes);
  t.is(img.manifest.layers.length, 2);
  t.is(img.config.os, 'linux');

  const byDigest = await c.resolve(`${reg.host}/test/app@${pushed.digest}`);
  t.is(byDigest.manifestDigest, pushed.digest);

  const [d1, d2] = img.manifest.layers;
  t.deepEqual(await readAll(await c.fetchBlob(ref, d1)), layer1);
  t.deepEqual(await readAll(await c.fetcher(ref).fetch(d2)), layer2);
  const part = await readAll(await c.fetchBlob(ref, d1, { range: { start: 1000, end: 70_000 } }));
  t.deepEqual(part, layer1.subarray(1000, 70_000));
  const last = await readAll(await c.fetchBlob(ref, d1, { range: { start: d1.size - 1, end: d1.size } }));
  t.deepEqual(last, layer1.subarray(d1.size - 1));
  const err = await t.throwsAsync(c.fetchBlob(ref, d1, { range: { start: 10, end: d1.size + 1 } }));
  t.true(hasCode(err, 'SL_ERR_INVALID_ARGUMENT'));
  t.deepEqual(await c.headBlob(ref, d2.digest), { digest: d2.digest, size: d2.size });
  t.is(await c.headBlob(ref, `sha256:${'1'.repeat(64)}`), undefined);
});

test('index with two platforms: selection, and SL_ERR_OCI_PLATFORM naming what exists', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const c = client();
  const amd: Platform = { os: 'linux', architecture: 'amd64' };
  const arm: Platform = { os: 'linux', architecture: 'arm64', variant: 'v8' };
  const a = await pushImage(c, `${reg.host}/multi:amd64`, { config: configFor(amd), layers: [{ data: randomBytes(100), mediaType: MEDIA_TYPES.ociLayer }] });
  const b = await pushImage(c, `${reg.host}/multi:arm64`, {
    config: configFor(arm),
    layers: [{ data: randomBytes(100), mediaType: MEDIA_TYPES.dockerLayerGzip }],
    manifestMediaType: MEDIA_TYPES.dockerManifest,
  });
  const idx = await pushIndex(c, `${reg.host}/multi:latest`, [
    { descriptor: a.descriptor, platform: amd },
    { descriptor: b.descriptor, platform: arm },
  ]);
  const ia = await c.resolve(`${reg.host}/multi`, 'linux/amd64');
  t.is(ia.manifestDigest, a.digest);
  t.is(ia.indexDigest, idx.digest);
  const ib = await c.resolve(`${reg.host}/multi`, { os: 'linux', architecture: 'arm64' });
  t.is(ib.manifestDigest, b.digest);
  t.is(ib.manifestMediaType, MEDIA_TYPES.dockerManifest);
  t.deepEqual(ib.platform, arm);
  const err = await t.throwsAsync(c.resolve(`${reg.host}/multi`, 'linux/s390x'));
  t.true(hasCode(err, 'SL_ERR_OCI_PLATFORM'), String(err));
  t.deepEqual((err as { details?: { available?: string[] } }).details?.available, ['linux/amd64', 'linux/arm64/v8']);
  const single = await t.throwsAsync(c.resolve(`${reg.host}/multi:amd64`, 'linux/arm64'));
  t.true(hasCode(single, 'SL_ERR_OCI_PLATFORM'), 'an explicit platform is checked for a single manifest too');
});

test('a config the caller holds is not fetched again; bytes that do not match the manifest are', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const front = await startFront(t, reg.host);
  const c = client();
  const config = configFor({ os: 'linux', architecture: 'amd64' });
  const pushed = await pushImage(c, `${reg.host}/k:1`, { config, layers: [] });
  const ref = `${front.host}/k:1`;
  const configGets = (): number => front.requests.filter((r) => r.startsWith('GET ') && r.includes(`/blobs/${pushed.manifest.config.digest}`)).length;

  const first = await c.resolve(ref, 'linux/amd64');
  t.is(configGets(), 1);
  const known = await c.resolve(ref, 'linux/amd64', undefined, (d) => (d === first.manifestDigest ? first.configBytes : undefined));
  t.is(configGets(), 1, 'the held config was used');
  t.true(known.configBytes.equals(config));
  t.deepEqual(known.config, first.config);
  // Held bytes of another blob (a stale or corrupt record) are ignored: the registry's config is used.
  const forged = Buffer.from(config.toString().replace('amd64', 'arm64'));
  const checked = await c.resolve(ref, 'linux/amd64', undefined, () => forged);
  t.is(configGets(), 2, 'mismatching held bytes were not trusted');
  t.true(checked.configBytes.equals(config));
});

test('unknown tag and repository are SL_ERR_OCI_NOT_FOUND naming the image', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const c = client();
  await pushImage(c, `${reg.host}/x:1`, { config: configFor({ os: 'linux', architecture: 'amd64' }), layers: [] });
  for (const ref of [`${reg.host}/x:2`, `${reg.host}/nope:1`]) {
    const err = await t.throwsAsync(c.resolve(ref, 'linux/amd64'));
    t.true(hasCode(err, 'SL_ERR_OCI_NOT_FOUND'), String(err));
    t.true(err?.message.includes(ref), 'the message names the image');
  }
  const missing = { mediaType: MEDIA_TYPES.ociLayer, digest: `sha256:${'2'.repeat(64)}`, size: 3 };
  const blob = await t.throwsAsync(c.fetchBlob(`${reg.host}/x:1`, missing));
  t.true(hasCode(blob, 'SL_ERR_OCI_NOT_FOUND'));
  t.true(blob?.message.includes(`of image ${reg.host}/x:1`), String(blob));
  // A blob fetched by its own digest (how the proxy's indexer fetches a layer) names its repository.
  const layer = await t.throwsAsync(c.fetchBlob(`${reg.host}/x@${missing.digest}`, missing));
  t.true(hasCode(layer, 'SL_ERR_OCI_NOT_FOUND'));
  t.true(layer?.message.includes(`of repository ${reg.host}/x`), String(layer));
  t.false(layer?.message.includes('of image'), String(layer));
});

test('a corrupt blob in storage fails the stream with SL_ERR_OCI_DIGEST_MISMATCH', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const c = client();
  const layer = randomBytes(200_000);
  const ref = `${reg.host}/corrupt:1`;
  const pushed = await pushImage(c, ref, { config: configFor({ os: 'linux', architecture: 'amd64' }), layers: [{ data: layer, mediaType: MEDIA_TYPES.ociLayer }] });
  const desc = pushed.manifest.layers[0];
  const file = blobDataPath(reg, desc.digest);
  const bytes = readFileSync(file);
  bytes[150_000] ^= 0xff;
  writeFileSync(file, bytes);
  const stream = await c.fetchBlob(ref, desc);
  const err = await t.throwsAsync(readAll(stream));
  t.true(hasCode(err, 'SL_ERR_OCI_DIGEST_MISMATCH'), String(err));
  t.true(stream.destroyed);
  // Range reads cannot be verified and still return the (corrupt) bytes asked for.
  const part = await readAll(await c.fetchBlob(ref, desc, { range: { start: 0, end: 10 } }));
  t.deepEqual(part, layer.subarray(0, 10));
  // Corrupting the config breaks resolve.
  const cfgFile = blobDataPath(reg, pushed.manifest.config.digest);
  const cfg = readFileSync(cfgFile);
  cfg[0] = 0x20;
  writeFileSync(cfgFile, cfg);
  const rerr = await t.throwsAsync(c.resolve(ref, 'linux/amd64'));
  t.true(hasCode(rerr, 'SL_ERR_OCI_DIGEST_MISMATCH'), String(rerr));
});

test('an unreachable registry is SL_ERR_OCI_UNREACHABLE after bounded retries', async (t) => {
  t.timeout(20_000, TEST_TIMEOUT);
  const port = await freePort();
  const c = new RegistryClient({ credentials: {}, retries: 2, retryBaseMs: 20, timeoutMs: 2000 });
  const started = Date.now();
  const err = await t.throwsAsync(c.resolve(`127.0.0.1:${port}/x:1`, 'linux/amd64'));
  t.true(hasCode(err, 'SL_ERR_OCI_UNREACHABLE'), String(err));
  t.true(err?.message.includes(`127.0.0.1:${port}`));
  t.true(Date.now() - started < 5000, 'retries are bounded');
  const aborted = await t.throwsAsync(c.resolve(`127.0.0.1:${port}/x:1`, 'linux/amd64', AbortSignal.abort()));
  t.true(hasCode(aborted, 'SL_ERR_CANCELED'));
});
