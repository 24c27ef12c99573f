/**
 * Issue 14 acceptance: "/healthz answers within a second while the proxy indexes the largest image you
 * test". A real `starlight proxy` process and docker-registry; an image of 60 000 small files in three
 * layers (test/helpers/many-files-image.ts, written with fixtures/image-writer.ts) is asked for cold,
 * so one request indexes it, plans its first delta and streams it, while /healthz is polled every
 * 50 ms, each poll with a 1 s deadline. The delta is fetched by a `curl` child into a file (this
 * process only polls, so its own event loop does not delay the answers it times), then decoded and
 * every item checked.
 *
 * The bound is the issue's stated one (1 s), not a speed figure; the slowest answer is logged.
 * Speed: bench/healthz.ts.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ociImage } from '../../fixtures/image-writer.js';
import { pushImage } from '../../fixtures/push-image.js';
import { RegistryClient } from '../../src/oci/client.js';
import { healthzWhile } from '../helpers/healthz.js';
import { manyFilesLayers } from '../helpers/many-files-image.js';
import { startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';
import { peakRssKb, readDelta, startProxyProcess } from './proxy-support.js';

const run = promisify(execFile);
/** Files in the image (the issue's range: 20 000-60 000; the largest bench image, postgres, has ~40 000 entries). */
const FILES = 60_000;
/** The issue's bound on a /healthz answer, ms. */
const HEALTHZ_BOUND_MS = 1000;
/** Bound on the proxy's peak RSS over the run, MiB (measured 291 MiB at load ~6): the plan of 60 000 items is held once. */
const RSS_BOUND_MIB = 1024;
/** Deadline of the whole delta, s (indexing + planning + streaming 60 000 items on a loaded machine). */
const DELTA_DEADLINE_S = 600;

test(`/healthz answers within ${HEALTHZ_BOUND_MS} ms while the proxy indexes, plans and streams the first delta of a ${FILES}-file image`, async (t) => {
  t.timeout(900_000);
  const reg = await startRegistry(t);
  const img = await ociImage(manyFilesLayers(FILES));
  const ref = `${reg.host}/many:v1`;
  await pushImage(new RegistryClient(), ref, { config: img.config, layers: img.layers.map((l) => ({ data: l.data, mediaType: l.mediaType })) });
  const proxy = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-health-')]);

  const out = join(tempDir(t, 'sl-health-delta-'), 'delta');
  const t0 = performance.now();
  const pending = run('curl', ['-sS', '--fail', '--max-time', String(DELTA_DEADLINE_S), '-o', out, `${proxy.url}/v1/delta?to=${encodeURIComponent(ref)}`]);
  const h = await healthzWhile(proxy.url, pending, { deadlineMs: HEALTHZ_BOUND_MS, slowMs: HEALTHZ_BOUND_MS });
  // Whatever the polls saw, the delta must complete (a failed poll stops polling, not the delta).
  await pending.catch((err: unknown) => t.fail(`delta of ${ref} failed: ${String(err)}; proxy log tail: ${proxy.stderr().slice(-2000)}`));
  const seconds = (performance.now() - t0) / 1000;
  const rssMiB = peakRssKb(proxy.pid) / 1024;
  t.log(`delta of ${FILES} files in ${seconds.toFixed(1)} s; /healthz: ${h.polls} answers, slowest ${h.maxMs.toFixed(0)} ms${h.failed !== undefined ? `; ${h.failed}` : ''}; proxy peak RSS ${rssMiB.toFixed(0)} MiB`);
  t.is(h.failed, undefined, h.failed);
  t.true(h.maxMs < HEALTHZ_BOUND_MS, `slowest /healthz answer ${h.maxMs.toFixed(0)} ms`);
  t.true(rssMiB < RSS_BOUND_MIB, `proxy peak RSS ${rssMiB.toFixed(0)} MiB`);
  t.true(h.polls >= 5, `/healthz was polled during the delta (${h.polls} answers)`);

  const d = await readDelta(createReadStream(out));
  t.is(d.header.items.length, FILES, 'every file is an item (distinct contents)');
  t.is(d.end.items, FILES);
  t.is(d.contents.size, FILES, 'every item arrived and matched its digest');
  t.is((await fetch(`${proxy.url}/healthz`)).status, 200);
});
