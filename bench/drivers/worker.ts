/**
 * A Starlight worker for one bench trial: `starlight snapshotter` (the worker daemon, own root,
 * sockets, proxy URL) plus a private containerd with it as proxy snapshotter "starlight"; `pull`
 * runs `starlight pull` against the daemon's API socket.
 *
 * Not here: the modes (starlight.ts), containerd itself (containerd.ts).
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { DaemonClient } from '../../src/worker/api/client.js';
import { BENCH_NAMESPACE, containerdAddress, startContainerd, type BenchContainerd } from './containerd.js';
import { envWords, runCommand, startDaemon } from './proc.js';
import { starlightBin } from './proxy.js';
import type { TrialEnv } from './types.js';

/** Snapshotter name of the worker daemon in the trial's containerd config. */
export const SNAPSHOTTER = 'starlight';
/** How long the daemon may take to create its sockets, ms. */
const START_TIMEOUT_MS = 30_000;
/** How long `starlight snapshotter --shutdown-views` may take, ms. */
const SHUTDOWN_VIEWS_TIMEOUT_MS = 30_000;
/** Debug aid: when set, each daemon logs at this level to /tmp/slb-daemon-<trial>-<worker>.log (outlives the trial dir). */
const LOG_ENV = 'STARLIGHT_BENCH_DAEMON_LOG';
/** Profiling aid: node flags for each daemon, space-separated (e.g. `--cpu-prof --cpu-prof-dir=/tmp/p`; NODE_OPTIONS refuses --cpu-prof). */
const NODE_FLAGS_ENV = 'STARLIGHT_BENCH_DAEMON_NODE_FLAGS';
/** Extra `starlight snapshotter` flags for every bench daemon, space-separated (A/B of a daemon option, e.g. `--no-graduate`). */
const DAEMON_FLAGS_ENV = 'STARLIGHT_BENCH_DAEMON_FLAGS';
/** The daemon flag that sets the auto-trace window (0 = off), when the CLI has it. */
const TRACE_WINDOW_FLAG = '--trace-window';

/**
 * Not passed to the timed `starlight pull`: node reads and parses this CA file at start-up, before
 * any JS runs (issue 19: set for every process on this machine, it made each node start ~65 ms
 * longer, `node -e 0` median 156 → 58 ms). The CLI speaks plain HTTP to the daemon's unix socket
 * and uses no CA; the other modes' clients (ctr, ctr-remote) are Go and do not pay it.
 */
const PULL_ENV_DROPPED = 'NODE_EXTRA_CA_CERTS';

/** `env` without PULL_ENV_DROPPED; `dropped`: it was set. */
export function pullEnv(env: NodeJS.ProcessEnv = process.env): { env: NodeJS.ProcessEnv; dropped: boolean } {
  const { [PULL_ENV_DROPPED]: value, ...rest } = env;
  return { env: rest, dropped: value !== undefined };
}
/** The bench's log says once per process that the pulls run without PULL_ENV_DROPPED. */
let pullEnvSaid = false;

export interface StarlightWorker {
  cd: BenchContainerd;
  client: DaemonClient;
  apiSocket: string;
  /** The daemon's --root (its trace spool is <root>/traces). */
  root: string;
  /** Debug aid: appends a timeline mark (wall time of performance.now() `at`) to the daemon's log file, if one is kept. */
  mark(msg: string, at?: number): void;
  /** `starlight pull` of `ref` into the bench namespace; resolves with the image name containerd knows. */
  pull(ref: string, env: TrialEnv): Promise<string>;
  /** The last pull's `--timings` (CLI start-up, request, the daemon's phases; ms), if the CLI printed them. */
  lastPullTimings?: Record<string, number>;
  /** Stops containerd and the daemon, then ends its fd holder and unmounts its views (`--shutdown-views`). */
  stop(): Promise<void>;
}

/**
 * Starts daemon + containerd under `dir` (short path: unix sockets). `autoTraces: false` turns the
 * daemon's auto tracing off when its CLI offers a flag for it (so an untraced mode uploads nothing);
 * `manualUpload` keeps recorded traces on disk until `client.report()`.
 */
export async function startWorker(dir: string, proxyUrl: string, opts: { autoTraces: boolean; manualUpload?: boolean; noGraduate?: boolean; viewIdleS?: number }, env: TrialEnv): Promise<StarlightWorker> {
  mkdirSync(dir, { recursive: true });
  const root = join(dir, 'r');
  const socket = join(dir, 's.sock');
  const apiSocket = join(dir, 'api.sock');
  const cdDir = join(dir, 'cd');
  const bin = starlightBin();
  const extra: string[] = [];
  if (!opts.autoTraces) {
    const help = await runCommand(process.execPath, [bin, 'snapshotter', '--help'], { timeoutMs: 10_000 }).catch(() => undefined);
    if (help?.stdout.includes(TRACE_WINDOW_FLAG)) extra.push(TRACE_WINDOW_FLAG, '0');
  }
  // Recorded traces stay in <root>/traces until `starlight report` (the bench reads them first).
  if (opts.manualUpload) extra.push('--trace-upload', 'manual');
  if (opts.noGraduate) extra.push('--no-graduate');
  if (opts.viewIdleS !== undefined) extra.push('--view-idle', String(opts.viewIdleS));
  extra.push(...envWords(DAEMON_FLAGS_ENV));
  const level = process.env[LOG_ENV];
  const nodeFlags = envWords(NODE_FLAGS_ENV);
  const args = [...nodeFlags, bin, 'snapshotter', '--socket', socket, '--root', root, '--api-socket', apiSocket, '--proxy', proxyUrl, '--containerd-address', containerdAddress(cdDir), '--log-level', level || 'warn', ...extra];
  // With the debug aid on, stderr goes to a file (a shell redirect) instead of the in-memory tail.
  const logFile = `/tmp/slb-daemon-${dir.split('/').slice(-2).join('-')}.log`;
  const [cmd, argv] = level ? ['sh', ['-c', `exec "$0" "$@" 2>>${JSON.stringify(logFile)}`, process.execPath, ...args]] : [process.execPath, args];
  const mark = (msg: string, at = performance.now()): void => {
    if (level) appendFileSync(logFile, JSON.stringify({ time: new Date(Date.now() - (performance.now() - at)).toISOString(), level: 'info', msg }) + '\n');
  };
  const daemon = await startDaemon('starlight snapshotter', cmd, argv, async () => existsSync(socket) && existsSync(apiSocket), { timeoutMs: START_TIMEOUT_MS });
  let cd: BenchContainerd;
  try {
    cd = await startContainerd({ dir: cdDir, proxySnapshotters: { [SNAPSHOTTER]: socket } });
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await cd.stop();
      await daemon.stop();
      // A plain stop leaves the lazy views mounted and their fd holder running for the next daemon
      // (issue 13); a bench worker is gone for good: end them too, or they outlive the trial step.
      await runCommand(process.execPath, [bin, 'snapshotter', '--shutdown-views', '--root', root], { timeoutMs: SHUTDOWN_VIEWS_TIMEOUT_MS });
    })());
  env.cleanups.add(`stop starlight worker ${dir}`, stop);
  const cliEnv = pullEnv();
  if (cliEnv.dropped && !pullEnvSaid) {
    pullEnvSaid = true;
    process.stderr.write(`[bench] starlight pull runs without ${PULL_ENV_DROPPED}, which is set here (node parses it at every start: bench/README.md)\n`);
  }
  const worker: StarlightWorker = {
    cd,
    client: new DaemonClient(apiSocket),
    apiSocket,
    root,
    mark,
    async pull(ref, e) {
      mark('bench-pull-start');
      const r = await runCommand(process.execPath, [bin, 'pull', '--timings', '--daemon', apiSocket, '-n', BENCH_NAMESPACE, ref], { timeoutMs: e.spec.timeoutMs, signal: e.signal, env: cliEnv.env });
      mark('bench-pull-end');
      worker.lastPullTimings = parseTimings(r.stderr);
      // "<name> <digest>: ready in N ms (…)"
      return r.stdout.trim().split(/\s+/)[0] ?? ref;
    },
    stop,
  };
  return worker;
}

/** The `{"timings":{…}}` line `starlight pull --timings` writes to stderr, if any. */
function parseTimings(stderr: string): Record<string, number> | undefined {
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{"timings"')) continue;
    try {
      return (JSON.parse(line) as { timings: Record<string, number> }).timings;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
