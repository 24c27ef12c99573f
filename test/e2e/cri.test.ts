/**
 * Kubernetes' path end to end (issue 16): what the kubelet does, over containerd's CRI v1 gRPC API
 * (vendored k8s.io/cri-api proto, test/helpers/cri.ts), against containerd 1.6's CRI plugin with
 * `snapshotter = "starlight"` and `disable_snapshot_annotations = false`, runc, a real registry and
 * `starlight proxy` behind the WAN emulator (so the image streams for seconds):
 * PullImage → RunPodSandbox (host network: no CNI) → CreateContainer → StartContainer → the ready
 * line in the container's CRI log; then v2 (v1 + one small layer) in a second pod. Asserts the pull
 * was lazy (PullImage returned while the stream was still running), the ready lines, that v2 moved
 * only its new content (proxy metrics), and that Stop/Remove of containers, pods and images leave no
 * snapshots, views, mounts, CAS or containerd content behind.
 * The pause image is a static C binary (test/fixtures/pause.c, gcc -static) served by the registry.
 * Needs root; pods, containers, mounts and processes are torn down on failure too.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { mountsUnder } from '../../src/worker/fs/mount-table.js';
import { buildTestImage, CRI_NAMESPACE, SNAPSHOTTER_NAME, startContainerd, type Containerd } from '../helpers/containerd.js';
import { CriClient, type ContainerConfig, type PodSandboxConfig } from '../helpers/cri.js';
import { startRegistry } from '../helpers/registry.js';
import { casBlobFiles } from '../helpers/cas.js';
import { tempDir } from '../helpers/tmp.js';
import { type BuiltLayer, makeLayer, metrics, pushLayers, ROOT, sha256, startProxyProcess } from './proxy-support.js';
import { starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** Emulated link between daemon and proxy: the filler takes ~6 s, so PullImage returns mid-stream. */
const BANDWIDTH_BPS = 8_000_000;
const RTT_MS = 20;
/** Random (incompressible) file of v1 that no container reads, bytes. */
const FILLER_BYTES = 6 << 20;
/** Polls (ready line, stream completion, cleanup) give up after this long, ms. */
const WAIT_MS = 90_000;
/** StopContainer grace before SIGKILL, s. */
const STOP_TIMEOUT_S = 10;

function execOk(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout))),
  );
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, onTimeout?: () => string): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${WAIT_MS} ms${onTimeout ? `; ${onTimeout()}` : ''}`);
    await sleep(200);
  }
}

/** A layer holding /pause, the static binary built from test/fixtures/pause.c. */
async function pauseLayer(work: string): Promise<BuiltLayer> {
  const root = join(work, 'pause-root');
  await mkdir(root, { recursive: true });
  await execOk('gcc', ['-static', '-Os', '-s', '-o', join(root, 'pause'), join(ROOT, 'test/fixtures/pause.c')]);
  await chmod(join(root, 'pause'), 0o755);
  const tarPath = join(work, 'pause.tar');
  await execOk('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', tarPath, '.']);
  const tar = await readFile(tarPath);
  return { gz: gzipSync(tar), diffID: sha256(tar) };
}

interface DaemonImage {
  manifestDigest: string;
  complete: boolean;
}
interface DaemonStatusJson {
  images: DaemonImage[];
  views: string[];
  mounts: string[];
}

async function daemonStatus(c: Containerd): Promise<DaemonStatusJson> {
  const r = await starlight(['status', '--daemon', c.snapshotter.apiSocket, '--json']);
  if (r.code !== 0) throw new Error(`starlight status: ${r.stderr}`);
  return JSON.parse(r.stdout) as DaemonStatusJson;
}

/** Stops and removes every CRI container and pod (the kubelet's teardown order); errors are collected. */
async function removeAllPods(cri: CriClient): Promise<string[]> {
  const errors: string[] = [];
  const attempt = async (what: string, f: () => Promise<void>) => f().catch((err: unknown) => void errors.push(`${what}: ${(err as Error).message}`));
  for (const ctr of await cri.listContainers().catch(() => [])) {
    await attempt(`stop container ${ctr.id}`, () => cri.stopContainer(ctr.id, STOP_TIMEOUT_S));
    await attempt(`remove container ${ctr.id}`, () => cri.removeContainer(ctr.id));
  }
  for (const pod of await cri.listPodSandboxes().catch(() => [])) {
    await attempt(`stop pod ${pod.id}`, () => cri.stopPodSandbox(pod.id));
    await attempt(`remove pod ${pod.id}`, () => cri.removePodSandbox(pod.id));
  }
  return errors;
}

/** A host-network pod running `image` with a shell script; resolves once its log has `ready`. */
async function runPod(t: ExecutionContext, c: Containerd, cri: CriClient, name: string, image: string, script: string): Promise<{ pod: string; ctr: string; log: string }> {
  const logDir = join(c.dir, 'pods', name);
  await mkdir(logDir, { recursive: true });
  const sandbox: PodSandboxConfig = {
    metadata: { name, uid: `uid-${name}`, namespace: 'default', attempt: 0 },
    log_directory: logDir,
    linux: { security_context: { namespace_options: { network: 'NODE' } } },
  };
  const pod = await cri.runPodSandbox(sandbox);
  const config: ContainerConfig = { metadata: { name: 'app', attempt: 0 }, image: { image }, command: ['/bin/sh', '-c', script], log_path: 'app.log' };
  const ctr = await cri.createContainer(pod, config, sandbox);
  await cri.startContainer(ctr);
  const logFile = join(logDir, 'app.log');
  const log = await waitUntil(
    `ready line of pod ${name}`,
    async () => {
      const text = await readFile(logFile, 'utf8').catch(() => '');
      // CRI log format: '<RFC3339Nano> stdout F <line>'.
      return /^\S+ stdout F ready$/m.test(text) ? text : undefined;
    },
    () => `log so far: ${JSON.stringify(c.snapshotter.logs().slice(-10))}`,
  );
  t.log(`pod ${name}: ${log.trim().split('\n').map((l) => l.split(' ').slice(3).join(' ')).join(' | ')}`);
  const st = await cri.containerStatus(ctr);
  t.is(st.state, 'CONTAINER_RUNNING', `pod ${name}'s container keeps running (exec /pause)`);
  return { pod, ctr, log };
}

run('CRI: lazy PullImage, host-network pods, ready lines, v2 moves only new content, clean removal', async (t) => {
  t.timeout(360_000);
  const reg = await startRegistry(t);
  const proxy = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-proxy-')]);
  const emu = await WanEmulator.start({ target: new URL(proxy.url).host, rttMs: RTT_MS, bandwidthBps: BANDWIDTH_BPS });
  t.teardown(() => emu.close());

  const work = tempDir(t);
  const pause = await pauseLayer(work);
  await pushLayers(reg.host, 'pause:3.9', [pause], ['/pause']);
  const base = await buildTestImage(work);
  const v1Layers = [...base.layers.map((l) => ({ gz: l.blob, diffID: l.diffId })), pause, makeLayer(t, { 'filler/big': randomBytes(FILLER_BYTES) })];
  const v2Layers = [...v1Layers, makeLayer(t, { 'etc/version': 'v2\n' })];
  const v1Digest = await pushLayers(reg.host, 'app:v1', v1Layers, ['/bin/sh']);
  const v2Digest = await pushLayers(reg.host, 'app:v2', v2Layers, ['/bin/sh']);
  const [pauseRef, v1, v2] = [`${reg.host}/pause:3.9`, `${reg.host}/app:v1`, `${reg.host}/app:v2`];

  const c = await startContainerd(t, {
    snapshotterArgs: ['--proxy', `http://${emu.address}`],
    cri: { sandboxImage: pauseRef, plainHttpRegistries: [reg.host] },
  });
  const cri = new CriClient(c.address);
  t.teardown(() => cri.close());
  // Registered after containerd's teardown, so it runs before it (ava: reverse order).
  t.teardown(async () => {
    const errors = await removeAllPods(cri);
    if (errors.length > 0) t.log(`teardown: ${errors.join('; ')}`);
  });
  const ver = await cri.version();
  t.is(ver.runtime_name, 'containerd');
  t.log(`CRI ${ver.runtime_api_version} served by containerd ${ver.runtime_version}`);

  // The sandbox image first (as the kubelet does on RunPodSandbox), then v1: both lazily.
  await cri.pullImage(pauseRef);
  const sent0 = (await metrics(proxy.url)).get('starlight_proxy_delta_bytes_sent_total') ?? 0;
  const v1Id = await cri.pullImage(v1);
  const atPull = await daemonStatus(c);
  const v1Status = atPull.images.find((i) => i.manifestDigest === v1Digest);
  t.truthy(v1Status, `the daemon streams v1 (${JSON.stringify(atPull.images)})`);
  t.false(v1Status?.complete, 'PullImage returned while v1 was still streaming (lazy)');
  t.true(c.snapshotter.logs().filter((l) => l.includes('"remote-snapshot-prepared"')).length >= v1Layers.length, 'every v1 layer is a remote snapshot');
  const images = await cri.listImages();
  t.true(images.some((i) => i.id === v1Id && i.repo_tags.includes(v1)), `ListImages shows v1: ${JSON.stringify(images)}`);

  const p1 = await runPod(t, c, cri, 'pod-v1', v1, 'cat /etc/l2file; echo ready; exec /pause');
  t.regex(p1.log, /stdout F from layer 2$/m, 'the container read its image');

  // Let v1 finish streaming, then measure what v2 moves.
  await waitUntil('v1 stream complete', async () => ((await daemonStatus(c)).images.find((i) => i.manifestDigest === v1Digest)?.complete ? true : undefined));
  const sent1 = (await metrics(proxy.url)).get('starlight_proxy_delta_bytes_sent_total') ?? 0;
  t.true(sent1 - sent0 > FILLER_BYTES, `v1 streamed its filler (${sent1 - sent0} bytes)`);

  await cri.pullImage(v2);
  const p2 = await runPod(t, c, cri, 'pod-v2', v2, 'cat /etc/version; echo ready; exec /pause');
  t.regex(p2.log, /stdout F v2$/m);
  await waitUntil('v2 stream complete', async () => ((await daemonStatus(c)).images.find((i) => i.manifestDigest === v2Digest)?.complete ? true : undefined));
  const sent2 = (await metrics(proxy.url)).get('starlight_proxy_delta_bytes_sent_total') ?? 0;
  t.log(`proxy delta bytes: v1 ${sent1 - sent0}, v2 ${sent2 - sent1}`);
  t.true(sent2 - sent1 < FILLER_BYTES / 16, `v2 moved only its new content (${sent2 - sent1} bytes)`);

  // The kubelet's teardown, then image removal.
  for (const p of [p1, p2]) {
    await cri.stopContainer(p.ctr, STOP_TIMEOUT_S);
    await cri.removeContainer(p.ctr);
    await cri.stopPodSandbox(p.pod);
    await cri.removePodSandbox(p.pod);
  }
  t.deepEqual(await cri.listPodSandboxes(), []);
  for (const ref of [v1, v2, pauseRef]) await cri.removeImage(ref);
  t.deepEqual(await cri.listImages(), []);

  const snapshots = (): Promise<string[]> =>
    execOk('ctr', ['--address', c.address, '-n', CRI_NAMESPACE, 'snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'ls']).then((o) => o.trim().split('\n').slice(1));
  const content = (): Promise<string[]> => execOk('ctr', ['--address', c.address, '-n', CRI_NAMESPACE, 'content', 'ls', '-q']).then((o) => o.split('\n').filter(Boolean));
  const cas = join(c.snapshotter.root, 'content');
  const leftovers = async (): Promise<Record<string, unknown>> => {
    const st = await daemonStatus(c);
    return {
      snapshots: await snapshots(),
      content: await content(),
      cas: await casBlobFiles(cas),
      daemonImages: st.images.map((i) => i.manifestDigest),
      daemonMounts: st.mounts,
      mounts: await mountsUnder(c.dir),
    };
  };
  const clean = await waitUntil(
    'nothing left after removal',
    async () => {
      const left = await leftovers();
      return Object.values(left).every((v) => Array.isArray(v) && v.length === 0) ? left : undefined;
    },
    () => c.snapshotter.logs().slice(-10).join('\n'),
  ).catch(async (err: unknown) => {
    t.log(JSON.stringify(await leftovers()));
    throw err;
  });
  t.deepEqual(clean, { snapshots: [], content: [], cas: [], daemonImages: [], daemonMounts: [], mounts: [] });
  t.true(c.snapshotter.logs().some((l) => l.includes('"image-content-freed"')), 'the daemon freed the images');
});
