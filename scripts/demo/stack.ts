/**
 * The demo's environment, all on 127.0.0.1 with its state under one temp dir: Debian's
 * docker-registry (temp storage), the Starlight proxy, optionally the WAN emulator between worker
 * and proxy, the snapshotter daemon (`starlight snapshotter`) and a private containerd whose config
 * names the daemon as `[proxy_plugins.starlight]`. The host's containerd is never touched.
 *
 * Every component registers its stop in `cleanups` as soon as it runs (LIFO: containerd and its
 * containers first, then the daemon, which unmounts its views, then the proxy and the registry);
 * `removeWorkDir` is registered first so it runs last: it unmounts whatever is still mounted below
 * the temp dir and deletes it.
 *
 * Reuses the bench drivers (bench/drivers: registry, proxy, containerd, proc). Not here: images,
 * containers, the summary (scripts/demo.ts, app.ts).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { containerdAddress, startContainerd, type BenchContainerd } from '../../bench/drivers/containerd.js';
import { Cleanups, startDaemon, type Daemon } from '../../bench/drivers/proc.js';
import { starlightBin, startBenchProxy, type BenchProxy } from '../../bench/drivers/proxy.js';
import { startBenchRegistry, type BenchRegistry } from '../../bench/drivers/registry.js';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { StarlightError } from '../../src/errors.js';
import { DaemonClient } from '../../src/worker/api/client.js';
import { mountsUnder, unmountAllUnder } from '../../src/worker/fs/mount-table.js';
import type { Steps } from './report.js';

/** Prefix of the demo's temp dir under $TMPDIR (short: unix socket paths must stay ≤ 107 bytes). */
export const WORK_DIR_PREFIX = 'starlight-demo-';
/** The proxy plugin name in containerd's config (`ctr run --snapshotter starlight`). */
export const SNAPSHOTTER = 'starlight';
/** How long the snapshotter daemon may take to answer its API, ms. */
const DAEMON_START_TIMEOUT_MS = 20_000;

export interface DemoStack {
  workDir: string;
  registry: BenchRegistry;
  /** The proxy as the cloud side sees it ("127.0.0.1:PORT"). */
  proxy: BenchProxy;
  /** The address the worker uses for the proxy (the emulator's when one runs). */
  proxyForWorker: string;
  emulator?: WanEmulator;
  daemon: Daemon;
  /** The daemon's API socket (`starlight pull|status --daemon`). */
  apiSocket: string;
  containerd: BenchContainerd;
}

/** Makes the temp dir and registers its removal (first, so it runs last). */
export async function makeWorkDir(cleanups: Cleanups): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), WORK_DIR_PREFIX));
  cleanups.add(`remove ${dir}`, async () => {
    const { failed } = await unmountAllUnder(dir);
    const left = [...failed.map((f) => f.path), ...(await mountsUnder(dir))];
    if (left.length > 0) {
      // Deleting below a live mount would delete the mounted content (e.g. a bind of /).
      throw new StarlightError('SL_ERR_FS_MOUNTED', `not removing ${dir}: still mounted below it: ${[...new Set(left)].join(', ')}; unmount them and delete it by hand`, {
        details: { dir, mounts: left },
      });
    }
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Starts registry → proxy → (emulator) → daemon → containerd, registering each stop in `cleanups`. */
export async function startStack(
  workDir: string,
  opts: { wan?: { rttMs: number; bandwidthBps: number }; steps: Steps; signal: AbortSignal },
  cleanups: Cleanups,
): Promise<Omit<DemoStack, 'workDir'>> {
  const { steps, signal } = opts;
  const registry = await steps.run('registry (docker-registry, temp storage)', () => startBenchRegistry(join(workDir, 'registry')), (r) => r.host);
  cleanups.add('stop the registry', () => registry.stop());
  signal.throwIfAborted();

  const proxy = await steps.run('Starlight proxy', () => startBenchProxy(registry.host, join(workDir, 'proxy')), (p) => p.host);
  cleanups.add('stop the proxy', () => proxy.stop());
  signal.throwIfAborted();

  let emulator: WanEmulator | undefined;
  if (opts.wan) {
    const wan = opts.wan;
    emulator = await steps.run(
      'WAN emulator (worker ↔ proxy)',
      () => WanEmulator.start({ target: proxy.host, rttMs: wan.rttMs, bandwidthBps: wan.bandwidthBps }),
      (e) => `${e.address} → ${proxy.host}`,
    );
    const emu = emulator;
    cleanups.add('stop the WAN emulator', () => emu.close());
  }
  const proxyForWorker = emulator?.address ?? proxy.host;

  // The daemon needs containerd's socket (bench/drivers/containerd.ts containerdAddress)
  // for `starlight pull` (records images and snapshots) and starts first, as containerd's proxy
  // plugin connects to the daemon's socket.
  const containerdDir = join(workDir, 'containerd');
  const cdAddress = containerdAddress(containerdDir);
  const socket = join(workDir, 'starlight.sock');
  const root = join(workDir, 'starlight');
  const apiSocket = join(root, 'daemon.sock');
  const daemon = await steps.run(
    'snapshotter daemon',
    () =>
      startDaemon(
        'starlight snapshotter',
        process.execPath,
        [starlightBin(), 'snapshotter', '--socket', socket, '--root', root, '--proxy', `http://${proxyForWorker}`, '--containerd-address', cdAddress, '--log-level', 'warn'],
        async () => existsSync(apiSocket) && (await new DaemonClient(apiSocket).status()) !== undefined,
        { timeoutMs: DAEMON_START_TIMEOUT_MS },
      ),
    () => socket,
  );
  cleanups.add('stop the snapshotter daemon', () => daemon.stop());
  signal.throwIfAborted();

  const containerd = await steps.run('private containerd', () => startContainerd({ dir: containerdDir, proxySnapshotters: { [SNAPSHOTTER]: socket } }), (c) => c.address);
  cleanups.add('stop containerd (and its containers)', () => containerd.stop());
  signal.throwIfAborted();
  return { registry, proxy, proxyForWorker, emulator, daemon, apiSocket, containerd };
}
