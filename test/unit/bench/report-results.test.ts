import test from 'ava';
import { aggregate } from '../../../bench/report/aggregate.js';
import { startupTable } from '../../../bench/report/markdown.js';
import { resultsMarkdown } from '../../../bench/report/results-md.js';
import { bandwidthLabel, summaryCell } from '../../../bench/report/format.js';

const machine = { cpu: 'Test CPU', cores: 2, memGiB: 23.4, kernel: '6.1.0', node: 'v20.0.0', containerd: 'containerd 1.6.20', runc: 'runc 1.1.5' };

test('RESULTS.md names the exact command, machine, tools and includes the tables and skipped modes', (t) => {
  const table = startupTable(aggregate([{ mode: 'overlayfs', image: 'redis', rttMs: 150, bandwidthBps: 1e8, scenario: 'fresh', workload: 'startup', run: 1, status: 'ok', totalMs: 4200 }]));
  const md = resultsMarkdown({
    command: 'npm run bench -- --rtt 150',
    date: '2026-01-01T00:00:00Z',
    durationS: 61.4,
    machine,
    startupTable: table,
    overheadTable: '| image |\n| --- |\n',
    outDir: 'bench/out',
    skipped: ['starlight: not available yet'],
  });
  t.true(md.startsWith('# Benchmark results'));
  t.true(md.includes('`npm run bench -- --rtt 150`'));
  t.true(md.includes('Test CPU, 2 cores, 23 GiB RAM, Linux 6.1.0'));
  t.true(md.includes('containerd 1.6.20'));
  t.true(md.includes('- starlight: not available yet'));
  t.true(md.includes('| redis | fresh | 150 | 100mbit | overlayfs | 4.20 |'));
  t.true(md.includes('## Runtime overhead'));
});

test('format helpers: bandwidth labels and summary cells', (t) => {
  t.is(bandwidthLabel(0), 'unlimited');
  t.is(bandwidthLabel(100e6), '100mbit');
  t.is(bandwidthLabel(1e9), '1gbit');
  t.is(bandwidthLabel(500e3), '500kbit');
  t.is(summaryCell(undefined, String), '–');
  t.is(summaryCell({ median: 2, min: 2, max: 2 }, String), '2');
  t.is(summaryCell({ median: 2, min: 1, max: 3 }, String), '2 [1–3]');
});
