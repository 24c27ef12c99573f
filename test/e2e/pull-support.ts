/**
 * Shared by the lazy-pull e2e tests: the whole stack (registry, `starlight proxy`, the daemon with
 * --proxy, a private containerd), `starlight` CLI calls, and `starlight pull` into the test namespace.
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { BIN_STARLIGHT, startContainerd, TEST_NAMESPACE, type Containerd, type CtrResult } from '../helpers/containerd.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { startProxyProcess } from './proxy-support.js';

/** Deadline of one `starlight` CLI call, ms. */
const CLI_TIMEOUT_MS = 120_000;

export function starlight(args: string[]): Promise<CtrResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN_STARLIGHT, ...args], { timeout: CLI_TIMEOUT_MS }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export async function lazyStack(
  t: ExecutionContext,
  proxyUrlOf: (url: string) => Promise<string> = async (u) => u,
  daemonArgs: string[] = [],
): Promise<{ reg: TestRegistry; c: Containerd; proxyUrl: string; directProxy: string }> {
  const reg = await startRegistry(t);
  const proxy = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-proxy-')]);
  const proxyUrl = await proxyUrlOf(proxy.url);
  const c = await startContainerd(t, { snapshotterArgs: ['--proxy', proxyUrl, ...daemonArgs] });
  return { reg, c, proxyUrl, directProxy: proxy.url };
}

export async function pull(t: ExecutionContext, c: Containerd, ref: string): Promise<string> {
  const r = await starlight(['pull', '--daemon', c.snapshotter.apiSocket, '-n', TEST_NAMESPACE, ref]);
  t.is(r.code, 0, `starlight pull ${ref}: ${r.stderr}`);
  return r.stdout;
}

