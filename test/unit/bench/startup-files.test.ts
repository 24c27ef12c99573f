import test from 'ava';
import { meetsGoal, ratio, rawBytes, selectStartupFiles, startupTracesTable, type LearnedFile } from '../../../bench/report/startup-files.js';
import type { TrialResult } from '../../../bench/report/types.js';
import { rowOf } from '../../../bench/traces.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const learned: LearnedFile[] = [
  { path: 'usr/bin/python3', size: 1000, digest: d('a') },
  { path: 'usr/lib/libc.so', size: 500, digest: d('b') },
  { path: 'usr/lib/libc-copy.so', size: 500, digest: d('b') },
  { path: 'app/late.py', size: 70, digest: d('c') },
];

test('selectStartupFiles keeps entries up to the ready time, sized by the learned order, each content once', (t) => {
  const traces = [{ entries: [{ path: 'usr/bin/python3', ms: 1 }, { path: 'usr/lib/libc.so', ms: 5 }, { path: 'usr/lib/libc-copy.so', ms: 6 }, { path: 'etc/empty', ms: 7 }, { path: 'app/late.py', ms: 900 }] }];
  const sel = selectStartupFiles(traces, 100, learned);
  t.is(sel.cut, 'ready');
  t.deepEqual([...sel.contents.keys()], [d('a'), d('b')]);
  t.is(rawBytes(sel), 1500);
  t.is(rawBytes(selectStartupFiles(traces, undefined, learned)), 1570);
  t.is(selectStartupFiles(traces, undefined, learned).cut, 'whole');
});

test('selectStartupFiles without recorded traces takes the whole learned order', (t) => {
  const sel = selectStartupFiles([], 100, learned);
  t.is(sel.cut, 'whole');
  t.is(rawBytes(sel), 1570);
});

test('ratio, goal and table', (t) => {
  t.is(ratio(12, 10), '1.20');
  t.is(ratio(1, 0), '–');
  t.is(ratio(undefined, 3), '–');
  t.true(meetsGoal({ image: 'x', tracedBytesDown: 12e6, startupEncodedBytes: 10e6 }));
  t.false(meetsGoal({ image: 'x', tracedBytesDown: 13e6, startupEncodedBytes: 10e6 }));
  t.is(meetsGoal({ image: 'x' }), undefined);
  const md = startupTracesTable([{ image: 'redis', untracedReadyMs: 3000, untracedBytesDown: 20e6, tracedReadyMs: 1500, tracedBytesDown: 6e6, startupRawBytes: 9e6, startupEncodedBytes: 5e6, startupFiles: 40, cut: 'ready' }]);
  t.regex(md, /\| redis \| 3\.00 \| 20\.0 \| 1\.50 \| 6\.00 \| 40, 9\.00 \/ 5\.00 \| 1\.20 \| 0\.67 \| met \|/);
});

test('rowOf takes medians of ok runs per mode and keeps failure reasons', (t) => {
  const base = { image: 'nginx', rttMs: 150, bandwidthBps: 100e6, scenario: 'fresh', workload: 'startup' } as const;
  const rs: TrialResult[] = [
    { ...base, mode: 'starlight', run: 1, status: 'ok', totalMs: 2000, bytesDown: 10 },
    { ...base, mode: 'starlight+traces', run: 1, status: 'ok', totalMs: 1000, bytesDown: 4, startupFiles: { files: 2, rawBytes: 8, encodedBytes: 3, cut: 'ready', readyMs: 50 } },
    { ...base, mode: 'starlight+traces', run: 2, status: 'failed', reason: 'boom' },
  ];
  const r = rowOf('nginx', rs);
  t.is(r.untracedReadyMs, 2000);
  t.is(r.tracedBytesDown, 4);
  t.is(r.startupEncodedBytes, 3);
  t.is(r.cut, 'ready');
  t.is(r.reason, 'starlight+traces: boom');
});
