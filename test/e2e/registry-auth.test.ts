/**
 * Registry auth and retry against a real docker-registry: htpasswd Basic auth, a Bearer token front
 * (node:http on 127.0.0.1 issuing tokens per scope), and a front that fails the first requests.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { hasCode } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage } from '../../fixtures/push-image.js';
import { MEDIA_TYPES } from '../../src/oci/types.js';
import { startFront, startRegistry } from '../helpers/registry.js';

const TEST_TIMEOUT = '60s';
const CONFIG = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('htpasswd Basic auth: no or wrong credentials are SL_ERR_OCI_UNAUTHORIZED, right ones work', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t, { htpasswd: { user: 'alice', pass: 'wonderland' } });
  const ref = `${reg.host}/private/app:1`;
  const anon = new RegistryClient({ credentials: {}, retryBaseMs: 10 });
  const e1 = await t.throwsAsync(anon.resolve(ref, 'linux/amd64'));
  t.true(hasCode(e1, 'SL_ERR_OCI_UNAUTHORIZED'), String(e1));
  const wrong = new RegistryClient({ credentials: { [reg.host]: { username: 'alice', password: 'nope' } }, retryBaseMs: 10 });
  const e2 = await t.throwsAsync(wrong.resolve(ref, 'linux/amd64'));
  t.true(hasCode(e2, 'SL_ERR_OCI_UNAUTHORIZED'), String(e2));
  const ok = new RegistryClient({ credentials: { [reg.host]: { username: 'alice', password: 'wonderland' } }, retryBaseMs: 10 });
  const layer = randomBytes(5000);
  const pushed = await pushImage(ok, ref, { config: CONFIG, layers: [{ data: layer, mediaType: MEDIA_TYPES.ociLayer }] });
  const img = await ok.resolve(ref, 'linux/amd64');
  t.is(img.manifestDigest, pushed.digest);
  t.deepEqual(await readAll(await ok.fetchBlob(ref, img.manifest.layers[0])), layer);
});

test('Bearer token flow: challenge, token per scope with Basic creds, token reused', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const front = await startFront(t, reg.host, { token: { user: 'bob', pass: 'builder' } });
  const ref = `${front.host}/tok/app:1`;
  const c = new RegistryClient({ credentials: { [front.host]: { username: 'bob', password: 'builder' } }, retryBaseMs: 10 });
  const layer = randomBytes(5000);
  await pushImage(c, ref, { config: CONFIG, layers: [{ data: layer, mediaType: MEDIA_TYPES.ociLayer }] });
  const tokensAfterPush = front.stats.tokenRequests;
  t.true(tokensAfterPush >= 1 && tokensAfterPush <= 2, `pull and push scopes: ${tokensAfterPush} token requests`);
  const img = await c.resolve(ref, 'linux/amd64');
  t.deepEqual(await readAll(await c.fetchBlob(ref, img.manifest.layers[0])), layer);
  await c.resolve(ref, 'linux/amd64');
  t.is(front.stats.tokenRequests, tokensAfterPush, 'cached tokens are reused for the same scope');

  const anon = new RegistryClient({ credentials: {}, retryBaseMs: 10 });
  const err = await t.throwsAsync(anon.resolve(ref, 'linux/amd64'));
  t.true(hasCode(err, 'SL_ERR_OCI_UNAUTHORIZED'), String(err));
});

test('5xx answers are retried with backoff; exhausted retries are SL_ERR_OCI_REGISTRY', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const setup = new RegistryClient({ credentials: {} });
  const layer = randomBytes(5000);
  await pushImage(setup, `${reg.host}/flaky:1`, { config: CONFIG, layers: [{ data: layer, mediaType: MEDIA_TYPES.ociLayer }] });

  const front = await startFront(t, reg.host, { failFirst: 2, failStatus: 503 });
  // Tries as the client counts them (each retry is logged), next to the tries the front answered.
  const retries: { url: string; attempt: number }[] = [];
  const logger = createLogger({ level: 'debug', sink: (line) => {
    const r = JSON.parse(line) as { msg: string; url: string; attempt: number };
    if (r.msg === 'oci-request-retry') retries.push(r);
  } });
  const c = new RegistryClient({ credentials: {}, retries: 3, retryBaseMs: 10, logger });
  const img = await c.resolve(`${front.host}/flaky:1`, 'linux/amd64');
  t.is(front.stats.failed, 2);
  t.deepEqual(await readAll(await c.fetchBlob(`${front.host}/flaky:1`, img.manifest.layers[0])), layer);

  const worse = await startFront(t, reg.host, { failFirst: 100, failStatus: 500 });
  const err = await t.throwsAsync(c.resolve(`${worse.host}/flaky:1`, 'linux/amd64'));
  t.true(hasCode(err, 'SL_ERR_OCI_REGISTRY'), String(err));
  t.deepEqual(retries.filter((r) => r.url.includes(worse.host)).map((r) => r.attempt), [1, 2, 3], 'the client retried three times');
  t.is(worse.stats.failed, 4, 'one try plus three retries');

  const notRetried = await startFront(t, reg.host, { failFirst: 1, failStatus: 400 });
  const e400 = await t.throwsAsync(c.resolve(`${notRetried.host}/flaky:1`, 'linux/amd64'));
  t.true(hasCode(e400, 'SL_ERR_OCI_REGISTRY'));
  t.is(notRetried.stats.failed, 1, '4xx is not retried');
});

test('range reads work when the server ignores Range; aborting a stream is SL_ERR_CANCELED', async (t) => {
  t.timeout(60_000, TEST_TIMEOUT);
  const reg = await startRegistry(t);
  const c = new RegistryClient({ credentials: {}, retryBaseMs: 10 });
  const layer = randomBytes(3 * 1024 * 1024);
  const pushed = await pushImage(c, `${reg.host}/r:1`, { config: CONFIG, layers: [{ data: layer, mediaType: MEDIA_TYPES.ociLayer }] });
  const front = await startFront(t, reg.host, { ignoreRange: true });
  const desc = pushed.manifest.layers[0];
  const part = await readAll(await c.fetchBlob(`${front.host}/r:1`, desc, { range: { start: 100_000, end: 2_000_000 } }));
  t.deepEqual(part, layer.subarray(100_000, 2_000_000));

  const ac = new AbortController();
  const stream = await c.fetchBlob(`${reg.host}/r:1`, desc, { signal: ac.signal });
  const got = new Promise<unknown>((resolve) => {
    stream.once('data', () => ac.abort());
    stream.on('data', () => {});
    stream.once('error', resolve);
    stream.once('end', () => resolve(undefined));
  });
  const err = await got;
  t.true(hasCode(err, 'SL_ERR_CANCELED'), String(err));
});
