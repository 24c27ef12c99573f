/** The demo's argument parsing (scripts/demo/options.ts) and summary wording (scripts/demo/report.ts). */
import test from 'ava';
import { StarlightError } from '../../../src/errors.js';
import { parseDemoArgs } from '../../../scripts/demo/options.js';
import { firstRunLines, updateLines, type StreamFacts } from '../../../scripts/demo/report.js';

test('no arguments: no WAN emulator, not kept', (t) => {
  t.deepEqual(parseDemoArgs([]), { keep: false, help: false });
});

test('--rtt and --bandwidth put the WAN emulator in; either alone is enough', (t) => {
  t.deepEqual(parseDemoArgs(['--keep', '--rtt', '50', '--bandwidth', '100mbit']), { keep: true, help: false, wan: { rttMs: 50, bandwidthBps: 100e6 } });
  t.deepEqual(parseDemoArgs(['--rtt', '20']).wan, { rttMs: 20, bandwidthBps: 0 });
  t.deepEqual(parseDemoArgs(['--bandwidth', '1gbit']).wan, { rttMs: 0, bandwidthBps: 1e9 });
});

test('bad arguments are SL_ERR_INVALID_ARGUMENT', (t) => {
  for (const argv of [['--rtt', 'soon'], ['--rtt', '-5'], ['--rtt', ''], ['--bandwidth', 'fast'], ['--bandwidth', '0'], ['--nope'], ['extra']]) {
    const err = t.throws(() => parseDemoArgs(argv), { instanceOf: StarlightError }, argv.join(' '));
    t.is(err?.code, 'SL_ERR_INVALID_ARGUMENT');
  }
});

const facts = (wireBytes: number, files: number): StreamFacts => ({ wireBytes, files, filesPresent: files, bytes: wireBytes * 2, bytesPresent: wireBytes * 2 });

test('the summary has one line per stable label', (t) => {
  const http = { url: 'http://127.0.0.1:8080/', status: 200, bytes: 5, firstLine: 'hello' };
  const first = firstRunLines({
    ref: 'r/x:v1', layers: 3, compressedBytes: 64 << 20, indexMs: 1000, pullMs: 500, readyMs: 1500, runMs: 1000, readyLine: 'READY x v1',
    http, atReady: facts(16 << 20, 10), completeMs: 3000, complete: facts(60 << 20, 100),
  });
  const labels = first.slice(1).map((l) => l.split(':')[0]);
  t.deepEqual(labels, ['index', 'pull', 'ready', 'http', 'at ready', 'complete']);
  t.regex(first[5]!, /16\.0 MiB streamed \(25% of the 64\.0 MiB/);
  const up = updateLines({ indexMs: 1, pullMs: 2, readyMs: 3, http, sent: facts(1024, 2), compressedBytes: 64 << 20, newLayers: 2, newLayersBytes: 16 << 20 });
  t.regex(up[0]!, /^update v2: .*1\.0 KiB streamed \(2 new files.* for its 2 new layers$/);
  t.regex(up[1]!, /^http v2: +GET http:\/\/127\.0\.0\.1:8080\/ → 200, 5 bytes: hello$/);
});
