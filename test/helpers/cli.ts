/**
 * The real `starlight` CLI as a child process for e2e tests (`node bin/starlight.js …`): long-running
 * commands (proxy, mount, snapshotter) with their stdout lines and structured stderr log records
 * collected, waits for a stdout line or a log key, and a teardown that always ends the process
 * (SIGTERM, then SIGKILL after a grace period), also when the test fails. Plus `runCli` for one-shot
 * commands (`starlight umount DIR`).
 *
 * Not here: what the commands mean (the tests), mounts (the mount tests clean those up themselves).
 */
import type { ExecutionContext } from 'ava';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** bin/starlight.js of this checkout (tests run from dist/test/…). */
export const CLI = fileURLToPath(new URL('../../../bin/starlight.js', import.meta.url));
/** Default wait for a stdout line / log record, ms. */
const DEFAULT_WAIT_MS = 30_000;
/** Default time between SIGTERM and SIGKILL, ms. */
const DEFAULT_STOP_GRACE_MS = 5_000;
/** Stderr text kept for error messages (the tail), characters. */
const STDERR_KEEP = 64 * 1024;
/** Default deadline of a one-shot command, ms. */
const DEFAULT_RUN_TIMEOUT_MS = 60_000;

/** One structured log line of the child (src/log.ts: JSON with a stable `msg`). */
export interface LogRecord {
  msg: string;
  level?: string;
  [field: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface CliProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Name for messages, e.g. 'proxy'. */
  readonly name: string;
  /** Complete stdout lines so far. */
  lines(): string[];
  /** Parsed JSON log records from stderr so far. */
  logs(): LogRecord[];
  /** The tail of stderr (for failure messages). */
  stderr(): string;
  /** Resolves with the match of the first stdout line (past or future) matching `re`; rejects on timeout or exit. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** Resolves with the first log record (past or future) with this `msg` (and matching `where`); rejects on timeout or exit. */
  waitForLog(msg: string, timeoutMs?: number, where?: (r: LogRecord) => boolean): Promise<LogRecord>;
  /** Settles when the process has exited. */
  readonly exited: Promise<Exit>;
  /** True once the process exited. */
  hasExited(): boolean;
  /** Sends `signal` (default SIGTERM), SIGKILL after `graceMs`; resolves on exit. Idempotent. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<Exit>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** Name for messages; default the subcommand. */
  name?: string;
  /** SIGTERM → SIGKILL grace at teardown, ms; default 5 000. */
  stopGraceMs?: number;
}

/**
 * Spawns `node bin/starlight.js ...args`; stopped in t.teardown (registered now, so it runs after
 * teardowns registered later, e.g. of mounts inside temp dirs made before — ava runs them in reverse).
 */
export function startCli(t: ExecutionContext, args: string[], opts: StartOptions = {}): CliProcess {
  const name = opts.name ?? args[0] ?? 'starlight';
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  const lines: string[] = [];
  const logs: LogRecord[] = [];
  let errTail = '';
  let outBuf = '';
  let errBuf = '';
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const l of [...listeners]) l();
  };
  child.stdout!.on('data', (d: Buffer) => {
    outBuf += d.toString();
    const parts = outBuf.split('\n');
    outBuf = parts.pop()!;
    if (parts.length) {
      lines.push(...parts);
      notify();
    }
  });
  child.stderr!.on('data', (d: Buffer) => {
    const s = d.toString();
    errTail = (errTail + s).slice(-STDERR_KEEP);
    errBuf += s;
    const parts = errBuf.split('\n');
    errBuf = parts.pop()!;
    let added = false;
    for (const p of parts) {
      if (!p.startsWith('{')) continue;
      try {
        const r = JSON.parse(p) as LogRecord;
        if (typeof r.msg === 'string') {
          logs.push(r);
          added = true;
        }
      } catch {
        // not a log record (progress output, a crash trace): kept in stderr() only
      }
    }
    if (added) notify();
  });
  let exitInfo: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
      notify();
    });
  });
  const hasExited = () => exitInfo !== undefined;

  const waitFor = <T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const check = () => {
        const v = probe();
        if (v !== undefined) return finish(() => resolve(v));
        if (hasExited()) finish(() => reject(new Error(`${name} exited (${JSON.stringify(exitInfo)}) before ${what}\nstdout: ${lines.join('\n')}\nstderr: ${errTail.slice(-4000)}`)));
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`${name}: no ${what} within ${timeoutMs} ms\nstdout: ${lines.join('\n')}\nstderr: ${errTail.slice(-4000)}`))),
        timeoutMs,
      );
      const finish = (f: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        f();
      };
      listeners.add(check);
      check();
    });

  let stopping: Promise<Exit> | undefined;
  const stop = (signal: NodeJS.Signals = 'SIGTERM', graceMs = opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS): Promise<Exit> =>
    (stopping ??= (async () => {
      if (!hasExited()) {
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        child.kill(signal);
        await exited;
        clearTimeout(timer);
      }
      return exitInfo!;
    })());
  t.teardown(async () => {
    await stop();
  });

  return {
    child,
    pid: child.pid!,
    name,
    lines: () => [...lines],
    logs: () => [...logs],
    stderr: () => errTail,
    waitForLine: (re, timeoutMs = DEFAULT_WAIT_MS) =>
      waitFor(
        `stdout line ${re}`,
        () => {
          for (const l of lines) {
            const m = re.exec(l);
            if (m) return m;
          }
          return undefined;
        },
        timeoutMs,
      ),
    waitForLog: (msg, timeoutMs = DEFAULT_WAIT_MS, where) =>
      waitFor(`log '${msg}'`, () => logs.find((r) => r.msg === msg && (where === undefined || where(r))), timeoutMs),
    exited,
    hasExited,
    stop,
  };
}

/** Starts `starlight proxy …` and resolves with its URL once it prints `listening on URL`. */
export async function startProxyCli(t: ExecutionContext, args: string[], opts: StartOptions & { startMs?: number } = {}): Promise<CliProcess & { url: string }> {
  const p = startCli(t, ['proxy', ...args], opts);
  const m = await p.waitForLine(/listening on (\S+)/, opts.startMs ?? 15_000);
  return Object.assign(p, { url: m[1]! });
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a one-shot `starlight …` to its end (killed after `timeoutMs`). Never rejects. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { timeout: opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS, env: { ...process.env, ...opts.env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; signal?: NodeJS.Signals | null }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
      },
    );
  });
}
