/**
 * Child processes for the bench: run a command to completion with a timeout (`runCommand`), start a
 * long-lived daemon and wait for it to be ready (`startDaemon`), stop one (SIGTERM, then SIGKILL
 * after a grace period), and a LIFO stack of cleanups (`Cleanups`) that trials run on every exit path.
 *
 * Not here: what the commands are (drivers), timing (trials.ts).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { HarnessError, harnessOrCanceled } from '../../fixtures/harness-error.js';

/** Bytes of stderr/stdout kept for error messages. */
const TAIL_BYTES = 4096;
/** Grace period between SIGTERM and SIGKILL, ms. */
export const STOP_GRACE_MS = 5_000;
/** Poll interval of readiness checks, ms. */
const POLL_MS = 50;

export function tail(s: string, n = TAIL_BYTES): string {
  return s.length > n ? '…' + s.slice(-n) : s;
}

/** The space-separated words of environment variable `name` (extra flags of a debug aid); none when unset. */
export function envWords(name: string): string[] {
  return (process.env[name] ?? '').split(' ').filter((w) => w !== '');
}

export interface RunOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Accept these exit codes besides 0. */
  okCodes?: number[];
}

export interface RunOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args` to completion; throws SL_ERR_BENCH_STEP on a bad exit, a timeout or an abort. */
export function runCommand(cmd: string, args: string[], opts: RunOptions): Promise<RunOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    let why: string | undefined;
    child.stdout.on('data', (b: Buffer) => (stdout = (stdout + b.toString()).slice(-1_000_000)));
    child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-TAIL_BYTES * 4)));
    const kill = (reason: string): void => {
      why ??= reason;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => kill(`timed out after ${opts.timeoutMs} ms`), opts.timeoutMs);
    const onAbort = (): void => kill('aborted');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e) => {
      why ??= e.message;
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      const c = code ?? -1;
      if (why === undefined && (c === 0 || opts.okCodes?.includes(c))) return resolve({ code: c, stdout, stderr });
      reject(
        harnessOrCanceled(why === 'aborted', 'SL_ERR_BENCH_STEP', `${cmd} ${args.join(' ')} failed (${why ?? `exit ${c}`}): ${tail(stderr.trim() || stdout.trim())}`, {
          details: { cmd, args, exitCode: c },
        }),
      );
    });
  });
}

/** Stops a child: SIGTERM, SIGKILL after `graceMs`; resolves when it has exited. Idempotent. */
export async function stopChild(child: ChildProcess, graceMs = STOP_GRACE_MS): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export interface Daemon {
  child: ChildProcess;
  /** Last bytes of its stderr (and stdout), for error messages. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Spawns a daemon and polls `ready()` until it returns true; throws SL_ERR_BENCH_STEP (with the
 * daemon's output) if it exits first or `timeoutMs` passes, after stopping it.
 */
export async function startDaemon(what: string, cmd: string, args: string[], ready: () => Promise<boolean>, opts: { timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<Daemon> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  let out = '';
  const keep = (b: Buffer): void => {
    out = (out + b.toString()).slice(-TAIL_BYTES * 4);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let spawnError: Error | undefined;
  child.on('error', (e) => (spawnError = e));
  const daemon: Daemon = { child, output: () => out, stop: () => stopChild(child) };
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    if (spawnError || child.exitCode !== null || child.signalCode !== null) {
      throw new HarnessError('SL_ERR_BENCH_STEP', `${what} (${cmd}) exited before it was ready (${spawnError?.message ?? `exit ${child.exitCode ?? child.signalCode}`}): ${tail(out.trim())}`, {
        details: { cmd, args },
      });
    }
    if (await ready().catch(() => false)) return daemon;
    if (Date.now() > deadline) {
      await daemon.stop();
      throw new HarnessError('SL_ERR_BENCH_STEP', `${what} (${cmd}) was not ready within ${opts.timeoutMs} ms: ${tail(out.trim())}`, { details: { cmd, args } });
    }
    await sleep(POLL_MS);
  }
}

/** A LIFO stack of cleanup steps; `run()` runs each once, collecting (not throwing) failures. */
export class Cleanups {
  private readonly steps: { what: string; fn: () => Promise<void> | void }[] = [];

  /** Registers a step; steps run in reverse order of registration. */
  add(what: string, fn: () => Promise<void> | void): void {
    this.steps.push({ what, fn });
  }

  /** Runs and forgets every step; returns the failures as "what: message". */
  async run(): Promise<string[]> {
    const errors: string[] = [];
    while (this.steps.length > 0) {
      const s = this.steps.pop()!;
      try {
        await s.fn();
      } catch (err) {
        errors.push(`${s.what}: ${(err as Error).message}`);
      }
    }
    return errors;
  }
}

/**
 * Bytes allocated under `paths` (one `du -scx --block-size=1`: a hardlinked inode counted once, other
 * filesystems such as FUSE mountpoints not entered; missing paths count 0). The paths may be in use:
 * an entry removed between du's listing and its stat (a temp file renamed) makes du exit 1 after
 * printing the total of what it could see, which is the answer.
 */
export async function duBytes(paths: string[]): Promise<number> {
  const present = paths.filter((p) => existsSync(p));
  if (present.length === 0) return 0;
  const r = await runCommand('du', ['-scx', '--block-size=1', ...present], { timeoutMs: 120_000, okCodes: [1] });
  const total = /^(\d+)\s+total$/m.exec(r.stdout);
  if (!total) throw new HarnessError('SL_ERR_BENCH_STEP', `du ${present.join(' ')} printed no total: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
  return Number(total[1]);
}

/** Samples duBytes(`paths`) every `everyMs` until stop(), which resolves with the largest value seen (a last sample included). */
export function peakDuSampler(paths: string[], everyMs = 250): { stop(): Promise<number> } {
  let peak = 0;
  let sampling = true;
  const loop = (async () => {
    while (sampling) {
      peak = Math.max(peak, await duBytes(paths));
      await new Promise((res) => setTimeout(res, everyMs));
    }
  })();
  return {
    async stop() {
      sampling = false;
      await loop;
      return Math.max(peak, await duBytes(paths));
    },
  };
}
