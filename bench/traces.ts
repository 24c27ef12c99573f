/**
 * Issue 6's acceptance: `node dist/bench/traces.js [--images python-web,redis,nginx] [--rtt 150]
 * [--bandwidth 100mbit] [--runs N]`. Per image, fresh scenario: the `starlight` (untraced) and
 * `starlight+traces` (after one traced run) trials of the bench (one process each, trials.ts), then one
 * table row: ready s and MB received by the worker at the ready line for both, the size of the files
 * the traced run read before its ready line (raw and as the proxy encodes them), and the ratio of
 * traced bytes-at-ready to the encoded startup files against the 1.2 goal. Medians over the runs.
 *
 * Not here: the trials and drivers (trials.ts, drivers/), the selection rule and table (report/startup-files.ts).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { StarlightError } from '../src/errors.js';
import { HarnessError } from '../fixtures/harness-error.js';
import { createLogger } from '../src/log.js';
import { modeByName } from './drivers/index.js';
import { startBenchProxy, type BenchProxy } from './drivers/proxy.js';
import { startBenchRegistry, type BenchRegistry } from './drivers/registry.js';
import type { BenchImage, TrialSpec } from './drivers/types.js';
import { DEBIAN_IMAGES, type DebianImageName } from './images/ensure.js';
import { parseBandwidth } from './lib/units.js';
import { median } from './report/aggregate.js';
import { startupTracesTable, type StartupTraceRow } from './report/startup-files.js';
import type { TrialResult } from './report/types.js';
import { DEFAULTS, prepareImages, runTrialProcess } from './run.js';

const USAGE = `usage: node dist/bench/traces.js [--images python-web,redis,nginx] [--rtt 150] [--bandwidth 100mbit] [--runs 1]
       [--registry-dir ${DEFAULTS.registryDir}] [--trial-timeout ${DEFAULTS.trialTimeout}]`;

const MODES = { untraced: 'starlight', traced: 'starlight+traces' } as const;

function med(rs: TrialResult[], f: (r: TrialResult) => number | undefined): number | undefined {
  const v = rs.map(f).filter((x): x is number => x !== undefined);
  return v.length === 0 ? undefined : median(v);
}

/** One table row from the ok results of both modes of an image. */
export function rowOf(image: string, results: TrialResult[]): StartupTraceRow {
  const ok = (m: string): TrialResult[] => results.filter((r) => r.image === image && r.mode === m && r.status === 'ok');
  const [u, t] = [ok(MODES.untraced), ok(MODES.traced)];
  const withFiles = t.filter((r) => r.startupFiles);
  const reasons = results.filter((r) => r.image === image && r.status !== 'ok').map((r) => `${r.mode}: ${r.reason ?? r.status}`);
  const row: StartupTraceRow = {
    image,
    untracedReadyMs: med(u, (r) => r.totalMs),
    untracedBytesDown: med(u, (r) => r.bytesDown),
    tracedReadyMs: med(t, (r) => r.totalMs),
    tracedBytesDown: med(t, (r) => r.bytesDown),
    startupRawBytes: med(withFiles, (r) => r.startupFiles?.rawBytes),
    startupEncodedBytes: med(withFiles, (r) => r.startupFiles?.encodedBytes),
    startupFiles: med(withFiles, (r) => r.startupFiles?.files),
    cut: withFiles[0]?.startupFiles?.cut,
  };
  if (reasons.length > 0) row.reason = [...new Set(reasons)].join('; ');
  return row;
}

async function main(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      images: { type: 'string', default: DEFAULTS.images },
      rtt: { type: 'string', default: '150' },
      bandwidth: { type: 'string', default: DEFAULTS.bandwidth },
      runs: { type: 'string', default: '1' },
      'registry-dir': { type: 'string', default: DEFAULTS.registryDir },
      'trial-timeout': { type: 'string', default: DEFAULTS.trialTimeout },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (v.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const images = v.images.split(',').map((i) => i.trim()).filter(Boolean) as DebianImageName[];
  const bad = images.find((i) => !(DEBIAN_IMAGES as readonly string[]).includes(i));
  const rttMs = Number(v.rtt);
  const runs = Number(v.runs);
  const timeoutS = Number(v['trial-timeout']);
  if (bad || images.length === 0 || !(rttMs >= 0) || !Number.isInteger(runs) || runs < 1 || !(timeoutS > 0)) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `bad option (images: ${DEBIAN_IMAGES.join(', ')}; --rtt ms ≥ 0; --runs ≥ 1)\n${USAGE}`);
  }
  const bandwidthBps = v.bandwidth === '0' ? 0 : parseBandwidth(v.bandwidth);
  const say = (s: string): void => void process.stderr.write(`[traces] ${s}\n`);
  const log = createLogger({ fields: { component: 'bench-traces' } });
  const load = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');
  say(`load average before: ${load()}`);
  let interrupted = false;
  let kill: ((sig: NodeJS.Signals) => void) | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = true;
    kill?.(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const workDir = mkdtempSync('/tmp/slb-tr-');
  let registry: BenchRegistry | undefined;
  let proxy: BenchProxy | undefined;
  const results: TrialResult[] = [];
  try {
    mkdirSync(v['registry-dir'], { recursive: true });
    registry = await startBenchRegistry(v['registry-dir']);
    const imgs: BenchImage[] = await prepareImages({ images }, registry.host, log);
    // Only for the modes' availability probes; each trial starts its own proxy.
    proxy = await startBenchProxy(registry.host, join(workDir, 'proxy'));
    const shared = { registry: registry.host, proxy: proxy.host, workDir };
    const why = await modeByName(MODES.traced)!.unavailable({ ...shared, log });
    if (why) throw new HarnessError('SL_ERR_BENCH_STEP', `mode ${MODES.traced}: ${why}`);
    for (const img of imgs)
      for (let run = 1; run <= runs; run++)
        for (const mode of [MODES.untraced, MODES.traced]) {
          if (interrupted) break;
          const spec: TrialSpec = { mode, image: img.name, rttMs, bandwidthBps, scenario: 'fresh', workload: 'startup', run, benchImage: img, shared, timeoutMs: timeoutS * 1000, dropCaches: true };
          const r = await runTrialProcess(spec, (k) => (kill = k));
          results.push(r);
          say(`${img.name} ${mode} #${run}: ${r.status === 'ok' ? `${((r.totalMs ?? 0) / 1000).toFixed(2)} s, ${((r.bytesDown ?? 0) / 1e6).toFixed(2)} MB down` : `${r.status} (${r.reason})`}`);
        }
  } finally {
    await proxy?.stop();
    await registry?.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
  process.stdout.write(`rtt ${rttMs} ms, ${v.bandwidth}, ${runs} run(s), fresh; load average after: ${load()}\n\n`);
  process.stdout.write(startupTracesTable(images.map((i) => rowOf(i, results))));
  process.stdout.write('\n' + results.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return interrupted ? 130 : 0;
}

if (process.argv[1]?.endsWith('traces.js')) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      const e = err as { code?: string; message?: string };
      process.stderr.write(`bench traces: ${e.code ?? 'error'}: ${e.message ?? String(err)}\n`);
      process.exit(e.code === 'SL_ERR_INVALID_ARGUMENT' ? 64 : 1);
    },
  );
}
