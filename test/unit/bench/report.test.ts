import test from 'ava';
import { aggregate, median, ratioToBaseline, summarize } from '../../../bench/report/aggregate.js';
import { aggregatesCsv, csvField, resultsCsv } from '../../../bench/report/csv.js';
import { OVERHEAD_HEADER, STARTUP_HEADER, overheadTable, startupTable } from '../../../bench/report/markdown.js';
import { niceScale, startupSvg } from '../../../bench/report/svg.js';
import type { TrialResult } from '../../../bench/report/types.js';

function result(p: Partial<TrialResult>): TrialResult {
  return { mode: 'overlayfs', image: 'python-web', rttMs: 0, bandwidthBps: 100e6, scenario: 'fresh', workload: 'startup', run: 1, status: 'ok', ...p };
}

test('median of odd and even lists; empty gives NaN', (t) => {
  t.is(median([5, 1, 3]), 3);
  t.is(median([4, 1, 3, 2]), 2.5);
  t.true(Number.isNaN(median([])));
  t.deepEqual(summarize([3, 9, 1]), { median: 3, min: 1, max: 9 });
  t.is(summarize([]), undefined);
});

test('aggregate groups by key, summarises ok runs only and keeps failure reasons', (t) => {
  const rs = [
    result({ run: 1, totalMs: 1000, bytes: 10 }),
    result({ run: 2, totalMs: 3000, bytes: 30 }),
    result({ run: 3, totalMs: 2000, bytes: 20 }),
    result({ run: 4, status: 'failed', reason: 'timeout', totalMs: 99_999 }),
    result({ mode: 'estargz', run: 1, totalMs: 500 }),
  ];
  const aggs = aggregate(rs);
  t.is(aggs.length, 2);
  const o = aggs[0]!;
  t.is(o.mode, 'overlayfs');
  t.is(o.runs, 4);
  t.is(o.ok, 3);
  t.deepEqual(o.metrics.totalMs, { median: 2000, min: 1000, max: 3000 });
  t.deepEqual(o.metrics.bytes, { median: 20, min: 10, max: 30 });
  t.is(o.metrics.pullMs, undefined);
  t.deepEqual(o.reasons, ['failed: timeout']);
});

test('ratioToBaseline divides by the overlayfs median of the same key', (t) => {
  const aggs = aggregate([
    result({ workload: 'overhead', readAllMs: 1000 }),
    result({ workload: 'overhead', mode: 'estargz', readAllMs: 2500 }),
    result({ workload: 'overhead', mode: 'estargz', image: 'redis', readAllMs: 2500 }),
  ]);
  t.is(ratioToBaseline(aggs, aggs[1]!, 'readAllMs'), 2.5);
  t.is(ratioToBaseline(aggs, aggs[2]!, 'readAllMs'), undefined);
  t.is(ratioToBaseline(aggs, aggs[1]!, 'pythonImportMs'), undefined);
});

test('CSV quotes fields with commas/quotes and has one row per result or aggregate', (t) => {
  t.is(csvField('a,b'), '"a,b"');
  t.is(csvField('say "hi"'), '"say ""hi"""');
  t.is(csvField(undefined), '');
  const rs = [result({ totalMs: 1 }), result({ run: 2, status: 'failed', reason: 'x, y' })];
  const lines = resultsCsv(rs).trimEnd().split('\n');
  t.is(lines.length, 3);
  t.true(lines[0]!.startsWith('workload,mode,image,scenario,rttMs,bandwidthBps,run,status,pullMs'));
  t.true(lines[2]!.includes('"x, y"'));
  const agg = aggregatesCsv(aggregate([result({ totalMs: 1 }), result({ run: 2, status: 'failed', reason: 'timeout' })])).trimEnd().split('\n');
  t.is(agg.length, 2);
  t.is(agg[0]!.split(',').length, agg[1]!.split(',').length);
});

test('startup table: header, separator and one row per startup aggregate with equal column counts; all-skipped modes left out', (t) => {
  const aggs = aggregate([
    result({ totalMs: 1500, pullMs: 1000, runToReadyMs: 500, bytes: 12e6, requests: 7, connections: 2 }),
    result({ run: 2, totalMs: 2500, pullMs: 1000, runToReadyMs: 1500, bytes: 12e6, requests: 7, connections: 2 }),
    result({ mode: 'estargz', status: 'skipped', reason: 'ctr-remote not found' }),
    result({ mode: 'starlight', status: 'failed', reason: 'boom' }),
    result({ workload: 'overhead', readAllMs: 10 }),
  ]);
  const lines = startupTable(aggs).trimEnd().split('\n');
  t.is(lines.length, 2 + 2);
  t.false(lines.some((l) => l.includes('estargz')), 'a skipped-only mode has no row');
  const cols = (l: string): number => l.split(/(?<!\\)\|/).length;
  for (const l of lines) t.is(cols(l), STARTUP_HEADER.length + 2);
  t.true(lines[2]!.includes('2.00 [1.50–2.50]'));
  t.true(lines[2]!.includes('12.0'));
  t.true(lines[3]!.includes('0/1 (failed: boom)'), 'failures stay in the table');
  const over = overheadTable(aggs).trimEnd().split('\n');
  t.is(over.length, 3);
  for (const l of over) t.is(cols(l), OVERHEAD_HEADER.length + 2);
});

test('overhead table: cold and warm cells carry the median and the ratio to overlayfs', (t) => {
  const aggs = aggregate([
    result({ workload: 'overhead', readAllMs: 1000, findStatWarmMs: 200 }),
    result({ workload: 'overhead', mode: 'starlight', readAllMs: 1100, findStatWarmMs: 100 }),
  ]);
  const row = overheadTable(aggs).trimEnd().split('\n')[3]!;
  t.true(row.includes('1.10 (1.10×; paired 1.10×)'), row);
  t.true(row.includes('0.10 (0.50×; paired 0.50×)'), row);
  t.true(row.includes('–'), 'a workload without figures shows a dash');
});

test('overhead: paired ratios take each run against the overlayfs run of the same index', (t) => {
  // Load drifting down over the bench: overlayfs 300, 200, 100 ms; the mode 10 % slower in each run.
  // Failed or skipped runs on either side make no pair.
  const rs = [
    ...[300, 200, 100].map((ms, i) => result({ workload: 'overhead', run: i + 1, pythonImportMs: ms })),
    ...[330, 220, 110].map((ms, i) => result({ workload: 'overhead', mode: 'starlight', run: i + 1, pythonImportMs: ms })),
    result({ workload: 'overhead', run: 4, status: 'failed', reason: 'x', pythonImportMs: 1 }),
    result({ workload: 'overhead', mode: 'starlight', run: 4, pythonImportMs: 999 }),
    result({ workload: 'overhead', mode: 'starlight', run: 5, pythonImportMs: 999 }),
  ];
  const aggs = aggregate(rs);
  const sl = aggs.find((a) => a.mode === 'starlight')!;
  t.is(aggs.find((a) => a.mode === 'overlayfs')!.paired, undefined, 'the baseline has no pairs');
  const p = sl.paired!.pythonImportMs!;
  t.is(p.median.toFixed(3), '1.100');
  t.is(p.min.toFixed(3), '1.100');
  t.is(p.max.toFixed(3), '1.100');
  t.is(sl.paired!.readAllMs, undefined, 'no figures, no pairs');
  // The ratio of medians includes the unpaired runs (median of 330, 220, 110, 999, 999 = 330 vs 200).
  t.is(ratioToBaseline(aggs, sl, 'pythonImportMs'), 1.65);
  const row = overheadTable(aggs).trimEnd().split('\n')[3]!;
  t.true(row.includes('0.33 (1.65×; paired 1.10×)'), row);
  const csv = aggregatesCsv(aggs).trimEnd().split('\n');
  const cols = csv[0]!.split(',');
  t.is(csv[2]!.split(',')[cols.indexOf('pythonImportMs_paired_median')], '1.1');
  t.is(startupTable(aggregate([result({ totalMs: 1 }), result({ mode: 'starlight', totalMs: 2 })])).includes('paired'), false, 'startup rows have no pairs');
  t.is(aggregate([result({ totalMs: 1 }), result({ mode: 'starlight', totalMs: 2 })])[1]!.paired, undefined);
});

test('SVG has one bar per (image, mode, scenario) with data and a marker for missing ones', (t) => {
  const rs: TrialResult[] = [];
  for (const image of ['python-web', 'redis', 'nginx'])
    for (const mode of ['overlayfs', 'estargz', 'download-only'])
      for (const scenario of ['fresh', 'update'] as const) rs.push(result({ image, mode, scenario, totalMs: 1234 }));
  rs.push(result({ image: 'redis', mode: 'starlight', status: 'skipped', reason: 'not available yet' }));
  const svg = startupSvg(aggregate(rs));
  t.true(svg.startsWith('<svg'));
  t.true(svg.trimEnd().endsWith('</svg>'));
  const bars = [...svg.matchAll(/<rect class="bar" data-image="([^"]+)" data-mode="([^"]+)" data-scenario="([^"]+)"/g)].map((m) => m.slice(1).join('/'));
  t.is(bars.length, 3 * 3 * 2);
  t.is(new Set(bars).size, bars.length);
  t.true(bars.includes('redis/estargz/update'));
  t.is([...svg.matchAll(/class="missing"/g)].length, 1);
  t.is([...svg.matchAll(/<g class="panel"/g)].length, 2);
});

test('niceScale picks a round maximum at or above the value', (t) => {
  t.deepEqual(niceScale(7.3), { max: 8, step: 2 });
  t.deepEqual(niceScale(11.2), { max: 12, step: 2 });
  t.deepEqual(niceScale(2.1), { max: 2.5, step: 0.5 });
  t.deepEqual(niceScale(4.1), { max: 5, step: 1 });
  t.deepEqual(niceScale(0), { max: 1, step: 0.2 });
});
