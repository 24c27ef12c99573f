/**
 * A private containerd for e2e tests (own root, state, socket and config in a temp dir; the host's
 * containerd is never touched), our snapshotter as a child process (`starlight snapshotter`),
 * `ctr` invocations, and full teardown even on failure: kill tasks, delete containers, stop
 * containerd and the snapshotter, kill leftover shims of THIS containerd (found by its address in
 * their command line, killed by pid), unmount what is left under the temp dir.
 *
 * containerd 1.6 shims always put their sockets in /run/containerd/s/ (docs/design.md); those are
 * named by a hash of our address, so they do not collide with the host's.
 */
import type { ExecutionContext } from 'ava';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, readdir, realpath, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { containerdAddress, containerdConfig, runcRoot, type CriPluginOptions } from '../../bench/drivers/containerd.js';
import { RegistryClient } from '../../src/oci/client.js';
import { parseReference } from '../../src/oci/reference.js';
import { MEDIA_TYPES } from '../../src/oci/types.js';
import { unmountAllUnder } from '../../src/worker/fs/mount-table.js';
import { tempDir } from './tmp.js';

/** The containerd namespace our tests use. */
export const TEST_NAMESPACE = 'starlight-test';
/** The namespace of containerd's CRI plugin (pods, containers and images made over CRI). */
export const CRI_NAMESPACE = 'k8s.io';
/** The proxy plugin name containerd knows our snapshotter by. */
export const SNAPSHOTTER_NAME = 'starlight';
/** How long containerd / the snapshotter may take to come up, ms. */
const START_TIMEOUT_MS = 20_000;
/** Default deadline of one ctr call, ms (pulls and runs included). */
const CTR_TIMEOUT_MS = 60_000;
/** SIGTERM → SIGKILL grace for our children, ms. */
const STOP_GRACE_MS = 5_000;

export const BIN_STARLIGHT = fileURLToPath(new URL('../../../bin/starlight.js', import.meta.url));

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Containerd {
  /** The temp dir holding everything. */
  dir: string;
  address: string;
  fifoDir: string;
  /** Runs `ctr --address … -n starlight-test ARGS`; resolves with the result, never rejects on exit code. */
  ctr(args: string[], opts?: { timeoutMs?: number }): Promise<CtrResult>;
  /** Like ctr but rejects unless the exit code is 0. */
  ctrOk(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** The snapshotter child (restartable). */
  snapshotter: SnapshotterProcess;
  /**
   * Restarts the snapshotter and waits until containerd talks to it again: containerd's proxy-plugin
   * connection redials with backoff, so the first calls after a restart can time out (seen under load).
   */
  restartSnapshotter(signal?: NodeJS.Signals, bin?: string): Promise<number | null>;
}

export interface SnapshotterProcess {
  socket: string;
  root: string;
  /** The daemon's API socket (`starlight pull --daemon`). */
  apiSocket: string;
  /** Log lines (JSON) the daemon wrote to stderr. */
  logs(): string[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Starts it again; `bin`: another build's bin/starlight.js (a simulated upgrade). */
  start(bin?: string): Promise<void>;
  /** Process id of the running daemon, or undefined. */
  pid(): number | undefined;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<CtrResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

async function waitFor(what: string, check: () => Promise<boolean>, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await check())) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}; see ${logFile}: ${await readFile(logFile, 'utf8').catch(() => '')}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${START_TIMEOUT_MS} ms; see ${logFile}`);
    await sleep(100);
  }
}

/** Starts `starlight snapshotter` as a child; stop()/start() allow a restart mid-test. */
async function startSnapshotterProcess(t: ExecutionContext, dir: string, extraArgs: string[]): Promise<SnapshotterProcess> {
  const socket = join(dir, 'starlight.sock');
  const root = join(dir, 'starlight');
  const logFile = join(dir, 'starlight.log');
  const lines: string[] = [];
  let child: ChildProcess | undefined;
  const proc: SnapshotterProcess = {
    socket,
    root,
    apiSocket: join(root, 'daemon.sock'),
    logs: () => [...lines],
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid : undefined),
    async start(bin = BIN_STARLIGHT) {
      const from = lines.length; // a restart waits for its own start line, not the previous one's
      const c = spawn(process.execPath, [bin, 'snapshotter', '--socket', socket, '--root', root, '--log-level', 'info', ...extraArgs], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      child = c;
      const log = createWriteStream(logFile, { flags: 'a' });
      c.stderr!.on('data', (d: Buffer) => {
        log.write(d);
        for (const l of d.toString().split('\n')) if (l.startsWith('{')) lines.push(l);
      });
      c.once('exit', () => log.end());
      await waitFor('starlight snapshotter', async () => lines.slice(from).some((l) => l.includes('"worker-daemon-started"')), c, logFile);
    },
    async stop(signal = 'SIGTERM') {
      return child ? stopChild(child, signal) : null;
    },
  };
  t.teardown(() => proc.stop());
  await proc.start();
  return proc;
}

/** Pids of containerd-shim processes started for `address` (their command line names it). */
async function shimsOf(address: string): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.startsWith('/usr/bin/containerd-shim') && cmd.split('\0').includes(address)) pids.push(Number(p));
  }
  return pids;
}

export interface ContainerdOptions {
  /** Extra arguments of `starlight snapshotter` (e.g. ['--proxy', url]). */
  snapshotterArgs?: string[];
  /** Enable containerd's CRI plugin (test/e2e/cri.test.ts); its snapshotter is `starlight`. */
  cri?: Omit<CriPluginOptions, 'snapshotter'>;
}

/** How long a test waits for containerd to redial a restarted snapshotter, ms. */
const SNAPSHOTTER_REDIAL_MS = 60_000;

export async function startContainerd(t: ExecutionContext, opts: ContainerdOptions = {}): Promise<Containerd> {
  const dir = tempDir(t, 'sl-ctrd-');
  // Registered first so it runs LAST (ava runs teardowns in reverse order): after everything stopped.
  t.teardown(async () => {
    await unmountAllUnder(dir);
  });
  await mkdir(join(dir, 'fifo'), { recursive: true });
  const cdDir = join(dir, 'containerd');
  await mkdir(cdDir, { recursive: true });
  const address = containerdAddress(cdDir);
  const snapshotter = await startSnapshotterProcess(t, dir, ['--containerd-address', address, ...(opts.snapshotterArgs ?? [])]);
  const configPath = join(dir, 'config.toml');
  const cri = opts.cri ? { ...opts.cri, snapshotter: SNAPSHOTTER_NAME } : undefined;
  await writeFile(configPath, containerdConfig(cdDir, { [SNAPSHOTTER_NAME]: snapshotter.socket }, cri));
  const logFile = join(dir, 'containerd.log');
  const log = createWriteStream(logFile);
  const child = spawn('/usr/bin/containerd', ['--config', configPath, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);

  // Each test containerd gives runc its own state root (see runcRoot): no 'ID already exists' from
  // a container a killed shim left behind, or from another test's of the same id.
  const runcState = runcRoot(cdDir);
  const ctr = (args: string[], opts: { timeoutMs?: number } = {}) =>
    run('ctr', ['--address', address, '-n', TEST_NAMESPACE, ...(args[0] === 'run' ? ['run', '--runc-root', runcState, ...args.slice(1)] : args)], opts.timeoutMs ?? CTR_TIMEOUT_MS);
  const ctrOk = async (args: string[], opts: { timeoutMs?: number } = {}) => {
    const r = await ctr(args, opts);
    if (r.code !== 0) throw new Error(`ctr ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  };

  t.teardown(async () => {
    // CRI pods left by a failed test are plain tasks in the CRI namespace: killed the same way.
    for (const ns of opts.cri ? [TEST_NAMESPACE, CRI_NAMESPACE] : [TEST_NAMESPACE]) {
      if (child.exitCode !== null) break;
      const nsCtr = (args: string[]) => run('ctr', ['--address', address, '-n', ns, ...args], 10_000);
      const tasks = (await nsCtr(['tasks', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
      for (const id of tasks) {
        await nsCtr(['tasks', 'kill', '-s', 'SIGKILL', id]);
        await nsCtr(['tasks', 'delete', '-f', id]);
      }
      const containers = (await nsCtr(['containers', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
      for (const id of containers) await nsCtr(['containers', 'delete', id]);
    }
    await stopChild(child);
    for (const pid of await shimsOf(address)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    log.end();
  });

  await waitFor('containerd', async () => existsSync(address) && (await run('ctr', ['--address', address, 'version'], 5_000)).code === 0, child, logFile);
  const restartSnapshotter = async (signal: NodeJS.Signals = 'SIGTERM', bin?: string): Promise<number | null> => {
    const code = await snapshotter.stop(signal);
    await snapshotter.start(bin);
    const deadline = Date.now() + SNAPSHOTTER_REDIAL_MS;
    for (;;) {
      const r = await ctr(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'ls'], { timeoutMs: 15_000 });
      if (r.code === 0) return code;
      if (Date.now() > deadline) throw new Error(`containerd did not reconnect to the restarted snapshotter: ${r.stderr.trim()}`);
      await new Promise((res) => setTimeout(res, 500));
    }
  };
  return { dir, address, fifoDir: join(dir, 'fifo'), ctr, ctrOk, snapshotter, restartSnapshotter };
}

/** The gc root label tests give the snapshots they make with ctr (containerd's gc keeps them). */
export const TEST_GC_ROOT = 'containerd.io/gc.root=starlight-test';

/**
 * Creates snapshot `key` (`ctr snapshots view|prepare key parent`) pinned as a gc root. ctr cannot label
 * a snapshot as it creates it, and containerd's gc may collect the still unreferenced snapshot before
 * the label lands (seen in CI under load: the label failed with "snapshot … does not exist"); then it
 * is created again, a bounded number of times.
 */
export async function pinnedSnapshot(c: Containerd, kind: 'view' | 'prepare', key: string, parent: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, kind, key, parent]);
    const r = await c.ctr(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'label', key, TEST_GC_ROOT]);
    if (r.code === 0) return;
    if (attempt >= 3 || !/not found/.test(r.stderr)) throw new Error(`ctr snapshots label ${key} exited ${r.code}: ${r.stderr.trim()}`);
  }
}

// ---- a tiny runnable image built from this machine's files ----

/** Programs copied into the test image with their shared libraries (Debian merged-/usr layout). */
const IMAGE_PROGRAMS = ['/usr/bin/dash', '/usr/bin/id', '/usr/bin/rm', '/usr/bin/cat', '/usr/bin/ls', '/usr/bin/mkdir', '/usr/bin/touch', '/usr/bin/setpriv'];

export interface TestImageLayer {
  /** gzip-compressed tar. */
  blob: Buffer;
  digest: string;
  diffId: string;
}

export interface TestImage {
  layers: TestImageLayer[];
  config: Buffer;
  configDigest: string;
  manifest: Buffer;
  manifestDigest: string;
}

const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function sharedLibs(programs: string[]): Promise<string[]> {
  const r = await run('ldd', programs, 10_000);
  if (r.code !== 0) throw new Error(`ldd failed: ${r.stderr}`);
  return [...new Set([...r.stdout.matchAll(/(\/[^\s:]+\.so[^\s:]*)/g)].map((m) => m[1]!))];
}

async function tarLayer(dir: string): Promise<TestImageLayer> {
  const tarPath = `${dir}.tar`;
  const r = await run('tar', ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '-C', dir, '-cf', tarPath, '.'], 30_000);
  if (r.code !== 0) throw new Error(`tar failed: ${r.stderr}`);
  const tar = await readFile(tarPath);
  const blob = gzipSync(tar);
  return { blob, digest: sha256(blob), diffId: sha256(tar) };
}

/**
 * Two layers: (1) /bin/sh (dash) + coreutils' id/rm/cat/ls/mkdir/touch, setpriv (ctr 1.6 has no
 * `run --user`) and their libraries,
 * /etc/somefile, /etc/other, /tmp (1777); (2) /etc/l2file and a whiteout deleting /etc/other.
 */
export async function buildTestImage(work: string): Promise<TestImage> {
  const l1 = join(work, 'layer1');
  for (const d of ['usr/bin', 'usr/lib', 'usr/lib64', 'etc', 'tmp', 'proc', 'sys', 'dev']) await mkdir(join(l1, d), { recursive: true });
  await chmod(join(l1, 'tmp'), 0o1777);
  for (const [link, target] of [['bin', 'usr/bin'], ['lib', 'usr/lib'], ['lib64', 'usr/lib64'], ['usr/bin/sh', 'dash']]) await symlink(target!, join(l1, link!));
  for (const file of [...IMAGE_PROGRAMS, ...(await sharedLibs(IMAGE_PROGRAMS))]) {
    // Resolve the host's /lib → /usr/lib symlinks to the merged-/usr path inside the image.
    const inImage = file.replace(/^\/(lib|lib64|bin)\//, '/usr/$1/');
    await mkdir(dirname(join(l1, inImage)), { recursive: true });
    await copyFile(await realpath(file), join(l1, inImage));
    await chmod(join(l1, inImage), 0o755);
  }
  await writeFile(join(l1, 'etc/somefile'), 'some\n');
  await writeFile(join(l1, 'etc/other'), 'other\n');
  await writeFile(join(l1, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n');
  const l2 = join(work, 'layer2');
  await mkdir(join(l2, 'etc'), { recursive: true });
  await writeFile(join(l2, 'etc/l2file'), 'from layer 2\n');
  await writeFile(join(l2, 'etc/.wh.other'), '');
  const layers = [await tarLayer(l1), await tarLayer(l2)];
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.blob.length })),
    }),
  );
  return { layers, config, configDigest: sha256(config), manifest, manifestDigest: sha256(manifest) };
}

/** Pushes `img` as `<registryHost>/<repo>:<tag>` with the project's registry client (exact manifest bytes). */
export async function pushTestImage(registryHost: string, repo: string, tag: string, img: TestImage): Promise<void> {
  const client = new RegistryClient();
  const ref = parseReference(`${registryHost}/${repo}:${tag}`);
  for (const [digest, data, mediaType] of [
    [img.configDigest, img.config, MEDIA_TYPES.ociConfig],
    ...img.layers.map((l) => [l.digest, l.blob, MEDIA_TYPES.ociLayerGzip] as const),
  ] as const) {
    await client.pushBlob(ref, data, { mediaType, digest, size: data.length });
  }
  const digest = await client.pushManifest(ref, img.manifest, MEDIA_TYPES.ociManifest);
  if (digest !== img.manifestDigest) throw new Error(`registry stored manifest ${digest}, expected ${img.manifestDigest}`);
}
