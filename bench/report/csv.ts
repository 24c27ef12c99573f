/**
 * CSV of bench results (RFC 4180 quoting): one row per trial (`resultsCsv`) and one row per
 * aggregate with median/min/max columns (`aggregatesCsv`). Pure.
 */
import { METRIC_NAMES, OVERHEAD_TIME_METRICS, type Aggregate, type TrialResult } from './types.js';

const KEY_COLUMNS = ['workload', 'mode', 'image', 'scenario', 'rttMs', 'bandwidthBps'] as const;

/** One CSV field: quoted when it holds a comma, quote, CR or LF. */
export function csvField(v: unknown): string {
  const s = v === undefined || v === null ? '' : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function line(fields: unknown[]): string {
  return fields.map(csvField).join(',');
}

export function resultsCsv(results: readonly TrialResult[]): string {
  const cols = [...KEY_COLUMNS, 'run', 'status', ...METRIC_NAMES, 'reason', 'note'] as const;
  const rows = results.map((r) => line(cols.map((c) => r[c])));
  return [line([...cols]), ...rows].join('\n') + '\n';
}

export function aggregatesCsv(aggs: readonly Aggregate[]): string {
  const metricCols = METRIC_NAMES.flatMap((m) => [`${m}_median`, `${m}_min`, `${m}_max`]);
  // Overhead: the summary of the per-run ratios to overlayfs (Aggregate.paired).
  const pairedCols = OVERHEAD_TIME_METRICS.flatMap((m) => [`${m}_paired_median`, `${m}_paired_min`, `${m}_paired_max`]);
  const header = line([...KEY_COLUMNS, 'runs', 'ok', ...metricCols, ...pairedCols, 'reasons']);
  const rows = aggs.map((a) =>
    line([
      ...KEY_COLUMNS.map((c) => a[c]),
      a.runs,
      a.ok,
      ...METRIC_NAMES.flatMap((m): (number | string)[] => {
        const s = a.metrics[m];
        return s ? [s.median, s.min, s.max] : ['', '', ''];
      }),
      ...OVERHEAD_TIME_METRICS.flatMap((m): (number | string)[] => {
        const s = a.paired?.[m];
        return s ? [s.median, s.min, s.max] : ['', '', ''];
      }),
      a.reasons.join('; '),
    ]),
  );
  return [header, ...rows].join('\n') + '\n';
}
