import test from 'ava';
import { execFileSync } from 'node:child_process';
import { overheadScript, parseWorkloadCost } from '../../../bench/trials.js';

test('parseWorkloadCost: CPU of the children line of `times` (user + sys), read_bytes, the machine\'s busy and steal ticks around the workload', (t) => {
  const out = 'SMALLFILES_MACHINE 93 4\nSMALLFILES 377\nTIMES\n0m0.010000s 0m0.020000s\n1m0.150000s 0m0.300000s\nREAD_BYTES 4096\n';
  t.deepEqual(parseWorkloadCost(out, 'SMALLFILES'), { cpuMs: 60_450, readBytes: 4096, machineBusyMs: 930, stealMs: 40 });
  t.deepEqual(parseWorkloadCost(out), { cpuMs: 60_450, readBytes: 4096 });
  t.deepEqual(parseWorkloadCost('SMALLFILES 377\n'), {});
});

test('overheadScript ends with a trailer that sh runs and parseWorkloadCost reads (children CPU counted, exit 0)', (t) => {
  // A child that burns CPU before the trailer: its time is the shell's children's.
  const script = `sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i + 1)); done'\n${overheadScript([])}`;
  const cost = parseWorkloadCost(execFileSync('sh', ['-c', script], { encoding: 'utf8' }));
  t.true(cost.cpuMs !== undefined && cost.cpuMs > 0, `cpuMs ${cost.cpuMs}`);
  t.true(cost.readBytes !== undefined && cost.readBytes >= 0);
});
