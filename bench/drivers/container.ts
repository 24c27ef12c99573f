/**
 * Running a bench container with `ctr run` in the foreground and watching its stdout: until the
 * image's ready line (`runUntilReady`, the startup workload), or to completion (`runToExit`, the
 * overhead workload). Times are `performance.now()` ms.
 *
 * Not here: pulling (drivers), the containerd instance (containerd.ts).
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { harnessOrCanceled } from '../../fixtures/harness-error.js';
import type { BenchContainerd } from './containerd.js';
import { runCommand, tail, type RunOutput } from './proc.js';

/** How long a killed container's `ctr run` may take to exit, ms. */
const EXIT_TIMEOUT_MS = 15_000;

export interface RunSpec {
  ref: string;
  /** containerd container id (unique per trial). */
  id: string;
  snapshotter: string;
  /** Extra `ctr run` flags before the ref (e.g. ['--net-host']). */
  flags?: string[];
  /** Command override after the id (default: the image's entrypoint). */
  command?: string[];
  /** ctr binary (e.g. ctr-remote); default ctr. */
  bin?: string;
}

export interface ReadyContainer {
  /** When `ctr run` was spawned. */
  startedAt: number;
  /** When the ready line arrived on stdout. */
  readyAt: number;
  /** Kills the task and waits for `ctr run --rm` to delete it. Idempotent. */
  stop(): Promise<void>;
}

function runArgs(cd: BenchContainerd, spec: RunSpec): string[] {
  return [...cd.ctrFlags(), 'run', '--rm', '--runc-root', cd.runcRoot, '--fifo-dir', cd.fifoDir, '--snapshotter', spec.snapshotter, ...(spec.flags ?? []), spec.ref, spec.id, ...(spec.command ?? [])];
}

/**
 * Starts the container and resolves once a stdout line contains `readyLine`. Throws
 * SL_ERR_BENCH_STEP if the container exits first or `timeoutMs` passes (after stopping it).
 */
export function runUntilReady(cd: BenchContainerd, spec: RunSpec, readyLine: string, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<ReadyContainer> {
  const startedAt = performance.now();
  const child = spawn(spec.bin ?? 'ctr', runArgs(cd, spec), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let buf = '';
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        await runCommand('ctr', [...cd.ctrFlags(), 'tasks', 'kill', '-s', 'SIGKILL', spec.id], { timeoutMs: 10_000 }).catch(() => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      // `ctr run --rm` deletes task and container itself; these catch a ctr killed before that.
      await runCommand('ctr', [...cd.ctrFlags(), 'tasks', 'delete', '-f', spec.id], { timeoutMs: 10_000 }).catch(() => undefined);
      await runCommand('ctr', [...cd.ctrFlags(), 'containers', 'delete', spec.id], { timeoutMs: 10_000 }).catch(() => undefined);
    })());
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      cleanup();
      void stop().finally(() =>
        reject(
          harnessOrCanceled(why === 'aborted', 'SL_ERR_BENCH_STEP', `container ${spec.id} of ${spec.ref} (${spec.snapshotter}) ${why} before printing ${JSON.stringify(readyLine)}: ${tail(out.trim(), 2048)}`, {
            details: { ref: spec.ref, id: spec.id, snapshotter: spec.snapshotter },
          }),
        ),
      );
    };
    const timer = setTimeout(() => fail(`did not get ready within ${opts.timeoutMs} ms`), opts.timeoutMs);
    const onAbort = (): void => fail('aborted');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = (): void => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    child.stdout.on('data', (b: Buffer) => {
      const s = b.toString();
      out = (out + s).slice(-16_384);
      if (settled) return;
      buf += s;
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      if (lines.some((l) => l.includes(readyLine))) {
        settled = true;
        cleanup();
        resolve({ startedAt, readyAt: performance.now(), stop });
      }
    });
    child.stderr.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-16_384)));
    child.on('error', (e) => fail(`could not start (${e.message})`));
    child.on('close', (code) => fail(`exited (${code ?? 'signal'})`));
  });
}

/** Runs the container's command to completion (`ctr run --rm`); throws SL_ERR_BENCH_STEP on a non-zero exit. */
export function runToExit(cd: BenchContainerd, spec: RunSpec, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<RunOutput> {
  return runCommand(spec.bin ?? 'ctr', runArgs(cd, spec), opts).finally(async () => {
    await runCommand('ctr', [...cd.ctrFlags(), 'tasks', 'delete', '-f', spec.id], { timeoutMs: 10_000 }).catch(() => undefined);
    await runCommand('ctr', [...cd.ctrFlags(), 'containers', 'delete', spec.id], { timeoutMs: 10_000 }).catch(() => undefined);
  });
}
