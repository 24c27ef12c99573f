/**
 * Interleaved A/B of the runtime-overhead workloads (issue 12): one process sets up BOTH modes
 * (default overlayfs = A and starlight = B, each with its own containerd as in its bench trial),
 * makes the image fully downloaded in both (trials.ts `prepareOverhead`: Starlight's image then
 * graduated), and then alternates single containers: per run and workload, A cold, A warm, B cold,
 * B warm (B first on even runs). Each timed container is a few hundred ms, so a load change on a
 * shared machine lands on both modes alike, unlike `run.js --overhead`, whose two trials of a pair
 * are minutes apart. Prints every measurement with the load average, then medians and B ÷ A.
 *
 *   npm run build && flock /tmp/sl-bench.lock node dist/bench/overhead-ab.js [--image python-web]
 *       [--runs 6] [--modes overlayfs,starlight] [--workloads READALL,FINDSTAT,SMALLFILES,PYIMPORT]
 *
 * Root only (containerd, mounts, drop_caches). Not here: disk use and the acceptance table (run.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createLogger } from '../src/log.js';
import { unmountUnder } from './drivers/containerd.js';
import { modeByName } from './drivers/index.js';
import { Cleanups } from './drivers/proc.js';
import { startBenchRegistry } from './drivers/registry.js';
import type { ModeDriver, TrialEnv, TrialSpec } from './drivers/types.js';
import { median } from './report/aggregate.js';
import { parseOptions, prepareImages } from './run.js';
import { makeEnv, OVERHEAD_WORKLOADS, prepareOverhead, timeWorkload, type OverheadKey } from './trials.js';

/** Longest one step (pull, settle, one container) may take, ms. */
const STEP_TIMEOUT_MS = 300_000;
const CACHES = ['cold', 'warm'] as const;

function load(): string {
  return loadavg()[0]!.toFixed(2);
}

async function main(): Promise<number> {
  const { values: v } = parseArgs({
    options: {
      image: { type: 'string', default: 'python-web' },
      runs: { type: 'string', default: '6' },
      modes: { type: 'string', default: 'overlayfs,starlight' },
      workloads: { type: 'string', default: Object.keys(OVERHEAD_WORKLOADS).join(',') },
    },
  });
  const runs = Number(v.runs);
  const modes = v.modes.split(',');
  const keys = v.workloads.split(',') as OverheadKey[];
  const opts = parseOptions(['--images', v.image, '--modes', v.modes]);
  if (opts === 'help' || modes.length !== 2 || !(runs >= 1) || keys.some((k) => !(k in OVERHEAD_WORKLOADS))) {
    process.stderr.write('usage: overhead-ab.js [--image NAME] [--runs N] [--modes A,B] [--workloads K,…]\n');
    return 64;
  }
  const log = createLogger({ fields: { component: 'bench-ab' } });
  const say = (s: string): void => void process.stderr.write(`[ab] ${s}\n`);
  const ac = new AbortController();
  process.on('SIGINT', () => ac.abort());
  process.on('SIGTERM', () => ac.abort());
  const cleanups = new Cleanups();
  const samples = new Map<string, number[]>();
  try {
    const registry = await startBenchRegistry(opts.registryDir);
    cleanups.add('stop registry', () => registry.stop());
    const [image] = await prepareImages(opts, registry.host, log);
    const pairs: { name: string; driver: ModeDriver; env: TrialEnv }[] = [];
    for (const name of modes) {
      const dir = mkdtempSync('/tmp/slb-');
      cleanups.add(`remove ${dir}`, async () => {
        const left = await unmountUnder(dir);
        if (left.length > 0) throw new Error(`still mounted: ${left.join(', ')}`);
        rmSync(dir, { recursive: true, force: true });
      });
      const spec: TrialSpec = {
        mode: name, image: image!.name, rttMs: 0, bandwidthBps: 0, scenario: 'fresh', workload: 'overhead', run: 1,
        benchImage: image!, shared: { registry: registry.host, workDir: dir }, timeoutMs: STEP_TIMEOUT_MS, dropCaches: true,
      };
      const env = makeEnv(spec, dir, ac.signal, cleanups, log);
      const driver = modeByName(name)!.create();
      await driver.setup(env);
      say(`${name}: pulling ${image!.name} v1 and reading every file once…`);
      await prepareOverhead(driver, env);
      pairs.push({ name, driver, env });
    }
    say(`load ${load()} at start`);
    for (let run = 1; run <= runs; run++) {
      for (const key of keys) {
        for (const p of run % 2 === 1 ? pairs : [...pairs].reverse()) {
          for (const cache of CACHES) {
            const ms = await timeWorkload(p.driver, p.env, key, cache);
            if (ms === undefined) continue;
            const k = `${key} ${cache} ${p.name}`;
            samples.set(k, [...(samples.get(k) ?? []), ms]);
            say(`run ${run} ${k}: ${ms} ms (load ${load()})`);
          }
        }
      }
    }
    say(`load ${load()} at end`);
  } finally {
    const errors = await cleanups.run();
    if (errors.length > 0) say(`cleanup: ${errors.join('; ')}`);
  }
  const [a, b] = modes as [string, string];
  const lines = [`| workload | cache | ${a} median ms | ${b} median ms | ${b} ÷ ${a} | n |`, '| --- | --- | --- | --- | --- | --- |'];
  for (const key of keys) {
    for (const cache of CACHES) {
      const sa = samples.get(`${key} ${cache} ${a}`) ?? [];
      const sb = samples.get(`${key} ${cache} ${b}`) ?? [];
      if (sa.length === 0 || sb.length === 0) continue;
      lines.push(`| ${key} | ${cache} | ${median(sa)} | ${median(sb)} | ${(median(sb) / median(sa)).toFixed(2)}× | ${Math.min(sa.length, sb.length)} |`);
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench overhead-ab: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
