/**
 * The Starlight proxy for a bench run, cloud side: `node bin/starlight.js proxy` next to the bench
 * registry with a scratch data dir; resolves once it prints its "listening on <url>" line.
 *
 * Not here: the proxy itself (src/proxy), the WAN link to it (trials create one per trial).
 */
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HarnessError } from '../../fixtures/harness-error.js';
import { envWords, stopChild, tail } from './proc.js';

/** How long the proxy may take to print its listening line, ms. */
const START_TIMEOUT_MS = 20_000;

export interface BenchProxy {
  /** "127.0.0.1:PORT". */
  host: string;
  /** The proxy process's pid (for /proc/<pid>/status). */
  pid: number;
  stop(): Promise<void>;
}

/** Debug aid: append each bench proxy's info-level log to this file. */
export const PROXY_LOG_ENV = 'STARLIGHT_BENCH_PROXY_LOG';
/** Profiling aid: node flags for each bench proxy, space-separated (as worker.ts's STARLIGHT_BENCH_DAEMON_NODE_FLAGS). */
const PROXY_NODE_FLAGS_ENV = 'STARLIGHT_BENCH_PROXY_NODE_FLAGS';

/** The repo's bin/starlight.js, found from this file in dist/bench/drivers or bench/drivers. */
export function starlightBin(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = join(dir, 'bin', 'starlight.js');
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new HarnessError('SL_ERR_BENCH_STEP', `bin/starlight.js not found above ${fileURLToPath(import.meta.url)}`);
}

/** `extraArgs`: more proxy flags, e.g. ['--db', url] for replicas on one database (bench/drivers/postgres.ts). */
export function startBenchProxy(registry: string, dataDir: string, extraArgs: readonly string[] = []): Promise<BenchProxy> {
  // Debug aid: STARLIGHT_BENCH_PROXY_LOG=<file>: the proxy logs at info level, appended to <file> (timelines).
  const logFile = process.env[PROXY_LOG_ENV];
  const child = spawn(process.execPath, [...envWords(PROXY_NODE_FLAGS_ENV), starlightBin(), 'proxy', '--registry', `http://${registry}`, '--listen', '127.0.0.1:0', '--data', dataDir, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: logFile ? { ...process.env, STARLIGHT_LOG: 'info' } : process.env,
  });
  if (logFile) child.stderr.on('data', (b: Buffer) => appendFileSync(logFile, b));
  let out = '';
  return new Promise((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer);
      void stopChild(child).then(() => reject(new HarnessError('SL_ERR_BENCH_STEP', `starlight proxy ${why}: ${tail(out.trim())}`, { details: { registry } })));
    };
    const timer = setTimeout(() => fail(`did not start within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    child.stderr.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-8192)));
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening on https?:\/\/([^\s/]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        child.stdout.removeAllListeners('data');
        child.stdout.resume();
        child.removeAllListeners('exit');
        resolve({ host: m[1]!, pid: child.pid!, stop: () => stopChild(child) });
      }
    });
    child.once('exit', (code) => fail(`exited (${code ?? 'signal'})`));
  });
}
