/**
 * Event-loop responsiveness of the proxy while it serves the first delta of an image of very many
 * files (issue 14): a real `starlight proxy` and docker-registry, an image built by
 * test/helpers/many-files-image.ts, one delta fetched whole (by a curl child, then decoded and checked)
 * while /healthz is polled every 50 ms.
 *
 *   node dist/bench/healthz.js [--files 60000] [--layers 3] [--runs 1]
 *
 * Prints one row per run: the delta's time and items, the slowest /healthz answer and how many took
 * over 1 s. STARLIGHT_PROXY_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=/tmp/x' profiles the proxy.
 */
import { execFile } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { ociImage } from '../fixtures/image-writer.js';
import { pushImage } from '../fixtures/push-image.js';
import { RegistryClient } from '../src/oci/client.js';
import { startBenchProxy } from './drivers/proxy.js';
import { startBenchRegistry } from './drivers/registry.js';
import { readDelta } from '../test/e2e/proxy-support.js';
import { healthzWhile } from '../test/helpers/healthz.js';
import { manyFilesLayers } from '../test/helpers/many-files-image.js';

/** Runs `start` (which spawns synchronously) with NODE_OPTIONS set to `opts` for the child only. */
function withNodeOptions<T>(opts: string | undefined, start: () => T): T {
  if (opts === undefined) return start();
  const was = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = opts;
  try {
    return start();
  } finally {
    if (was === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = was;
  }
}

const run = promisify(execFile);

const { values } = parseArgs({ options: { files: { type: 'string', default: '60000' }, layers: { type: 'string', default: '3' }, runs: { type: 'string', default: '1' } } });
const files = Number(values.files);
const layers = Number(values.layers);

const dir = mkdtempSync(join(tmpdir(), 'sl-bench-healthz-'));
const reg = await startBenchRegistry(join(dir, 'registry'));
try {
  const img = await ociImage(manyFilesLayers(files, layers));
  const ref = `${reg.host}/many:v1`;
  await pushImage(new RegistryClient(), ref, { config: img.config, layers: img.layers.map((l) => ({ data: l.data, mediaType: l.mediaType })) });
  console.log(`| files | layers | delta s | items | /healthz slowest ms | answers > 1 s | polls |`);
  console.log('|---|---|---|---|---|---|---|');
  for (let r = 0; r < Number(values.runs); r++) {
    const data = join(dir, `proxy-${r}`);
    const proxy = await withNodeOptions(process.env.STARLIGHT_PROXY_NODE_OPTIONS, () => startBenchProxy(reg.host, data));
    try {
      const url = `http://${proxy.host}`;
      const t0 = performance.now();
      // A curl child fetches the delta: decoding 60 000 items here would delay this process's polls.
      const out = join(dir, `delta-${r}`);
      const pending = run('curl', ['-sS', '--fail', '--max-time', '900', '-o', out, `${url}/v1/delta?to=${encodeURIComponent(ref)}`]);
      const h = await healthzWhile(url, pending, { deadlineMs: 120_000 });
      await pending;
      const s = (performance.now() - t0) / 1000;
      const d = await readDelta(createReadStream(out));
      console.log(`| ${files} | ${layers} | ${s.toFixed(2)} | ${d.header.items.length} | ${h.maxMs.toFixed(0)} | ${h.slow} | ${h.polls} |${h.failed !== undefined ? ` ${h.failed}` : ''}`);
    } finally {
      await proxy.stop();
      rmSync(data, { recursive: true, force: true });
    }
  }
} finally {
  await reg.stop();
  rmSync(dir, { recursive: true, force: true });
}
