/**
 * Modes "starlight" (the proxy's default order: no startup traces), "starlight-cold" (as
 * "starlight", but the proxy has never seen the image: no notify, no direct delta first; the timed
 * pull is the proxy's first contact, so its indexing is timed too), "starlight+prior" (the proxy
 * learned the startup of the OTHER images of the bench run, from one untimed traced run of each on
 * another worker, never of this image: the issue-11 case of a new image on a proxy that has seen
 * others) and "starlight+traces" (the proxy learned this image's startup order from one untimed
 * traced run on another worker first).
 *
 * Topology per trial: worker (containerd + `starlight snapshotter`) → WAN emulator → request counter →
 * a `starlight proxy` of this trial → registry on loopback. Only the worker's link is emulated; the
 * proxy talks to the registry directly. Each trial starts its own proxy (own data dir) so traces
 * learned in one trial never change the order of another; except in starlight-cold the proxy's cold
 * indexing is not timed: setup warms it with `POST /v1/notify` and one direct (unemulated) GET of each
 * version's delta.
 *
 * pull = `starlight pull` (returns once the header is in and containerd has the snapshots);
 * run = `ctr run --snapshotter starlight` to the ready line; settle = poll the daemon's status until
 * the image's stream is complete (bytes in total).
 *
 * Not here: the proxy process (proxy.ts), containerd (containerd.ts), the worker pair (worker.ts).
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { HarnessError } from '../../fixtures/harness-error.js';
import { runToExit, runUntilReady, type ReadyContainer } from './container.js';
import { getAll, imageRef, post, warm } from './proxy-http.js';
import { duBytes, type RunOutput } from './proc.js';
import { startBenchProxy } from './proxy.js';
import { dropCaches, waitGone, waitProxyIdle } from './quiesce.js';
import { measureStartupFiles, readSpool } from './startup-trace.js';
import type { LearnedOrder } from '../../src/protocol/traces.js';
import type { StartupFilesSize, TrialMetrics } from '../report/types.js';
import type { BenchImage, ImageVersion, ModeDefinition, ModeDriver, SharedEnv, TrialEnv } from './types.js';
import { SNAPSHOTTER, startWorker, type StarlightWorker } from './worker.js';

/** `--view-idle` of the daemon in --overhead trials, s (see settle). */
const OVERHEAD_VIEW_IDLE_S = 5;
/** Longest wait for the steady state before measuring disk use (diskBytes), ms. */
const DISK_STEADY_MS = 180_000;
/** Poll interval of the daemon's status while waiting for that, ms. */
const DISK_POLL_MS = 1_000;
/** Poll interval of the daemon's status while waiting for a stream to complete, ms. */
const SETTLE_POLL_MS = 100;
/** How long the traced training run may take per image version, ms. */
const TRAIN_TIMEOUT_MS = 120_000;
/** Trial subdirectories of the training workers (this image's traced run; the other images' runs). */
const TRAIN_DIR = 't';
const PRIOR_DIR = 'o';
/** The daemon's FUSE op counters shown in the phase breakdown (status().fuseOps keys). */
const FUSE_OPS_SHOWN = ['lookups', 'getattrs', 'readdirs', 'opens', 'reads', 'parked'] as const;
/** Ranks summarized per trial in the log (how the order the timed pull gets is made up). */
const ORDER_SUMMARY_FILES = 3000;

/** Run-length summary of an order's first `n` entries by what put them there: "predicted 120f/8.1MB | prior-trace 30f/2.0MB | …". */
export function summarizeOrder(entries: readonly { size: number; signal?: string }[], n = ORDER_SUMMARY_FILES): string {
  const runs: { kind: string; files: number; bytes: number }[] = [];
  for (const e of entries.slice(0, n)) {
    const kind = e.signal === undefined || e.signal === 'trace' || e.signal === 'prior-trace' ? (e.signal ?? 'trace') : 'predicted';
    const last = runs[runs.length - 1];
    if (last?.kind === kind) {
      last.files++;
      last.bytes += e.size;
    } else runs.push({ kind, files: 1, bytes: e.size });
  }
  return runs.map((r) => `${r.kind} ${r.files}f/${(r.bytes / 1e6).toFixed(1)}MB`).join(' | ');
}

/** What the training run left: traces uploaded, and the size of the files the target version read at startup. */
interface Training {
  uploaded: number;
  startupFiles?: StartupFilesSize;
}

/**
 * One traced, untimed start of each version on a separate worker, uploaded to the proxy (`starlight
 * report`); the recorded traces are read from the worker's spool first, to size the startup files of
 * the last (target) version (issue 6's acceptance, bench/traces.ts).
 */
async function train(proxy: string, env: TrialEnv, versions: ImageVersion[]): Promise<Training> {
  const w = await startWorker(join(env.dir, TRAIN_DIR), `http://${proxy}`, { autoTraces: false, manualUpload: true }, env);
  try {
    await w.client.trace({ on: true });
    let readyMs: number | undefined;
    for (const v of versions) {
      const name = await w.pull(imageRef(env.spec.shared, env.image, v), env);
      const c = await runUntilReady(w.cd, { ref: name, id: `train-${v}`, snapshotter: SNAPSHOTTER }, env.image.versions[v].ready, { timeoutMs: TRAIN_TIMEOUT_MS, signal: env.signal });
      readyMs = c.readyAt - c.startedAt;
      await c.stop();
    }
    await w.client.trace({ on: false });
    const target = versions[versions.length - 1]!;
    const digest = env.image.versions[target].digest;
    const recorded = (await readSpool(w.root, versions.length)).filter((b) => b.manifestDigest === digest);
    const r = await w.client.report();
    if (r.uploaded === 0 || r.failures.length > 0) {
      throw new HarnessError('SL_ERR_BENCH_STEP', `traced run of ${env.image.name}: ${r.uploaded} trace(s) uploaded, failures: ${r.failures.map((f) => `${f.code} ${f.message}`).join('; ') || 'none'}`);
    }
    const out: Training = { uploaded: r.uploaded };
    try {
      out.startupFiles = await measureStartupFiles(proxy, imageRef(env.spec.shared, env.image, target), recorded, recorded.length > 0 ? readyMs : undefined);
    } catch (err) {
      env.log.warn('bench-startup-files-failed', { image: env.image.name, error: err });
    }
    return out;
  } finally {
    await w.stop();
  }
}

/**
 * One traced, untimed start (v1) of each of `others` on a separate worker, uploaded to the proxy: the
 * prior knowledge of starlight+prior. Returns the traces uploaded.
 */
async function trainOthers(proxy: string, env: TrialEnv, others: readonly BenchImage[]): Promise<number> {
  if (others.length === 0) return 0;
  const w = await startWorker(join(env.dir, PRIOR_DIR), `http://${proxy}`, { autoTraces: false, manualUpload: true }, env);
  try {
    await w.client.trace({ on: true });
    for (const img of others) {
      const name = await w.pull(imageRef(env.spec.shared, img, 'v1'), env);
      const c = await runUntilReady(w.cd, { ref: name, id: `prior-${img.name}`, snapshotter: SNAPSHOTTER }, img.versions.v1.ready, { timeoutMs: TRAIN_TIMEOUT_MS, signal: env.signal });
      await c.stop();
    }
    await w.client.trace({ on: false });
    const r = await w.client.report();
    if (r.uploaded === 0 || r.failures.length > 0) {
      throw new HarnessError('SL_ERR_BENCH_STEP', `traced runs of ${others.map((o) => o.name).join(', ')}: ${r.uploaded} trace(s) uploaded, failures: ${r.failures.map((f) => `${f.code} ${f.message}`).join('; ') || 'none'}`);
    }
    return r.uploaded;
  } finally {
    await w.stop();
  }
}

/** The order the proxy gives `target` now (GET /v1/traces; computes and memoizes its merged order), summarized. */
async function orderSummary(proxy: string, env: TrialEnv, target: ImageVersion): Promise<string> {
  const ref = imageRef(env.spec.shared, env.image, target);
  const res = await fetch(`http://${proxy}/v1/traces?${new URLSearchParams({ ref }).toString()}`, { signal: env.signal });
  if (!res.ok) throw new HarnessError('SL_ERR_BENCH_STEP', `proxy ${proxy}: GET /v1/traces of ${ref} answered ${res.status}`, { details: { ref } });
  const order = (await res.json()) as LearnedOrder;
  return `order (${order.source}, ${order.traces} trace(s), ${order.priorTraces ?? 0} prior): ${summarizeOrder(order.entries)}`;
}

/**
 * After an untimed training run (worker stopped): waits until its processes and mounts are gone and
 * the proxy is idle, reads the order the timed pull will get, GETs the delta once directly (the
 * upload invalidated the proxy's cached plan, which warm() had made) and drops caches like every
 * trial's start.
 */
async function quiesceAfterTraining(proxy: string, env: TrialEnv, trainDir: string, target: ImageVersion): Promise<void> {
  const gone = await waitGone(trainDir, env.signal);
  const idle = await waitProxyIdle(proxy, env.signal);
  const order = await orderSummary(proxy, env, target);
  // An upload invalidates the proxy's cached plans: plan again untimed, as warm() did before training.
  await getAll(proxy, `/v1/delta?${new URLSearchParams({ to: imageRef(env.spec.shared, env.image, target) }).toString()}`, env.signal);
  if (env.spec.dropCaches) dropCaches(env.log);
  process.stderr.write(`[bench] quiet after training ${env.image.name} ${env.spec.mode}: worker gone in ${gone} ms, proxy idle in ${idle} ms; ${order}\n`);
}

class StarlightDriver implements ModeDriver {
  private w?: StarlightWorker;
  private names = new Map<ImageVersion, string>();
  private seq = 0;
  private traces = 0;
  private startupFiles?: StartupFilesSize;
  /** Phase breakdown of the last pull + start (issue 19): the CLI's timings, the daemon's view record. */
  private phases?: Record<string, number>;
  /** The last settled stream's TrialMetrics.streamMs. */
  private streamMs?: number;
  private pullAt = 0;
  /** The daemon's FUSE op counters when the last settle returned (diffed around the next start). */
  private fuseBefore: Record<string, number> = {};
  /** `at` of the last graduation record settle logged. */
  private graduationShown?: number;

  constructor(
    readonly name: string,
    private readonly traced: boolean,
    /**
     * How the trial's proxy starts: 'warm' = the image indexed untimed first; 'cold' = first contact,
     * not warmed (starlight-cold); 'prior' = warmed and trained on the other images of the run
     * (starlight+prior).
     */
    private readonly proxyStart: 'warm' | 'cold' | 'prior' = 'warm',
    /** starlight-view: the daemon runs with --no-graduate (every container on the FUSE view). */
    private readonly noGraduate = false,
  ) {}

  async setup(env: TrialEnv): Promise<void> {
    const proxy = await startBenchProxy(env.spec.shared.registry, join(env.dir, 'px'));
    env.cleanups.add('stop starlight proxy', () => proxy.stop());
    const versions: ImageVersion[] = env.spec.scenario === 'update' ? ['v1', 'v2'] : ['v1'];
    if (this.proxyStart !== 'cold') for (const v of versions) await warm(proxy.host, env.spec.shared, env.image, v, env.signal);
    const target = versions[versions.length - 1]!;
    if (this.proxyStart === 'warm' && !this.traced) process.stderr.write(`[bench] ${env.image.name} ${env.spec.mode}: ${await orderSummary(proxy.host, env, target)}\n`);
    if (this.proxyStart === 'prior') {
      this.traces = await trainOthers(proxy.host, env, env.spec.otherImages ?? []);
      await quiesceAfterTraining(proxy.host, env, join(env.dir, PRIOR_DIR), target);
    }
    if (this.traced) {
      ({ uploaded: this.traces, startupFiles: this.startupFiles } = await train(proxy.host, env, versions));
      await quiesceAfterTraining(proxy.host, env, join(env.dir, TRAIN_DIR), target);
    }
    const link = await env.link(proxy.host);
    // --overhead: the view of a graduated image is dropped soon after the pull, so that the daemon
    // reaches its steady state (view gone, CAS copies of graduated content dropped: issue 12) while
    // settle waits, not during the timed containers.
    const viewIdleS = env.spec.workload === 'overhead' ? OVERHEAD_VIEW_IDLE_S : undefined;
    this.w = await startWorker(join(env.dir, 'w'), `http://${link}`, { autoTraces: this.traced, noGraduate: this.noGraduate, ...(viewIdleS !== undefined ? { viewIdleS } : {}) }, env);
  }

  async pull(version: ImageVersion, env: TrialEnv): Promise<void> {
    this.pullAt = Date.now();
    this.names.set(version, await this.w!.pull(imageRef(env.spec.shared, env.image, version), env));
  }

  /** The CLI's pull timings + the daemon's record of the view this pull's container started on. */
  private async breakdown(c: ReadyContainer): Promise<Record<string, number>> {
    const out: Record<string, number> = { ...this.w!.lastPullTimings };
    const st = await this.w!.client.status();
    // The view mounted for this pull (warmed by the pull, or at the container's first Mounts).
    const view = (st.timings ?? []).filter((r) => r.op === 'view' && r.at >= this.pullAt - 1).pop();
    if (view) {
      for (const [k, v] of Object.entries(view.phases)) out[`view.${k}`] = v;
      // > 0: the container's Mounts could have waited for the view (warmed after the pull answered).
      out['run.view-ready-after-ctr-start'] = Math.round((view.at + view.totalMs - (performance.timeOrigin + c.startedAt)) * 10) / 10;
    }
    out['run.to-ready'] = Math.round((c.readyAt - c.startedAt) * 10) / 10;
    // FUSE operations since the last settle: the pull's mount probe + the container's start (issue 19).
    for (const k of FUSE_OPS_SHOWN) {
      const n = st.fuseOps?.[k];
      if (n !== undefined) out[`run.fuse-${k}`] = n - (this.fuseBefore[k] ?? 0);
    }
    return out;
  }

  private nameOf(version: ImageVersion): string {
    const n = this.names.get(version);
    if (!n) throw new HarnessError('SL_ERR_BENCH_STEP', `image ${version} was not pulled before run`);
    return n;
  }

  async run(version: ImageVersion, env: TrialEnv): Promise<ReadyContainer> {
    const c = await runUntilReady(this.w!.cd, { ref: this.nameOf(version), id: `sl-${version}-${++this.seq}`, snapshotter: SNAPSHOTTER }, env.image.versions[version].ready, {
      timeoutMs: env.spec.timeoutMs,
      signal: env.signal,
    });
    this.w!.mark('bench-run-start', c.startedAt);
    this.w!.mark('bench-ready', c.readyAt);
    this.phases = await this.breakdown(c);
    process.stderr.write(`[bench] phases ${env.image.name} ${version} ${env.spec.scenario} rtt=${env.spec.rttMs}: ${formatPhases(this.phases)}\n`);
    return c;
  }

  async settle(version: ImageVersion, env: TrialEnv): Promise<number> {
    const digest = env.image.versions[version].digest;
    const deadline = Date.now() + env.spec.timeoutMs;
    // The transfer's end (completeMs): when the daemon's stream ended (its last item landed and
    // verified, `streamEndedAt`), not when a poll first saw the image complete, which comes after
    // the completion's flush and, for an update's small delta, after the container's start.
    let completeAt: number | undefined;
    this.streamMs = undefined;
    for (;;) {
      const st = await this.w!.client.status();
      this.fuseBefore = st.fuseOps ?? {}; // as of the settle's last poll (diffed around the next start)
      const img = st.images.find((i) => i.manifestDigest === digest);
      if (img?.complete) completeAt ??= img.streamEndedAt !== undefined ? img.streamEndedAt - performance.timeOrigin : performance.now();
      if (img?.streamEndedAt !== undefined && img.streamRequestedAt !== undefined) this.streamMs = img.streamEndedAt - img.streamRequestedAt;
      // Complete, and graduated when the daemon graduates (issue 12: new containers then run on it);
      // with --overhead also its content relocated (OVERHEAD_VIEW_IDLE_S).
      if (img?.complete && img.graduated !== false && (env.spec.workload !== 'overhead' || img.relocated !== false)) {
        const g = (st.timings ?? []).filter((r) => r.op === 'graduate').pop();
        // Once per graduation: the overhead workload settles again before every timed container.
        if (g && g.at !== this.graduationShown) process.stderr.write(`[bench] graduated ${env.image.name} ${version} in ${g.totalMs.toFixed(0)} ms (${formatPhases(g.phases)})\n`);
        if (g) this.graduationShown = g.at;
        return completeAt!;
      }
      if (img && !img.complete && !img.streaming) throw new HarnessError('SL_ERR_BENCH_STEP', `stream of ${img.ref} stopped incomplete (${img.filesPresent}/${img.files} files)`);
      if (Date.now() > deadline || env.signal.aborted) throw new HarnessError('SL_ERR_BENCH_STEP', `stream of ${env.image.name} ${version} did not complete within ${env.spec.timeoutMs} ms`);
      await sleep(SETTLE_POLL_MS);
    }
  }

  exec(version: ImageVersion, command: string[], env: TrialEnv): Promise<RunOutput> {
    return runToExit(this.w!.cd, { ref: this.nameOf(version), id: `sl-x-${++this.seq}`, snapshotter: SNAPSHOTTER, command }, { timeoutMs: env.spec.timeoutMs, signal: env.signal });
  }

  /**
   * The daemon's root (CAS, TOCs, records, graduated layers, snapshot dirs) + containerd's content
   * store, in the steady state: once every graduated image's content is served from its layer files
   * (issue 12: the daemon drops the CAS copies when no lazy view is left, i.e. --view-idle after the
   * last use of the pull's view), waited for up to DISK_STEADY_MS; the figure before is logged.
   */
  async diskBytes(): Promise<number> {
    const paths = [this.w!.root, join(this.w!.cd.dir, 'root', 'io.containerd.content.v1.content')];
    const t0 = performance.now();
    const deadline = Date.now() + DISK_STEADY_MS;
    let waited = false;
    for (;;) {
      const st = await this.w!.client.status();
      if (st.images.every((i) => i.relocated !== false)) break;
      if (!waited) process.stderr.write(`[bench] disk before relocation: ${((await duBytes(paths)) / 1e6).toFixed(1)} MB\n`);
      waited = true;
      if (Date.now() > deadline) {
        process.stderr.write(`[bench] content not relocated within ${DISK_STEADY_MS} ms; measuring as it is\n`);
        break;
      }
      await sleep(DISK_POLL_MS);
    }
    if (waited) process.stderr.write(`[bench] relocation waited ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return duBytes(paths);
  }

  note(): string | undefined {
    if (this.proxyStart === 'prior') return `${this.traces} trace(s) of other images`;
    return this.traced ? `${this.traces} trace(s)` : undefined;
  }

  extraMetrics(): Partial<TrialMetrics> {
    return {
      ...(this.startupFiles ? { startupFiles: this.startupFiles } : {}),
      ...(this.phases ? { phases: this.phases } : {}),
      ...(this.streamMs !== undefined ? { streamMs: this.streamMs } : {}),
    };
  }
}

/** Undefined when the proxy has the traces route (an empty body is refused as a bad trace, not as an unknown route). */
async function tracesUnavailable(shared: SharedEnv): Promise<string | undefined> {
  if (!shared.proxy) return 'the starlight proxy did not start (see the log above)';
  const r = await post(shared.proxy, '/v1/traces', '{}').catch(() => ({ status: 0, body: '' }));
  const noRoute = r.status === 0 || r.status === 404 || r.status === 405 || /no (such )?route/i.test(r.body);
  return noRoute ? `unavailable: traces not implemented (the proxy has no POST /v1/traces yet)` : undefined;
}

export const starlightMode: ModeDefinition = {
  name: 'starlight',
  unavailable: async (shared) => (shared.proxy ? undefined : 'the starlight proxy did not start (see the log above)'),
  create: () => new StarlightDriver('starlight', false),
};

/** Issue 12: starlight without graduation, i.e. the FUSE view's own overhead after a full download. */
export const starlightViewMode: ModeDefinition = {
  name: 'starlight-view',
  unavailable: async (shared) => (shared.proxy ? undefined : 'the starlight proxy did not start (see the log above)'),
  create: () => new StarlightDriver('starlight-view', false, 'warm', true),
};

export const starlightColdMode: ModeDefinition = {
  name: 'starlight-cold',
  unavailable: async (shared) => (shared.proxy ? undefined : 'the starlight proxy did not start (see the log above)'),
  create: () => new StarlightDriver('starlight-cold', false, 'cold'),
};

export const starlightTracedMode: ModeDefinition = {
  name: 'starlight+traces',
  unavailable: tracesUnavailable,
  create: () => new StarlightDriver('starlight+traces', true),
};

export const starlightPriorMode: ModeDefinition = {
  name: 'starlight+prior',
  unavailable: tracesUnavailable,
  create: () => new StarlightDriver('starlight+prior', false, 'prior'),
};

function formatPhases(p: Record<string, number>): string {
  return Object.entries(p)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}
