import test from 'ava';
import { PROXY_BUSY_GAUGES, parseBlockStat, parseGauges, waitDeviceIdle } from '../../../bench/drivers/quiesce.js';
import { summarizeOrder } from '../../../bench/drivers/starlight.js';
import { ProxyMetrics } from '../../../src/proxy/metrics.js';

test('parseGauges reads every busy gauge the proxy renders, with its value', (t) => {
  const text = new ProxyMetrics(() => ({ cacheBytes: 7, traceUploadsRunning: 1, traceUploadsWaiting: 0, indexing: 2, encodesPending: 3 })).render();
  const g = parseGauges(text);
  t.deepEqual(
    PROXY_BUSY_GAUGES.map((k) => g.get(k)),
    [1, 0, 2, 3],
  );
  t.is(g.get('starlight_proxy_cache_bytes'), 7);
});

test('summarizeOrder: run-length by signal class, predicted signals folded into one', (t) => {
  const e = (signal: string | undefined, size: number): { signal?: string; size: number } => (signal === undefined ? { size } : { signal, size });
  const s = summarizeOrder([e('entrypoint', 1e6), e('needed-lib', 1e6), e('prior-trace', 5e5), e('home', 2e6), e(undefined, 1e6)]);
  t.is(s, 'predicted 2f/2.0MB | prior-trace 1f/0.5MB | predicted 1f/2.0MB | trace 1f/1.0MB');
  t.is(summarizeOrder([e('home', 1), e('home', 1)], 1), 'predicted 1f/0.0MB');
});

// A sysfs block stat line: reads … writes … in_flight io_ticks time_in_queue discards … flushes.
const statLine = (c: { reads?: number; writes?: number; inFlight?: number; ioTicks?: number; discards?: number; flushes?: number }): string =>
  `${c.reads ?? 0} 0 0 0 ${c.writes ?? 0} 0 0 0 ${c.inFlight ?? 0} ${c.ioTicks ?? 0} 0 ${c.discards ?? 0} 0 0 0 ${c.flushes ?? 0} 0`;

test('parseBlockStat reads the counters idleness depends on; older kernels without discard/flush fields read 0', (t) => {
  t.deepEqual(parseBlockStat(' 3880591 4181964 408211042 1360006 7910918 11498940 1169179384 18907465 1 2437764 21735710 10639574 10594 969377832 1387434 285698 80803\n'), {
    reads: 3880591,
    writes: 7910918,
    inFlight: 1,
    ioTicks: 2437764,
    discards: 10639574,
    flushes: 285698,
  });
  t.deepEqual(parseBlockStat('1 0 0 0 2 0 0 0 0 5 0'), { reads: 1, writes: 2, inFlight: 0, ioTicks: 5, discards: 0, flushes: 0 });
  t.throws(() => parseBlockStat('not a stat line'), { message: /not a block device stat line/ });
});

test('waitDeviceIdle: syncs first, waits out a burst of discards and writes, then resolves idle with what it saw', async (t) => {
  // Discards and writes move for the first reads after the sync, then nothing moves.
  const burst = [statLine({}), statLine({ writes: 5, inFlight: 3, ioTicks: 2 }), statLine({ writes: 9, discards: 400, ioTicks: 40 }), statLine({ writes: 9, discards: 700, ioTicks: 60, flushes: 1 })];
  let reads = 0;
  let synced = -1;
  const d = await waitDeviceIdle('/sys/fake/stat', new AbortController().signal, {
    windowMs: 60,
    read: () => burst[Math.min(reads++, burst.length - 1)]!,
    sync: () => (synced = reads),
  });
  t.is(synced, 1, 'sync runs after the first sample, before the others');
  t.true(d?.idle);
  t.true(reads > burst.length, 'polled past the burst');
  t.like(d, { writes: 9, discards: 700, flushes: 1, reads: 0 });
  t.true(d!.waitedMs >= 60);
});

test('waitDeviceIdle: a device that never goes idle resolves not idle at the deadline; no stat file, no wait', async (t) => {
  let ticks = 0;
  const d = await waitDeviceIdle('/sys/fake/stat', new AbortController().signal, { windowMs: 30, timeoutMs: 100, read: () => statLine({ inFlight: 1, ioTicks: ticks++ }), sync: () => undefined });
  t.false(d?.idle);
  t.true(d!.waitedMs >= 100);
  t.is(await waitDeviceIdle(undefined, new AbortController().signal, { sync: () => t.fail('no sync without a device') }), undefined);
});
