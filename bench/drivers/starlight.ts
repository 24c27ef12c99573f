/**
 * Modes "starlight" (startup traces on: the proxy orders content by learned startup order) and
 * "starlight-notrace" (no traces: TOC order). Needs the proxy (`starlight proxy`), the worker daemon
 * (`starlight snapshotter`) and `starlight pull`.
 *
 * TODO(bench): the worker daemon and `starlight pull` have not landed yet (src/cli/snapshotter.ts,
 * src/cli/pull.ts); until they do, both modes report themselves unavailable and the bench skips them
 * with that reason. When they land: setup = daemon (own root, socket, proxy URL = env.link(proxy)) +
 * containerd with proxy snapshotter "starlight"; pull = `starlight pull`; run = runUntilReady with
 * snapshotter "starlight"; the traced variant first records a trace of one run and reports it.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StarlightError } from '../../src/errors.js';
import type { ModeDefinition, ModeDriver } from './types.js';

/** Compiled CLI modules the modes need (relative to dist/src/cli). */
const REQUIRED_CLI = ['snapshotter.js', 'pull.js'];

function cliDir(): string {
  // dist/bench/drivers → dist/src/cli
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli');
}

function notYet(name: string): ModeDriver {
  const fail = async (): Promise<never> => {
    throw new StarlightError('SL_ERR_BENCH_STEP', `mode ${name} is not available yet (worker daemon / starlight pull missing)`);
  };
  return { name, setup: fail, pull: fail, run: fail };
}

function starlightMode(name: string): ModeDefinition {
  return {
    name,
    unavailable: async (shared) => {
      const missing = REQUIRED_CLI.filter((f) => !existsSync(join(cliDir(), f)));
      if (missing.length > 0) return `not available yet: ${missing.map((f) => `src/cli/${f.replace(/\.js$/, '.ts')}`).join(', ')} not built`;
      if (!shared.proxy) return 'the starlight proxy did not start (see the log above)';
      return 'not available yet: the bench driver for the worker daemon is not written (bench/drivers/starlight.ts TODO)';
    },
    create: () => notYet(name),
  };
}

export const starlightTracedMode = starlightMode('starlight');
export const starlightNoTraceMode = starlightMode('starlight-notrace');
