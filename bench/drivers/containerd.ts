/**
 * A private containerd for one bench trial: its own root, state, runc state, sockets and opt dir under a temp
 * directory (the host's containerd is never touched), runc as runtime, CRI disabled (or enabled for the CRI e2e test), optional proxy
 * snapshotters (eStargz, Starlight). A fresh root per trial is how the bench clears containerd's
 * content and snapshot caches between runs.
 *
 * stop() leaves nothing behind: it kills and deletes the namespace's tasks and containers, stops
 * containerd, SIGKILLs shims that still name our socket (containerd 1.6 starts them detached, so they
 * outlive it), and unmounts whatever is still mounted under the directory, deepest first.
 *
 * Not here: pulling and running images (drivers, container.ts).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand, startDaemon, type RunOutput } from './proc.js';
import { mountsUnder } from '../../src/worker/fs/mount-table.js';

/** containerd namespace of bench images and containers. */
export const BENCH_NAMESPACE = 'bench';
/** How long containerd may take to answer `ctr version`, ms. */
const START_TIMEOUT_MS = 20_000;
/** Default timeout of one ctr call, ms. */
const CTR_TIMEOUT_MS = 60_000;
/** Plugins a bench containerd does not need (CRI would also touch CNI/host state). */
const DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper',
];

export interface ContainerdOptions {
  /** Directory owned by this containerd; created if missing. Keep it short (unix socket paths ≤ 107 bytes). */
  dir: string;
  /** Proxy snapshotters: name → unix socket of its snapshots gRPC service. */
  proxySnapshotters?: Record<string, string>;
}

export interface BenchContainerd {
  /** containerd's gRPC socket. */
  address: string;
  namespace: string;
  dir: string;
  /** Directory for ctr's IO fifos (ctr run --fifo-dir). */
  fifoDir: string;
  /** runc's state root of this instance's containers (ctr run --runc-root; see runcRoot()). */
  runcRoot: string;
  /** Global ctr flags: ['-a', address, '-n', namespace]. */
  ctrFlags(): string[];
  /** Runs `ctr <flags> args…`. */
  ctr(args: string[], opts?: { timeoutMs?: number; signal?: AbortSignal; bin?: string }): Promise<RunOutput>;
  /** Idempotent; see the file header. */
  stop(): Promise<void>;
}

function tomlString(s: string): string {
  return JSON.stringify(s);
}

/** containerd's gRPC socket for a containerd configured by containerdConfig(dir). */
export function containerdAddress(dir: string): string {
  return join(dir, 'c.sock');
}

/**
 * runc's state root for the containers of the containerd under `dir` (`ctr run --runc-root`). runc
 * keeps its state by namespace and container id under one root, by default shared by every
 * containerd on the host: a container a killed shim left behind (or another instance's of the same
 * id, e.g. a bench's fixed `sl-v2-2`) would make `ctr run` fail with "container with given ID
 * already exists". The root is recorded in the container's runtime options, so later task calls
 * (exec, kill, delete) need no flag.
 */
export function runcRoot(dir: string): string {
  return join(dir, 'runc');
}

/**
 * The CRI plugin enabled (issue 16): what a Kubernetes node's containerd runs with a remote
 * snapshotter. No CNI is configured, so only host-network pods can run.
 */
export interface CriPluginOptions {
  /** Snapshotter of CRI pulls and containers (a proxy snapshotter's name). */
  snapshotter: string;
  /** The pause image (must be pullable from a registry in `plainHttpRegistries` or the internet). */
  sandboxImage: string;
  /** 'host:port' registries spoken to over plain HTTP (CRI mirrors with an http:// endpoint). */
  plainHttpRegistries?: string[];
}

function criPluginConfig(dir: string, cri: CriPluginOptions): string[] {
  const p = '[plugins."io.containerd.grpc.v1.cri"';
  const lines = [
    `${p}]`,
    `  sandbox_image = ${tomlString(cri.sandboxImage)}`,
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    '  disable_apparmor = true',
    '  enable_selinux = false',
    // The sandbox asks for oom_score_adj -998; where even root may not lower it (containers, this CI)
    // runc init dies. Restricting keeps it >= containerd's own, as on rootless/nested nodes.
    '  restrict_oom_score_adj = true',
    `${p}.containerd]`,
    `  snapshotter = ${tomlString(cri.snapshotter)}`,
    // containerd 1.6 defaults to true, which hides the cri.* labels remote snapshotters need.
    '  disable_snapshot_annotations = false',
    '  default_runtime_name = "runc"',
    `${p}.containerd.runtimes.runc]`,
    '  runtime_type = "io.containerd.runc.v2"',
    `${p}.cni]`,
    `  bin_dir = ${tomlString(join(dir, 'cni', 'bin'))}`,
    `  conf_dir = ${tomlString(join(dir, 'cni', 'conf'))}`,
  ];
  for (const host of cri.plainHttpRegistries ?? []) {
    lines.push(`${p}.registry.mirrors.${tomlString(host)}]`, `  endpoint = [${tomlString(`http://${host}`)}]`);
  }
  return lines;
}

/** containerd config (version 2, containerd 1.6) for a private instance under `dir`. */
export function containerdConfig(dir: string, proxySnapshotters: Record<string, string> = {}, cri?: CriPluginOptions): string {
  const disabled = cri ? DISABLED_PLUGINS.filter((p) => p !== 'io.containerd.grpc.v1.cri') : DISABLED_PLUGINS;
  const lines = [
    'version = 2',
    `root = ${tomlString(join(dir, 'root'))}`,
    `state = ${tomlString(join(dir, 'state'))}`,
    `disabled_plugins = [${disabled.map(tomlString).join(', ')}]`,
    '[grpc]',
    `  address = ${tomlString(containerdAddress(dir))}`,
    '[ttrpc]',
    `  address = ${tomlString(containerdAddress(dir) + '.ttrpc')}`,
    '[debug]',
    `  address = ${tomlString(join(dir, 'debug.sock'))}`,
    '  level = "warn"',
    '[metrics]',
    '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${tomlString(join(dir, 'opt'))}`,
  ];
  for (const [name, socket] of Object.entries(proxySnapshotters)) {
    lines.push(`[proxy_plugins.${tomlString(name)}]`, '  type = "snapshot"', `  address = ${tomlString(socket)}`);
  }
  if (cri) lines.push(...criPluginConfig(dir, cri));
  return lines.join('\n') + '\n';
}

/** Unmounts everything under `dir` (lazily if busy). Returns what could not be unmounted. */
export async function unmountUnder(dir: string): Promise<string[]> {
  const failed: string[] = [];
  for (const mp of await mountsUnder(dir)) {
    try {
      await runCommand('umount', [mp], { timeoutMs: 10_000 });
    } catch {
      try {
        await runCommand('umount', ['-l', mp], { timeoutMs: 10_000 });
      } catch {
        failed.push(mp);
      }
    }
  }
  return failed;
}

/** PIDs of processes (not this one) whose argv satisfies `match`. */
export function pidsWhere(match: (argv: string[]) => boolean): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (match(argv)) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** PIDs of processes whose command line contains `needle` as one argument (e.g. our containerd socket path). */
export function pidsWithArg(needle: string): number[] {
  return pidsWhere((argv) => argv.includes(needle));
}

export async function startContainerd(opts: ContainerdOptions): Promise<BenchContainerd> {
  const { dir } = opts;
  mkdirSync(dir, { recursive: true });
  const fifoDir = join(dir, 'fifo');
  mkdirSync(fifoDir, { recursive: true });
  const configPath = join(dir, 'config.toml');
  writeFileSync(configPath, containerdConfig(dir, opts.proxySnapshotters));
  const address = containerdAddress(dir);
  const flags = ['-a', address, '-n', BENCH_NAMESPACE];
  const ctr: BenchContainerd['ctr'] = (args, o = {}) => runCommand(o.bin ?? 'ctr', [...flags, ...args], { timeoutMs: o.timeoutMs ?? CTR_TIMEOUT_MS, signal: o.signal });
  const daemon = await startDaemon(
    'containerd',
    'containerd',
    ['--config', configPath],
    async () => existsSync(address) && (await ctr(['version'], { timeoutMs: 5_000 })).code === 0,
    { timeoutMs: START_TIMEOUT_MS },
  );
  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    const quiet = (p: Promise<unknown>): Promise<void> => p.then(() => undefined, () => undefined);
    if (daemon.child.exitCode === null) {
      const tasks = await ctr(['tasks', 'ls', '-q'], { timeoutMs: 10_000 }).catch(() => undefined);
      for (const id of tasks?.stdout.split('\n').filter(Boolean) ?? []) {
        await quiet(ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 10_000 }));
        await quiet(ctr(['tasks', 'delete', '-f', id], { timeoutMs: 10_000 }));
      }
      const ctrs = await ctr(['containers', 'ls', '-q'], { timeoutMs: 10_000 }).catch(() => undefined);
      for (const id of ctrs?.stdout.split('\n').filter(Boolean) ?? []) await quiet(ctr(['containers', 'delete', id], { timeoutMs: 10_000 }));
    }
    await daemon.stop();
    // Shims are started detached and carry `-address <our socket>`: only ours match.
    for (const pid of pidsWithArg(address)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await unmountUnder(dir);
  };
  return {
    address,
    namespace: BENCH_NAMESPACE,
    dir,
    fifoDir,
    runcRoot: runcRoot(dir),
    ctrFlags: () => [...flags],
    ctr,
    stop: () => (stopping ??= stop()),
  };
}
