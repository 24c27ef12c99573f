/**
 * Cost of the startup prediction (issue 11) on the Debian bench images: per image, the one-time
 * prediction at index time (StartupService over a real content cache holding the image's files,
 * facts memo cold), and what it adds to a warm delta header (PriorityService.order memo hit + the
 * planner's rank map + plan(), with vs without the prediction, alternately; median of --runs; the
 * merged tree, the same for both, is built once outside the timing).
 *
 * Usage: npm run build && node dist/bench/predict-cost.js [--images python-web,node-app] [--runs 50]
 * Needs the bench image layers (bench/images/build-rootfs.sh). Not here: network effects (bench/run.ts).
 */
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ExecutionContext } from 'ava';
import { planTimed } from './lib/predict-plan.js';
import { loadBenchImage, skipReason } from '../test/helpers/bench-image-tree.js';
import { tempDir } from '../test/helpers/tmp.js';
import { ContentCache } from '../src/proxy/content-cache.js';
import { PriorityService } from '../src/proxy/priority-service.js';
import { StartupService } from '../src/proxy/startup-service.js';
import { MetadataStore, STORE_FILE } from '../src/proxy/store.js';

const { values } = parseArgs({ options: { images: { type: 'string', default: 'python-web,redis,nginx,node-app,postgres' }, runs: { type: 'string', default: '50' } } });
const runs = Number(values.runs);
const cleanups: (() => void)[] = [];
const t = { teardown: (f: () => void) => cleanups.push(f) } as unknown as ExecutionContext;

const rows: string[] = ['| image | files | predicted (core) | predict once, ms | warm header without, ms | with, ms |', '|---|---|---|---|---|---|'];
try {
  for (const name of values.images.split(',')) {
    const why = skipReason(name);
    if (why !== undefined) {
      rows.push(`| ${name} | skipped: ${why} | | | | |`);
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
    const startup = new StartupService({ cache, store });
    const t0 = performance.now();
    const pr = await startup.ensure({ manifestDigest: `sha256:${name}`, config: img.config, merged: img.merged });
    const once = performance.now() - t0;
    const [without, withP] = planTimed([new PriorityService(store, 'r'), new PriorityService(store, 'r', startup)], img, runs) as [number, number];
    const files = img.merged.entries.filter((e) => e.type === 'reg').length;
    rows.push(`| ${name} | ${files} | ${pr.files.length} (${pr.files.filter((f) => f.core).length}) | ${once.toFixed(0)} | ${without.toFixed(2)} | ${withP.toFixed(2)} |`);
    await img.close();
  }
} finally {
  for (const c of cleanups.reverse()) c();
}
process.stdout.write(rows.join('\n') + '\n');
