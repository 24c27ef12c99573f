/**
 * A corrupt proxy cache file is not served (found by the mount tests: it was served forever): the
 * proxy checks each cached file as it reads it, drops a bad one and re-fetches it from its layer
 * before the item goes out. Real docker-registry and `starlight proxy` child process.
 */
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { fetchDelta, makeLayer, metrics, pushLayers, sha256, startProxyProcess } from './proxy-support.js';

test('a corrupted cache file is re-fetched from its layer; the delta still verifies', async (t) => {
  const reg = await startRegistry(t);
  const files = { 'bin/app': Buffer.from('app\n'.repeat(3000)), 'etc/conf': Buffer.from('x=1\n'), 'opt/data': Buffer.from('data line\n'.repeat(500)) };
  await pushLayers(reg.host, 'app:v1', [makeLayer(t, files)]);
  const data = tempDir(t, 'starlight-proxy-');
  const p = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', data]);
  const first = await fetchDelta(p.url, { to: `${reg.host}/app:v1` });
  t.is(first.contents.size, 3);
  // A first contact streams staged contents; notify returns once the background encoder cached them.
  t.is((await fetch(`${p.url}/v1/notify?ref=${reg.host}/app:v1`, { method: 'POST' })).status, 200);

  const hex = sha256(files['opt/data']).slice('sha256:'.length);
  const path = join(data, 'content', 'sha256', hex.slice(0, 2), hex);
  const b = readFileSync(path);
  b[b.length >> 1]! ^= 0xff;
  writeFileSync(path, b);
  // The running proxy holds the contents it encoded in memory (checked bytes, content-cache.ts hot
  // tier): a restarted one reads the file again.
  await p.stop();
  const p2 = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', data]);

  const before = (await metrics(p2.url)).get('starlight_proxy_registry_blob_fetches_total') ?? 0;
  const again = await fetchDelta(p2.url, { to: `${reg.host}/app:v1` }); // throws if any item fails its digest
  t.is(again.contents.size, 3);
  const m = await metrics(p2.url);
  t.is(m.get('starlight_proxy_cache_corrupt_total'), 1);
  t.is(m.get('starlight_proxy_registry_blob_fetches_total'), before + 1, 're-fetched from the layer');
  t.not(readFileSync(path).compare(b), 0, 'the cache file was replaced');
});
