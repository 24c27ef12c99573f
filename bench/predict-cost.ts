/**
 * Cost of the startup prediction (issues 10, 11) on the Debian bench images: per image, the one-time
 * prediction at index time, facts memo cold — on first contact (StartupService reading the raw
 * contents a layer pass stages: here the layer tars, positioned reads) and from a real content cache
 * holding the image's files (brotli: a forward decode per file), median of --predict-runs — and what
 * it adds to a warm delta header (PriorityService.order memo hit + the planner's rank map + plan(),
 * with vs without the prediction, alternately; median of --runs; the merged tree, the same for both,
 * is built once outside the timing). `--other DIR` (another build's dist/, e.g. main's): its
 * StartupService is timed too, alternately with this one on the same cache, and its prediction must
 * equal this build's (else the bench fails).
 *
 * Usage: npm run build && node dist/bench/predict-cost.js [--images python-web,node-app] [--runs 50]
 *   [--predict-runs 3] [--other /work/main/dist]
 * Needs the bench image layers (bench/images/build-rootfs.sh). Not here: network effects (bench/run.ts).
 */
import { Readable } from 'node:stream';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ExecutionContext } from 'ava';
import { planTimed } from './lib/predict-plan.js';
import { loadBenchImage, skipReason } from '../test/helpers/bench-image-tree.js';
import { tempDir } from '../test/helpers/tmp.js';
import { ContentCache } from '../src/proxy/content-cache.js';
import { PriorityService } from '../src/proxy/priority-service.js';
import { StartupService, type StartupServiceOptions } from '../src/proxy/startup-service.js';
import type { Prediction } from '../src/proxy/startup/predict.js';
import { MetadataStore, STORE_FILE } from '../src/proxy/store.js';

const { values } = parseArgs({
  options: {
    images: { type: 'string', default: 'python-web,redis,nginx,node-app,postgres' },
    runs: { type: 'string', default: '50' },
    'predict-runs': { type: 'string', default: '1' },
    other: { type: 'string' },
  },
});
const runs = Number(values.runs);
const predictRuns = Number(values['predict-runs']);
type Startup = new (o: StartupServiceOptions) => StartupService;
const builds: { name: string; Service: Startup }[] = [{ name: 'this', Service: StartupService }];
if (values.other !== undefined) {
  const other = (await import(resolve(values.other, 'src/proxy/startup-service.js'))) as { StartupService: Startup };
  builds.push({ name: 'other', Service: other.StartupService });
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cleanups: (() => void)[] = [];
const t = { teardown: (f: () => void) => cleanups.push(f) } as unknown as ExecutionContext;

const once = builds.flatMap((b) => [`predict once staged${b.name === 'this' ? '' : ` (${b.name})`}, ms`, `cached${b.name === 'this' ? '' : ` (${b.name})`}, ms`]);
const rows: string[] = [
  `| image | files | predicted (core) | ${once.join(' | ')} | warm header without, ms | with, ms |`,
  `|${'---|'.repeat(5 + once.length)}`,
];
try {
  for (const name of values.images.split(',')) {
    const why = skipReason(name);
    if (why !== undefined) {
      rows.push(`| ${name} | skipped: ${why} |${' |'.repeat(3 + once.length)}`);
      continue;
    }
    const img = await loadBenchImage(name);
    const dir = tempDir(t, 'slb-predict-');
    const store = new MetadataStore(join(dir, STORE_FILE));
    cleanups.push(() => store.close());
    const cache = new ContentCache({ dir, maxBytes: 2 ** 33, store });
    const seen = new Set<string>();
    for (const e of img.merged.entries) {
      if ((e.type !== 'reg' && e.type !== 'hardlink') || e.size === 0 || seen.has(e.digest!)) continue;
      seen.add(e.digest!);
      const buf = await img.reader(e.path)(0, e.size);
      await cache.put(Readable.from([Buffer.from(buf!)]), e.size, img.merged.diffIDs[0]!);
    }
    const target = { manifestDigest: `sha256:${name}`, config: img.config, merged: img.merged };
    const pathOf = new Map(img.merged.entries.filter((e) => e.digest !== undefined).map((e) => [e.digest!, e.path]));
    const staging = { lookup: (d: string) => (pathOf.has(d) ? img.locate(pathOf.get(d)!) : undefined) };
    // Each build, staged then cached, alternately (load drift hits all alike); a fresh service each time.
    const ms = builds.map(() => ({ staged: [] as number[], cached: [] as number[] }));
    let pr: Prediction | undefined;
    for (let r = 0; r < predictRuns; r++) {
      for (const [k, b] of builds.entries()) {
        for (const how of ['staged', 'cached'] as const) {
          const t0 = performance.now();
          const got = await new b.Service({ cache, store, ...(how === 'staged' ? { staging } : {}) }).ensure(target);
          ms[k]![how].push(performance.now() - t0);
          if (pr === undefined) pr = got;
          else if (JSON.stringify(got.files) !== JSON.stringify(pr.files)) throw new Error(`${name}: the ${b.name} build's ${how} prediction differs from the first`);
        }
      }
    }
    const startup = new StartupService({ cache, store });
    await startup.ensure(target);
    const [without, withP] = planTimed([new PriorityService(store, 'r'), new PriorityService(store, 'r', startup)], img, runs) as [number, number];
    const files = img.merged.entries.filter((e) => e.type === 'reg').length;
    const onceMs = ms.flatMap((m) => [median(m.staged).toFixed(0), median(m.cached).toFixed(0)]);
    rows.push(`| ${name} | ${files} | ${pr!.files.length} (${pr!.files.filter((f) => f.core).length}) | ${onceMs.join(' | ')} | ${without.toFixed(2)} | ${withP.toFixed(2)} |`);
    await img.close();
  }
} finally {
  for (const c of cleanups.reverse()) c();
}
process.stdout.write(rows.join('\n') + '\n');
