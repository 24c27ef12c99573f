import test from 'ava';
import { phasesTable } from '../../../bench/report/phases.js';
import type { TrialResult } from '../../../bench/report/types.js';
import { pullEnv } from '../../../bench/drivers/worker.js';
import { PhaseLog, PhaseTimer } from '../../../src/worker/phases.js';

test('PhaseTimer: laps in order, repeated names add up, add() prefixes; PhaseLog keeps the last N', (t) => {
  const timer = new PhaseTimer();
  timer.lap('a');
  timer.lap('b');
  timer.lap('a');
  timer.add({ x: 1.5 }, 'p.');
  t.deepEqual(Object.keys(timer.phases), ['a', 'b', 'p.x']);
  t.is(timer.phases['p.x'], 1.5);
  t.true(timer.phases.a! >= 0 && timer.total() >= timer.phases.a! + timer.phases.b!);
  const log = new PhaseLog(2);
  for (const subject of ['1', '2', '3']) log.push({ op: 'pull', subject, at: 0, totalMs: 0, phases: {} });
  t.deepEqual(log.all().map((r) => r.subject), ['2', '3']);
});

test('phasesTable: medians per phase and trial group; failed trials and trials without phases are left out', (t) => {
  const base = { workload: 'startup', mode: 'starlight', image: 'redis', scenario: 'update', rttMs: 0, bandwidthBps: 0 } as const;
  const results = [
    { ...base, run: 1, status: 'ok', phases: { 'cli.start': 10, 'view.fuse-mount': 3 } },
    { ...base, run: 2, status: 'ok', phases: { 'cli.start': 30 } },
    { ...base, run: 3, status: 'ok', phases: { 'cli.start': 20 } },
    { ...base, run: 4, status: 'failed', phases: { 'cli.start': 999 } },
    { ...base, mode: 'download-only', run: 1, status: 'ok' },
  ] as TrialResult[];
  const md = phasesTable(results);
  t.regex(md, /\| phase \(ms, median\) \| redis update rtt=0 starlight \|/);
  t.regex(md, /\| cli\.start \| 20\.0 \|/);
  t.regex(md, /\| view\.fuse-mount \| 3\.0 \|/);
  t.notRegex(md, /download-only/);
  t.is(phasesTable([]), '');
});

test('the timed starlight pull runs without NODE_EXTRA_CA_CERTS (node parses it at start-up, issue 19); the rest of the environment is kept', (t) => {
  const env = { PATH: '/usr/bin', NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt', CONTAINERD_NAMESPACE: 'bench' };
  const r = pullEnv(env);
  t.true(r.dropped);
  t.deepEqual(r.env, { PATH: '/usr/bin', CONTAINERD_NAMESPACE: 'bench' });
  t.is(env.NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt'); // the caller's object is left as it was
  t.deepEqual(pullEnv({ PATH: '/usr/bin' }), { env: { PATH: '/usr/bin' }, dropped: false });
});
