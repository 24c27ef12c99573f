import test from 'ava';
import { PROXY_BUSY_GAUGES, parseGauges } from '../../../bench/drivers/quiesce.js';
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
