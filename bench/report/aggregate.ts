/**
 * Folds trial results into one Aggregate per (mode, image, RTT, bandwidth, scenario, workload):
 * median and min–max of each metric over the successful runs. Pure.
 *
 * Not here: formatting (csv.ts, markdown.ts, svg.ts).
 */
import { METRIC_NAMES, OVERHEAD_TIME_METRICS, type Aggregate, type OverheadMetric, type Summary, type TrialKey, type TrialResult } from './types.js';

/** The mode overhead ratios are taken to. */
const BASELINE = 'overlayfs';

/** Median of a non-empty list (mean of the middle two for even lengths); NaN for an empty one. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** median/min/max of a list, or undefined when it is empty. */
export function summarize(values: readonly number[]): Summary | undefined {
  if (values.length === 0) return undefined;
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** A stable string for a TrialKey (grouping, lookups). */
export function keyOf(k: TrialKey): string {
  return [k.workload, k.image, k.scenario, k.rttMs, k.bandwidthBps, k.mode].join('|');
}

/** Groups `results` by TrialKey, in first-seen order. */
export function aggregate(results: readonly TrialResult[]): Aggregate[] {
  const groups = new Map<string, TrialResult[]>();
  for (const r of results) {
    const k = keyOf(r);
    const g = groups.get(k);
    if (g) g.push(r);
    else groups.set(k, [r]);
  }
  const out: Aggregate[] = [];
  for (const rs of groups.values()) {
    const first = rs[0]!;
    const ok = rs.filter((r) => r.status === 'ok');
    const agg: Aggregate = {
      mode: first.mode,
      image: first.image,
      rttMs: first.rttMs,
      bandwidthBps: first.bandwidthBps,
      scenario: first.scenario,
      workload: first.workload,
      runs: rs.length,
      ok: ok.length,
      reasons: [...new Set(rs.filter((r) => r.status !== 'ok' && r.reason).map((r) => `${r.status}: ${r.reason}`))],
      notes: [...new Set(rs.filter((r) => r.note).map((r) => r.note!))],
      metrics: {},
    };
    for (const m of METRIC_NAMES) {
      const s = summarize(ok.map((r) => r[m]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v)));
      if (s) agg.metrics[m] = s;
    }
    out.push(agg);
  }
  for (const a of out) {
    const paired = pairedRatios(groups.get(keyOf(a))!, groups.get(keyOf({ ...a, mode: BASELINE })));
    if (a.workload === 'overhead' && a.mode !== BASELINE && paired) a.paired = paired;
  }
  return out;
}

/**
 * Per timed overhead metric, the summary of the per-run ratios `mode`'s run k ÷ `baseline`'s run k
 * (both ok, both finite, baseline > 0); undefined when no metric has a pair. Why pairs: a ratio of
 * medians lets a load change between the first and the last runs of a bench on a shared machine land
 * on one mode; a pair ran minutes apart (the plan runs the modes of one run adjacently).
 */
function pairedRatios(rs: readonly TrialResult[], base: readonly TrialResult[] | undefined): Aggregate['paired'] {
  if (!base) return undefined;
  const byRun = new Map(base.filter((b) => b.status === 'ok').map((b) => [b.run, b]));
  const out: NonNullable<Aggregate['paired']> = {};
  for (const m of OVERHEAD_TIME_METRICS) {
    const ratios: number[] = [];
    for (const r of rs) {
      const num = r[m];
      const den = byRun.get(r.run)?.[m];
      if (r.status === 'ok' && typeof num === 'number' && Number.isFinite(num) && typeof den === 'number' && Number.isFinite(den) && den > 0) ratios.push(num / den);
    }
    const s = summarize(ratios);
    if (s) out[m] = s;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** True when every run of `a` was skipped (mode unavailable): such rows are listed once, not tabled. */
export function allSkipped(a: Aggregate): boolean {
  return a.ok === 0 && a.reasons.length > 0 && a.reasons.every((r) => r.startsWith('skipped:'));
}

/**
 * Overhead ratios: each aggregate's median of `metric` divided by the overlayfs median for the same
 * image/RTT/bandwidth/scenario/workload; undefined when either side is missing.
 */
export function ratioToBaseline(aggs: readonly Aggregate[], a: Aggregate, metric: OverheadMetric, baseline = BASELINE): number | undefined {
  const base = aggs.find((b) => b.mode === baseline && keyOf({ ...b, mode: a.mode }) === keyOf(a));
  const num = a.metrics[metric]?.median;
  const den = base?.metrics[metric]?.median;
  if (num === undefined || den === undefined || den <= 0) return undefined;
  return num / den;
}
