/**
 * Private registries behind the proxy (issue 16), on the whole stack (registries → `starlight proxy`
 * → `starlight snapshotter --proxy` → containerd 1.6 + runc): Debian's docker-registry with htpasswd
 * Basic auth, and a Bearer-token front (test/helpers/registry.ts) before a second registry.
 * - Wrong credentials (from $DOCKER_CONFIG, the default) or none: `starlight pull` fails with
 *   SL_ERR_OCI_UNAUTHORIZED naming the registry, not the proxy-token error.
 * - `--registry-auth config.json` with both hosts: both pull, lazily (PullImage returns while the
 *   filler still streams over the emulated link), and a container reads the image.
 * Needs root; everything is torn down on failure too.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { RegistryClient } from '../../src/oci/client.js';
import { buildTestImage, SNAPSHOTTER_NAME, startContainerd, TEST_NAMESPACE, type Containerd } from '../helpers/containerd.js';
import { startFront, startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { makeLayer, pushLayers, startProxyProcess } from './proxy-support.js';
import { starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

const BASIC = { user: 'alice', pass: 'wonderland' };
const BEARER = { user: 'bob', pass: 'builder' };
/** Emulated link between daemon and proxy: the filler takes ~4 s, so the pull returns mid-stream. */
const BANDWIDTH_BPS = 8_000_000;
const FILLER_BYTES = 4 << 20;

interface Registries {
  basicHost: string;
  bearerHost: string;
  basicRef: string;
  bearerRef: string;
  basicDigest: string;
}

/** A docker config.json in a fresh dir; returns the dir ($DOCKER_CONFIG) and the file. */
function dockerConfig(t: ExecutionContext, auths: Record<string, { user: string; pass: string }>): { dir: string; file: string } {
  const dir = tempDir(t, 'sl-docker-');
  const file = join(dir, 'config.json');
  const doc = { auths: Object.fromEntries(Object.entries(auths).map(([h, c]) => [h, { auth: Buffer.from(`${c.user}:${c.pass}`).toString('base64') }])) };
  writeFileSync(file, JSON.stringify(doc), { mode: 0o600 });
  return { dir, file };
}

/** The htpasswd registry with a lazy-sized image, and a token front over a second registry with the small one. */
async function privateRegistries(t: ExecutionContext): Promise<Registries> {
  const basic = await startRegistry(t, { htpasswd: BASIC });
  const plain = await startRegistry(t);
  const front = await startFront(t, plain.host, { token: BEARER });
  const client = new RegistryClient({
    credentials: { [basic.host]: { username: BASIC.user, password: BASIC.pass }, [front.host]: { username: BEARER.user, password: BEARER.pass } },
  });
  const img = await buildTestImage(tempDir(t));
  const layers = img.layers.map((l) => ({ gz: l.blob, diffID: l.diffId }));
  const basicDigest = await pushLayers(basic.host, 'private/app:1', [...layers, makeLayer(t, { 'filler/big': randomBytes(FILLER_BYTES) })], ['/bin/sh'], client);
  await pushLayers(front.host, 'tok/app:1', layers, ['/bin/sh'], client);
  return { basicHost: basic.host, bearerHost: front.host, basicRef: `${basic.host}/private/app:1`, bearerRef: `${front.host}/tok/app:1`, basicDigest };
}

async function stack(t: ExecutionContext, r: Registries, proxyArgs: string[], env: NodeJS.ProcessEnv): Promise<Containerd> {
  const proxy = await startProxyProcess(t, ['--registry', `http://${r.basicHost}`, '--registry', `http://${r.bearerHost}`, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-proxy-'), ...proxyArgs], { env });
  const emu = await WanEmulator.start({ target: new URL(proxy.url).host, rttMs: 10, bandwidthBps: BANDWIDTH_BPS });
  t.teardown(() => emu.close());
  return startContainerd(t, { snapshotterArgs: ['--proxy', `http://${emu.address}`] });
}

const pull = (c: Containerd, ref: string) => starlight(['pull', '--daemon', c.snapshotter.apiSocket, '-n', TEST_NAMESPACE, ref]);

run('private registries: wrong or missing credentials fail with SL_ERR_OCI_UNAUTHORIZED naming the registry', async (t) => {
  t.timeout(180_000);
  const r = await privateRegistries(t);
  // $DOCKER_CONFIG is the default source: a wrong password for the Basic registry, nothing for the token one.
  const cfg = dockerConfig(t, { [r.basicHost]: { user: BASIC.user, pass: 'wrong' } });
  const c = await stack(t, r, [], { DOCKER_CONFIG: cfg.dir });
  for (const [ref, host] of [[r.basicRef, r.basicHost], [r.bearerRef, r.bearerHost]] as const) {
    const res = await pull(c, ref);
    t.not(res.code, 0, `pull of ${ref} must fail`);
    t.log(res.stderr.trim());
    t.regex(res.stderr, /SL_ERR_OCI_UNAUTHORIZED/, `${ref}: the registry's refusal reaches the worker`);
    t.true(res.stderr.includes(`registry ${host}`), `${ref}: the message names the registry`);
    t.notRegex(res.stderr, /SL_ERR_PROXY_UNAUTHORIZED/, 'not mistaken for a refused proxy token');
  }
});

run('private registries: with --registry-auth config.json, Basic and Bearer registries pull lazily and run', async (t) => {
  t.timeout(180_000);
  const r = await privateRegistries(t);
  const cfg = dockerConfig(t, { [r.basicHost]: BASIC, [`https://${r.bearerHost}/v1/`]: BEARER });
  // $DOCKER_CONFIG points to an empty dir: only --registry-auth supplies credentials.
  const c = await stack(t, r, ['--registry-auth', cfg.file], { DOCKER_CONFIG: tempDir(t, 'sl-nodocker-') });

  const res = await pull(c, r.basicRef);
  t.is(res.code, 0, res.stderr);
  const st = JSON.parse((await starlight(['status', '--daemon', c.snapshotter.apiSocket, '--json'])).stdout) as { images: { manifestDigest: string; complete: boolean }[] };
  t.false(st.images.find((i) => i.manifestDigest === r.basicDigest)?.complete, 'the pull returned while the image was still streaming (lazy)');
  const out = await c.ctrOk(['run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, r.basicRef, 'basic', 'sh', '-c', 'cat /etc/l2file']);
  t.is(out, 'from layer 2\n');

  const res2 = await pull(c, r.bearerRef);
  t.is(res2.code, 0, res2.stderr);
  t.is(await c.ctrOk(['run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, r.bearerRef, 'bearer', 'sh', '-c', 'cat /etc/somefile']), 'some\n');
});
