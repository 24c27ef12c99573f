/**
 * The demo's app steps against a running stack: `starlight pull` (timed), `ctr run --snapshotter
 * starlight` until the image's ready line (bench/drivers/container.ts), one HTTP request to the app,
 * and the daemon's stream progress of an image (at ready, and polled until the stream completes).
 *
 * Network: the app listens on the port of its image config label (org.starlight.bench.port). When
 * that port is free on the host, the container shares the host's network namespace (`ctr run
 * --net-host`) and the request goes to 127.0.0.1:PORT, which is also what a person can curl with
 * `--keep`. When it is taken, the container keeps its own network namespace (ctr's default, loopback
 * only, as the e2e tests run it) and the request is made from inside it (`nsenter --net`).
 *
 * Not here: starting the components (stack.ts), wording (report.ts).
 */
import { createServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { runUntilReady, type ReadyContainer } from '../../bench/drivers/container.js';
import type { BenchContainerd } from '../../bench/drivers/containerd.js';
import { runCommand } from '../../bench/drivers/proc.js';
import { starlightBin } from '../../bench/drivers/proxy.js';
import { HarnessError } from '../../fixtures/harness-error.js';
import { DaemonClient } from '../../src/worker/api/client.js';
import type { HttpFacts, StreamFacts } from './report.js';
import { SNAPSHOTTER } from './stack.js';

/** Longest `starlight pull` (header in, containerd records written) or `starlight notify` (indexing) may take, ms. */
const PULL_TIMEOUT_MS = 120_000;
/** Longest the container may take from `ctr run` to its ready line, ms. */
const READY_TIMEOUT_MS = 120_000;
/** Deadline of the HTTP request to the app, ms. */
const HTTP_TIMEOUT_MS = 10_000;
/** Poll interval of the daemon's status while waiting for a stream to complete, ms. */
const STATUS_POLL_MS = 200;

/** Times of one pull, ms since an arbitrary origin (performance.now()). */
export async function starlightPull(apiSocket: string, namespace: string, ref: string, signal: AbortSignal): Promise<number> {
  const t0 = performance.now();
  await runCommand(process.execPath, [starlightBin(), 'pull', '--daemon', apiSocket, '-n', namespace, ref], { timeoutMs: PULL_TIMEOUT_MS, signal });
  return performance.now() - t0;
}

/**
 * `starlight notify REF --proxy URL`: the proxy indexes the image now (what a registry webhook
 * would trigger on push), so the pull that follows measures the worker's side only. Returns ms.
 */
export async function starlightNotify(proxyHost: string, ref: string, signal: AbortSignal): Promise<number> {
  const t0 = performance.now();
  await runCommand(process.execPath, [starlightBin(), 'notify', ref, '--proxy', `http://${proxyHost}`], { timeoutMs: PULL_TIMEOUT_MS, signal });
  return performance.now() - t0;
}

/** True when nothing listens on `port` (any address) so the container may bind it in the host's namespace. */
export function hostPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

export interface RunningApp {
  container: ReadyContainer;
  id: string;
  /** Whether the container shares the host's network namespace. */
  netHost: boolean;
}

export async function runToReady(cd: BenchContainerd, ref: string, id: string, readyLine: string, netHost: boolean, signal: AbortSignal): Promise<RunningApp> {
  const container = await runUntilReady(cd, { ref, id, snapshotter: SNAPSHOTTER, flags: netHost ? ['--net-host'] : [] }, readyLine, { timeoutMs: READY_TIMEOUT_MS, signal });
  return { container, id, netHost };
}

/** The host pid of a running task (`ctr tasks ls`). */
async function taskPid(cd: BenchContainerd, id: string): Promise<number> {
  const out = (await cd.ctr(['tasks', 'ls'], { timeoutMs: 10_000 })).stdout;
  for (const line of out.split('\n').slice(1)) {
    const [task, pid] = line.trim().split(/\s+/);
    if (task === id && Number(pid) > 0) return Number(pid);
  }
  throw new HarnessError('SL_ERR_DEMO_STEP', `task ${id} is not listed by ctr tasks ls: ${out.trim()}`, { details: { id } });
}

/** Node script run inside the container's network namespace: GET argv[1], print {status, bytes, body}. */
const FETCH_SCRIPT = `fetch(process.argv[1], { signal: AbortSignal.timeout(${HTTP_TIMEOUT_MS}) }).then(async (r) => {
  const body = Buffer.from(await r.arrayBuffer());
  process.stdout.write(JSON.stringify({ status: r.status, bytes: body.length, body: body.subarray(0, 512).toString() }));
}).catch((e) => { process.stderr.write(String(e && e.message)); process.exit(1); });`;

/** GET http://127.0.0.1:port/path from the app's network namespace. */
export async function httpGet(cd: BenchContainerd, app: RunningApp, port: number, path: string, signal: AbortSignal): Promise<HttpFacts> {
  const url = `http://127.0.0.1:${port}${path}`;
  let status: number;
  let bytes: number;
  let body: string;
  try {
    if (app.netHost) {
      const res = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(HTTP_TIMEOUT_MS)]) });
      const buf = Buffer.from(await res.arrayBuffer());
      [status, bytes, body] = [res.status, buf.length, buf.subarray(0, 512).toString()];
    } else {
      const pid = await taskPid(cd, app.id);
      const out = await runCommand('nsenter', ['--target', String(pid), '--net', '--', process.execPath, '-e', FETCH_SCRIPT, url], { timeoutMs: HTTP_TIMEOUT_MS + 5_000, signal });
      ({ status, bytes, body } = JSON.parse(out.stdout) as { status: number; bytes: number; body: string });
    }
  } catch (cause) {
    if (signal.aborted) throw cause;
    throw new HarnessError('SL_ERR_DEMO_STEP', `GET ${url} of container ${app.id} failed: ${(cause as Error).message}`, { cause, details: { url, id: app.id } });
  }
  return { url, status, bytes, firstLine: body.split('\n')[0]!.trim() };
}

/** The daemon's stream progress of the image with manifest `digest`. */
export async function streamFacts(apiSocket: string, digest: string): Promise<StreamFacts & { complete: boolean }> {
  const st = await new DaemonClient(apiSocket).status();
  const img = st.images.find((i) => i.manifestDigest === digest);
  if (!img) throw new HarnessError('SL_ERR_DEMO_STEP', `the daemon does not list image ${digest} after pulling it`, { details: { digest } });
  const { wireBytes, files, filesPresent, bytes, bytesPresent, complete } = img;
  return { wireBytes, files, filesPresent, bytes, bytesPresent, complete };
}

/** Polls until the image's stream is complete; resolves with its final progress. */
export async function waitStreamComplete(apiSocket: string, digest: string, timeoutMs: number, signal: AbortSignal): Promise<StreamFacts> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const f = await streamFacts(apiSocket, digest);
    if (f.complete) return f;
    if (performance.now() > deadline) {
      throw new HarnessError('SL_ERR_DEMO_STEP', `the stream of ${digest} did not complete within ${timeoutMs} ms (${f.filesPresent}/${f.files} files, ${f.wireBytes} bytes received)`, {
        details: { digest, ...f },
      });
    }
    await sleep(STATUS_POLL_MS, undefined, { signal });
  }
}
