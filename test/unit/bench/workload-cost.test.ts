import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blockStatOf, describeIdle, overheadScript, parseWorkloadCost } from '../../../bench/trials.js';

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

test('parseWorkloadCost: the block device\'s read requests, bytes and ms around the workload', (t) => {
  const out = 'FINDSTAT_MACHINE 10 0\nFINDSTAT_DISK 1041 20832 175\nFINDSTAT 412\nTIMES\n0m0.000000s 0m0.000000s\n0m0.100000s 0m0.100000s\n';
  t.like(parseWorkloadCost(out, 'FINDSTAT'), { deviceReads: 1041, deviceReadBytes: 20832 * 512, deviceReadMs: 175 });
  t.is(parseWorkloadCost(out, 'SMALLFILES').deviceReads, undefined, 'another workload\'s line is not taken');
});

test('overheadScript with a block stat file: sh prints the counters\' difference around the timed part; none when the file is not readable', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sl-wcost-'));
  try {
    const stat = join(dir, 'stat');
    // sysfs layout: reads, merges, sectors, ticks, then the write fields.
    writeFileSync(stat, '     100        5     2000      40        7        0       56        3        0       50       43\n');
    const script = overheadScript(['SMALLFILES'], stat).replace(/find \/ -xdev[^;]*/, 'true');
    const cost = parseWorkloadCost(execFileSync('sh', ['-c', script], { encoding: 'utf8' }), 'SMALLFILES');
    t.like(cost, { deviceReads: 0, deviceReadBytes: 0, deviceReadMs: 0 });
    const gone = overheadScript(['SMALLFILES'], join(dir, 'missing')).replace(/find \/ -xdev[^;]*/, 'true');
    const out = execFileSync('sh', ['-c', gone], { encoding: 'utf8' });
    t.regex(out, /^SMALLFILES \d+$/m);
    t.is(parseWorkloadCost(out, 'SMALLFILES').deviceReads, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('blockStatOf: the sysfs stat file of the disk holding a dir; none for a file system without a block device', (t) => {
  const disk = blockStatOf(process.cwd());
  if (disk !== undefined) t.regex(disk, /^\/sys\/dev\/block\/\d+:\d+\/stat$/);
  t.is(blockStatOf('/proc'), undefined);
});

test('describeIdle: what the per-container line says about the wait before it', (t) => {
  t.is(describeIdle(undefined), 'no device to wait for');
  t.is(describeIdle({ idle: true, waitedMs: 640, reads: 2, writes: 31, discards: 7, flushes: 1 }), 'device idle after 640 ms (31 writes, 7 discards, 2 reads, 1 flushes)');
  t.regex(describeIdle({ idle: false, waitedMs: 5000, reads: 0, writes: 900, discards: 0, flushes: 3 }), /^device NOT idle after 5000 ms/);
});
