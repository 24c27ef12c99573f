import test from 'ava';
import { loadBenchImage, skipReason } from '../../helpers/bench-image-tree.js';
import { readFacts } from '../../../src/proxy/startup/facts.js';
import { StartupTree, predictWith } from '../../../src/proxy/startup/predict.js';

for (const name of ['python-web', 'redis', 'nginx', 'node-app', 'postgres']) {
  test.serial(`explore ${name}`, async (t) => {
    const why = skipReason(name);
    if (why !== undefined) return t.log(why), t.pass();
    const t0 = Date.now();
    const img = await loadBenchImage(name);
    const pathOf = new Map(img.merged.entries.filter((e) => e.digest).map((e) => [e.digest!, e.path]));
    const t1 = Date.now();
    const pr = await predictWith(new StartupTree(img.merged.entries), img.config, (d) => readFacts(img.reader(pathOf.get(d)!), img.merged.entries.find((e) => e.digest === d)!.size));
    const t2 = Date.now();
    console.log(name, 'load', t1 - t0, 'ms predict', t2 - t1, 'ms reads', pr.reads, 'rounds', pr.rounds, 'files', pr.files.length);
    let bytes = 0;
    pr.files.forEach((f, i) => { bytes += f.size; if (f.core || i < 60) console.log(String(i).padStart(4), f.signal.padEnd(14), String(f.size).padStart(9), f.path, f.via ?? ''); });
    console.log('total bytes', bytes, 'core bytes', pr.files.filter(f=>f.core).reduce((a,f)=>a+f.size,0));
    await img.close();
    t.pass();
  });
}
