/**
 * The local demo (`bash scripts/demo.sh`, which installs what is needed and runs this compiled as
 * dist/scripts/demo.js): starts the stack (scripts/demo/stack.ts), pushes the Debian python3 web
 * app image (bench/images, built once and cached under /var/cache/starlight), lazily pulls and runs
 * it through Starlight, makes one HTTP request to it, then updates it to v2, and prints a summary
 * (scripts/demo/report.ts). Everything it started is torn down at the end, on failure and on
 * SIGINT/SIGTERM/SIGHUP; with --keep it stays up until one of those signals.
 *
 * Exit codes: 0 done; the CLI's mapping (src/cli/exit-codes.ts) on failure; 130 when interrupted.
 * Not here: installing dependencies (scripts/install-deps.sh via demo.sh).
 */
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Cleanups } from '../bench/drivers/proc.js';
import { starlightBin } from '../bench/drivers/proxy.js';
import { ensureDebianImage, type EnsuredImage } from '../bench/images/ensure.js';
import { PORT_LABEL, READY_LABEL } from '../bench/images/push.js';
import { exitCodeFor, formatError } from '../src/cli/exit-codes.js';
import { StarlightError } from '../src/errors.js';
import { HarnessError } from '../fixtures/harness-error.js';
import { hostPortFree, httpGet, runToReady, starlightNotify, starlightPull, streamFacts, waitStreamComplete, type RunningApp } from './demo/app.js';
import { DEMO_USAGE, parseDemoArgs, type DemoOptions } from './demo/options.js';
import { firstRunLines, Steps, updateLines } from './demo/report.js';
import { makeWorkDir, SNAPSHOTTER, startStack, type DemoStack } from './demo/stack.js';

/** The bench image the demo runs (bench/images/README.md): python3 http.server, ready line, port label. */
const IMAGE = 'python-web';
/** Repository of the demo image in the demo's own registry. */
const REPOSITORY = 'demo/python-web';
/** Base time the v1/v2 streams may take to complete, ms; plus 4× the transfer time at --bandwidth. */
const COMPLETE_BASE_TIMEOUT_MS = 120_000;
/** Lines of the snapshotter daemon's output shown after a failure. */
const DAEMON_TAIL_LINES = 20;
/** Signals that stop the demo (and end --keep). */
const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function labelOf(img: EnsuredImage, label: string): string {
  const v = img.config.config?.Labels?.[label];
  if (v === undefined) throw new HarnessError('SL_ERR_DEMO_STEP', `image ${img.reference} has no ${label} label in its config; rebuild it with bench/images/build-rootfs.sh`, { details: { image: img.reference, label } });
  return v;
}

const compressed = (img: EnsuredImage): number => img.manifest.layers.reduce((n, l) => n + l.size, 0);

function completeTimeoutMs(img: EnsuredImage, opts: DemoOptions): number {
  const bps = opts.wan?.bandwidthBps ?? 0;
  return COMPLETE_BASE_TIMEOUT_MS + (bps > 0 ? (4 * compressed(img) * 8 * 1000) / bps : 0);
}

/** Waits for one of STOP_SIGNALS (i.e. the abort of `signal`). */
function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
}

function keepHelp(s: DemoStack, app: RunningApp, port: number, v1: EnsuredImage, v2: EnsuredImage): string[] {
  const cd = s.containerd;
  const ctr = `ctr --address ${cd.address} -n ${cd.namespace}`;
  const sl = `node ${starlightBin()}`;
  const curl = app.netHost ? `curl http://127.0.0.1:${port}/` : `nsenter --target "$(${ctr} tasks ls | awk '$1=="${app.id}"{print $2}')" --net curl http://127.0.0.1:${port}/`;
  return [
    '',
    `Running (state in ${s.workDir}). Press Ctrl-C to stop everything and clean up.`,
    `  the app (${app.id}, ${v2.reference}):`,
    `    ${curl}`,
    '  containerd (private instance; the host one is untouched):',
    `    ${ctr} images ls`,
    `    ${ctr} run --rm -t --snapshotter ${SNAPSHOTTER} --fifo-dir ${cd.fifoDir} ${v1.reference} shell1 /bin/bash`,
    '  Starlight:',
    `    ${sl} status --daemon ${s.apiSocket}`,
    `    ${sl} pull --daemon ${s.apiSocket} -n ${cd.namespace} ${v1.reference}`,
    `  registry http://${s.registry.host}/v2/_catalog, proxy metrics http://${s.proxy.host}/metrics`,
  ];
}

/** Runs the whole demo; the caller runs `cleanups` afterwards in every case. */
/** What a failure report shows besides the error: the last lines the snapshotter daemon wrote. */
interface Diagnostics {
  daemonOutput?: () => string;
}

async function runDemo(opts: DemoOptions, workDir: string, cleanups: Cleanups, steps: Steps, signal: AbortSignal, print: (lines: string[]) => void, diag: Diagnostics): Promise<void> {
  steps.note(`Starlight demo (state in ${workDir})`);
  const s: DemoStack = { workDir, ...(await startStack(workDir, { wan: opts.wan, steps, signal }, cleanups)) };
  diag.daemonOutput = () => s.daemon.output();
  const cd = s.containerd;
  const buildNote = ' (first run: debootstrap, ~1 min; then cached)';
  const v1 = await steps.run(`image ${REPOSITORY}:v1${buildNote}`, () => ensureDebianImage(s.registry.host, IMAGE, { version: 'v1', repository: REPOSITORY, signal }), (i) => i.reference);
  const port = Number(labelOf(v1, PORT_LABEL));
  const netHost = await hostPortFree(port);
  if (!netHost) steps.note(`port ${port} is taken on this host: the container keeps its own network namespace`);

  const indexMs = await steps.run('proxy indexes v1 (starlight notify)', () => starlightNotify(s.proxy.host, v1.reference, signal));

  // v1 on a fresh worker.
  const t0 = performance.now();
  const pullMs = await steps.run(`starlight pull ${v1.reference}`, () => starlightPull(s.apiSocket, cd.namespace, v1.reference, signal));
  const ready1 = labelOf(v1, READY_LABEL);
  const app1 = await steps.run(`ctr run --snapshotter ${SNAPSHOTTER}${netHost ? ' --net-host' : ''} (until ${JSON.stringify(ready1)})`, () => runToReady(cd, v1.reference, 'demo-v1', ready1, netHost, signal));
  cleanups.add('stop container demo-v1', () => app1.container.stop());
  const atReady = await streamFacts(s.apiSocket, v1.digest);
  const http1 = await steps.run('HTTP request to the app', () => httpGet(cd, app1, port, '/', signal), (h) => String(h.status));
  const complete = await steps.run('rest of the stream', () => waitStreamComplete(s.apiSocket, v1.digest, completeTimeoutMs(v1, opts), signal));
  const completeMs = performance.now() - t0;
  print(
    firstRunLines({
      ref: v1.reference,
      layers: v1.manifest.layers.length,
      compressedBytes: compressed(v1),
      wan: opts.wan,
      indexMs,
      pullMs,
      readyMs: app1.container.readyAt - t0,
      runMs: app1.container.readyAt - app1.container.startedAt,
      readyLine: ready1,
      http: http1,
      atReady,
      completeMs,
      complete,
    }),
  );
  await steps.run('stop container demo-v1', () => app1.container.stop());

  // Update v1 → v2: only content v1 lacks is sent.
  const v2 = await steps.run(`image ${REPOSITORY}:v2`, () => ensureDebianImage(s.registry.host, IMAGE, { version: 'v2', repository: REPOSITORY, signal }), (i) => i.reference);
  const index2Ms = await steps.run('proxy indexes v2 (starlight notify)', () => starlightNotify(s.proxy.host, v2.reference, signal));
  const t1 = performance.now();
  const pull2Ms = await steps.run(`starlight pull ${v2.reference}`, () => starlightPull(s.apiSocket, cd.namespace, v2.reference, signal));
  const ready2 = labelOf(v2, READY_LABEL);
  const app2 = await steps.run(`ctr run (until ${JSON.stringify(ready2)})`, () => runToReady(cd, v2.reference, 'demo-v2', ready2, netHost, signal));
  cleanups.add('stop container demo-v2', () => app2.container.stop());
  const readyMs2 = app2.container.readyAt - t1;
  const http2 = await steps.run('HTTP request to v2', () => httpGet(cd, app2, port, '/new-in-v2.txt', signal), (h) => String(h.status));
  const sent = await steps.run('rest of the v2 stream', () => waitStreamComplete(s.apiSocket, v2.digest, completeTimeoutMs(v2, opts), signal));
  const v1Layers = new Set(v1.manifest.layers.map((l) => l.digest));
  const newLayers = v2.manifest.layers.filter((l) => !v1Layers.has(l.digest));
  print(
    updateLines({
      indexMs: index2Ms,
      pullMs: pull2Ms,
      readyMs: readyMs2,
      http: http2,
      sent,
      compressedBytes: compressed(v2),
      newLayers: newLayers.length,
      newLayersBytes: newLayers.reduce((n, l) => n + l.size, 0),
    }),
  );

  if (opts.keep) {
    print(keepHelp(s, app2, port, v1, v2));
    await untilAborted(signal);
  }
}

export async function main(argv: string[]): Promise<number> {
  const opts = parseDemoArgs(argv);
  if (opts.help) {
    process.stdout.write(DEMO_USAGE + '\n');
    return 0;
  }
  if (process.getuid?.() !== 0) {
    throw new HarnessError('SL_ERR_DEMO_STEP', 'the demo must run as root (containerd, runc, FUSE and overlay mounts); run: sudo bash scripts/demo.sh');
  }
  const ac = new AbortController();
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (!stopping && !opts.keep) process.stderr.write(`\n${sig}: stopping and cleaning up…\n`);
    else if (stopping) process.stderr.write('still cleaning up; please wait…\n');
    stopping = true;
    ac.abort(new StarlightError('SL_ERR_CANCELED', `demo interrupted by ${sig}`));
  };
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  const steps = new Steps();
  const print = (lines: string[]): void => void process.stdout.write(lines.join('\n') + '\n');
  const cleanups = new Cleanups();
  let failure: unknown;
  let workDir: string | undefined;
  const diag: Diagnostics = {};
  try {
    workDir = await makeWorkDir(cleanups);
    await runDemo(opts, workDir, cleanups, steps, ac.signal, print, diag);
  } catch (err) {
    failure = ac.signal.aborted ? ac.signal.reason : err;
  }
  const daemonTail = failure !== undefined && !ac.signal.aborted ? diag.daemonOutput?.().trim().split('\n').slice(-DAEMON_TAIL_LINES) : undefined;
  const errors = await steps.run('cleaning up', () => cleanups.run());
  for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
  if (errors.length > 0) {
    process.stderr.write(`demo: cleanup incomplete:\n${errors.map((e) => `  ${e}`).join('\n')}\n`);
    if (failure === undefined) return 70;
  } else if (workDir !== undefined) {
    print([`cleaned up:  containers, containerd, snapshotter daemon, proxy, registry, mounts and ${workDir}`]);
  }
  if (failure !== undefined) {
    if (ac.signal.aborted) {
      process.stderr.write('demo: interrupted; everything it started was stopped\n');
      return 130;
    }
    process.stderr.write(formatError(failure) + '\n');
    if (daemonTail?.length) process.stderr.write(`the snapshotter daemon's last lines:\n${daemonTail.map((l) => `  ${l}`).join('\n')}\n`);
    return exitCodeFor(failure);
  }
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(formatError(err) + '\n');
      process.exitCode = exitCodeFor(err);
    },
  );
}
