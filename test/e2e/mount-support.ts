/**
 * Shared by the `starlight mount` e2e tests (issue 4): a real docker-registry with an image pushed,
 * `starlight proxy` as a child process behind the user-space WAN emulator (bench/wan) so content is
 * still arriving when the tree already answers, `starlight mount` as a child process, and the trees
 * to compare: the overlayfs reference of the extracted layers (test/helpers/tree-shape.ts), the
 * merged TOC, and the mount (metadata only while streaming; with sha256 once complete).
 *
 * Cleanup: every process, emulator, mount and temp dir is torn down in t.teardown, also on failure
 * (a mount left by a killed `starlight mount` is detached with fusermount3 -u -z before its temp dir
 * is removed).
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { type DebianImageName, ensureDebianImage } from '../../bench/images/ensure.js';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { buildLayerToc } from '../../src/layers/indexer.js';
import { DeltaDecoder } from '../../src/protocol/decoder.js';
import type { DeltaHeader } from '../../src/protocol/types.js';
import { mergeLayers } from '../../src/layers/merge.js';
import type { LayerToc, MergedTree } from '../../src/layers/toc.js';
import { ociImage, type LayerSpec } from '../../fixtures/image-writer.js';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage } from '../../fixtures/push-image.js';
import { fuseMountsAt } from '../../src/worker/fs/mount-table.js';
import { startCli, startProxyCli, type CliProcess } from '../helpers/cli.js';
import { freePort, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { mountOverlayReference, shapeOfDir, shapeOfTree, tarCreatedDirs, type Shapes } from '../helpers/tree-shape.js';

const run = promisify(execFile);

/** Everything the mount tests need: root, FUSE, overlayfs, GNU tar, getfattr/setfattr, docker-registry. */
export const mountSupported =
  process.getuid?.() === 0 &&
  existsSync('/dev/fuse') &&
  readFileSync('/proc/filesystems', 'utf8').includes('overlay') &&
  ['/usr/bin/tar', '/usr/bin/getfattr', '/usr/bin/setfattr', '/usr/bin/zstd', '/usr/bin/docker-registry', '/usr/bin/fusermount3'].every((p) => existsSync(p));
export const debianSupported = mountSupported && existsSync('/usr/sbin/debootstrap');

/** How long `starlight mount` may take to print `mounted` (header over a slow link + merge + mount), ms. */
export const MOUNT_START_MS = 60_000;
/** Bound for one external command run by these helpers, ms. */
const CMD_TIMEOUT_MS = 30_000;

export interface TestImage {
  name: string;
  ref: string;
  /** Layer blobs on disk, lowest first (for the overlay reference). */
  blobs: string[];
  tocs: LayerToc[];
  merged: MergedTree;
}

/** Builds `layers` with fixtures/image-writer.ts, pushes them as `<reg>/mount/<name>:v1`, indexes them locally. */
export async function pushLayers(t: ExecutionContext, reg: TestRegistry, name: string, layers: readonly LayerSpec[]): Promise<TestImage> {
  const image = await ociImage(layers);
  const ref = `${reg.host}/mount/${name}:v1`;
  await pushImage(new RegistryClient(), ref, { config: image.config, layers: image.layers.map((l) => ({ data: l.data, mediaType: l.mediaType })) });
  const dir = tempDir(t, 'sl-mount-blobs-');
  const blobs: string[] = [];
  const tocs: LayerToc[] = [];
  for (const [i, l] of image.layers.entries()) {
    const blob = join(dir, `layer${i}.blob`);
    await writeFile(blob, l.data);
    blobs.push(blob);
    tocs.push(await buildLayerToc(Readable.from([l.data]), { mediaType: l.mediaType, expectedDiffID: l.diffID }));
  }
  return { name, ref, blobs, tocs, merged: mergeLayers(tocs) };
}

/** A Debian image of bench/images (default python-web; built once per machine, cached), pushed to `reg`. */
export async function pushDebian(reg: TestRegistry, signal: AbortSignal, name: DebianImageName = 'python-web'): Promise<TestImage & { ready: string; layerDigests: string[] }> {
  const img = await ensureDebianImage(reg.url, name, { signal });
  const tocs: LayerToc[] = [];
  for (const [i, l] of img.layers.entries()) {
    tocs.push(await buildLayerToc(createReadStream(l.gzPath), { mediaType: img.manifest.layers[i]!.mediaType, expectedDiffID: l.diffId, signal }));
  }
  return { name, ref: img.reference, blobs: img.layers.map((l) => l.gzPath), tocs, merged: mergeLayers(tocs), ready: img.built.ready, layerDigests: img.manifest.layers.map((l) => l.digest) };
}

export interface Stack {
  reg: TestRegistry;
  /** The running proxy (replaced by restartProxy). */
  proxy: CliProcess & { url: string };
  /** The proxy's --data dir. */
  dataDir: string;
  /** The proxy's fixed port. */
  proxyPort: number;
  /** What the worker dials: the WAN emulator in front of the proxy. */
  proxyUrl: string;
  wan: WanEmulator;
  /** Starts a new proxy on the same port and data dir (after the old one was killed). */
  restartProxy(): Promise<void>;
}

export interface StackOptions {
  /** Link capacity worker ↔ proxy, bits/s; 0 = unlimited. */
  bandwidthBps: number;
  /** Added round trip, ms; default 20. */
  rttMs?: number;
  /** STARLIGHT_LOG of the proxy; default 'warn'. */
  proxyLog?: string;
  /** More `starlight proxy` arguments (e.g. --db for replicas). */
  proxyArgs?: string[];
}

/** Registry + proxy (fixed free port, own data dir) + WAN emulator in front of it. */
export async function startStack(t: ExecutionContext, reg: TestRegistry, opts: StackOptions): Promise<Stack> {
  const dataDir = tempDir(t, 'sl-mount-proxy-');
  const proxyPort = await freePort();
  const args = ['--registry', reg.url, '--listen', `127.0.0.1:${proxyPort}`, '--data', dataDir, ...(opts.proxyArgs ?? [])];
  const env = { STARLIGHT_LOG: opts.proxyLog ?? 'warn' };
  const proxy = await startProxyCli(t, args, { env });
  const wan = await WanEmulator.start({ target: `127.0.0.1:${proxyPort}`, bandwidthBps: opts.bandwidthBps, rttMs: opts.rttMs ?? 20, burstBytes: 16 * 1024 });
  t.teardown(() => wan.close());
  const stack: Stack = {
    reg,
    proxy,
    dataDir,
    proxyPort,
    proxyUrl: `http://${wan.address}`,
    wan,
    async restartProxy() {
      stack.proxy = await startProxyCli(t, args, { env });
    },
  };
  return stack;
}

/** Indexes `ref` at the proxy (directly, not over the link) and waits until its contents are cached: a warm proxy. */
export async function warmProxy(stack: Stack, ref: string): Promise<void> {
  const res = await fetch(new URL(`/v1/delta?to=${encodeURIComponent(ref)}`, stack.proxy.url), { signal: AbortSignal.timeout(300_000) });
  await res.arrayBuffer();
  await fetch(new URL(`/v1/notify?ref=${encodeURIComponent(ref)}`, stack.proxy.url), { method: 'POST', signal: AbortSignal.timeout(300_000) });
}

/** The header (item order = send order) the proxy plans for a worker that has nothing of `ref`, read directly. */
export async function plannedHeader(stack: Stack, ref: string): Promise<DeltaHeader> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 300_000);
  try {
    const res = await fetch(new URL(`/v1/delta?to=${encodeURIComponent(ref)}`, stack.proxy.url), { signal: ac.signal });
    const dec = new DeltaDecoder();
    for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
      for (const ev of dec.push(Buffer.from(c))) if (ev.type === 'header') return ev.header;
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  throw new Error(`the proxy's delta of ${ref} ended without a header`);
}

export async function startRegistryFor(t: ExecutionContext): Promise<TestRegistry> {
  return startRegistry(t);
}

export interface MountOptions {
  /** --read-deadline, seconds; default the CLI's. */
  readDeadlineS?: number;
  /** Worker state dir (--root); default a new temp dir. */
  root?: string;
  /** Mountpoint; default a new temp dir's `mnt`. */
  mountpoint?: string;
  /** STARLIGHT_LOG of the mount process; default 'info' (the stream's log keys). */
  log?: string;
  /** More environment of the mount process (e.g. NODE_EXTRA_CA_CERTS for a TLS proxy). */
  env?: Record<string, string>;
  /** Wait for `mounted`; default true. */
  waitMounted?: boolean;
}

export interface MountProcess extends CliProcess {
  mountpoint: string;
  root: string;
}

/** Detaches whatever FUSE mount is at `dir` (lazy); no-op if none. */
export async function detachMount(dir: string): Promise<void> {
  for (let i = 0; i < 8 && (await fuseMountsAt(dir)).length > 0; i++) {
    await run('fusermount3', ['-u', '-z', dir], { timeout: CMD_TIMEOUT_MS }).catch(() => run('umount', ['-l', dir], { timeout: CMD_TIMEOUT_MS }));
  }
}

/**
 * Starts `starlight mount --proxy URL --root ROOT REF MNT` and (by default) waits for `mounted`.
 * Teardown order (reverse of registration): stop the process, detach a left-over mount, remove dirs.
 */
export async function startMount(t: ExecutionContext, proxyUrl: string, ref: string, opts: MountOptions = {}): Promise<MountProcess> {
  const root = opts.root ?? tempDir(t, 'sl-mount-root-');
  const mountpoint = opts.mountpoint ?? join(tempDir(t, 'sl-mount-mnt-'), 'mnt');
  t.teardown(() => detachMount(mountpoint));
  const args = ['mount', '--proxy', proxyUrl, '--root', root];
  if (opts.readDeadlineS !== undefined) args.push('--read-deadline', String(opts.readDeadlineS));
  args.push(ref, mountpoint);
  const p = startCli(t, args, { env: { ...opts.env, STARLIGHT_LOG: opts.log ?? 'info' }, name: 'mount' });
  if (opts.waitMounted ?? true) await p.waitForLine(/^mounted /, MOUNT_START_MS);
  return Object.assign(p, { mountpoint, root });
}

/** The overlayfs reference of `img` (mounted until teardown) and its shapes. */
export async function referenceShapes(t: ExecutionContext, img: TestImage): Promise<Shapes> {
  const mnt = await mountOverlayReference(t, tempDir(t, 'sl-mount-ref-'), img.blobs);
  return shapeOfDir(mnt, { skipVanished: true });
}

/** Shapes of the merged TOC with nlink of hardlink groups. */
export function treeShapes(img: TestImage): Shapes {
  return shapeOfTree(img.merged, undefined, { nlink: true });
}

export function ignoredMtimes(img: TestImage): Set<string> {
  return tarCreatedDirs(img.tocs);
}

/** Sleeps `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
