/**
 * Markdown tables of aggregated bench results: the startup table (time to ready, pull, run-to-ready,
 * bytes, requests, connections per mode) and the runtime-overhead table (ratios to overlayfs). Pure.
 */
import { allSkipped, ratioToBaseline } from './aggregate.js';
import { bandwidthLabel, megabytes, seconds, summaryCell } from './format.js';
import type { Aggregate, OverheadMetric } from './types.js';

function row(cells: string[]): string {
  return `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
}

function status(a: Aggregate): string {
  if (a.ok === a.runs) return `${a.ok}`;
  return `${a.ok}/${a.runs} (${a.reasons.join('; ')})`;
}

export const STARTUP_HEADER = ['image', 'scenario', 'RTT ms', 'bandwidth', 'mode', 'ready s', 'pull s', 'run→ready s', 'MB', 'MB total', 'requests', 'conns', 'ok runs'];

/**
 * Startup aggregates as a markdown table, one row per aggregate, in the given order. Aggregates whose
 * runs were all skipped are left out (the caller lists unavailable modes once). "MB total": bytes
 * until a lazy mode's background transfer completed ("–" for modes without that signal).
 */
export function startupTable(aggs: readonly Aggregate[]): string {
  const lines = [row(STARTUP_HEADER), row(STARTUP_HEADER.map(() => '---'))];
  for (const a of aggs.filter((x) => x.workload === 'startup' && !allSkipped(x))) {
    const m = a.metrics;
    lines.push(
      row([
        a.image,
        a.scenario,
        String(a.rttMs),
        bandwidthLabel(a.bandwidthBps),
        a.notes.length > 0 ? `${a.mode} (${a.notes.join(', ')})` : a.mode,
        summaryCell(m.totalMs, seconds),
        summaryCell(m.pullMs, seconds),
        summaryCell(m.runToReadyMs, seconds),
        summaryCell(m.bytes, megabytes),
        summaryCell(m.bytesTotal, megabytes),
        summaryCell(m.requests, String),
        summaryCell(m.connections, String),
        status(a),
      ]),
    );
  }
  return lines.join('\n') + '\n';
}

/** Overhead workloads as table columns: label and the cold and warm metric of each. */
const OVERHEAD_COLUMNS: { label: string; cold: OverheadMetric; warm: OverheadMetric }[] = [
  { label: 'read-all', cold: 'readAllMs', warm: 'readAllWarmMs' },
  { label: 'find+stat', cold: 'findStatMs', warm: 'findStatWarmMs' },
  { label: 'small files', cold: 'smallFilesMs', warm: 'smallFilesWarmMs' },
  { label: 'python import', cold: 'pythonImportMs', warm: 'pythonImportWarmMs' },
];

export const OVERHEAD_HEADER = ['image', 'mode', ...OVERHEAD_COLUMNS.flatMap((c) => [`${c.label} cold s (÷ overlayfs; paired)`, `${c.label} warm s (÷ overlayfs; paired)`]), 'disk MB v1 (÷ overlayfs)', 'disk MB v1+v2 (÷ overlayfs)', 'ok runs'];

/**
 * Runtime-overhead aggregates as a markdown table: each workload's median (cold: caches dropped and
 * a fresh container; warm: the next fresh container) with its ratio to overlayfs's median and, after
 * "paired", the median of the per-run ratios to the overlayfs run of the same index (Aggregate.paired:
 * robust to load drifting over the bench), and the bytes on disk with v1, then v1 + v2 pulled.
 */
export function overheadTable(aggs: readonly Aggregate[]): string {
  const over = aggs.filter((x) => x.workload === 'overhead' && !allSkipped(x));
  const lines = [row(OVERHEAD_HEADER), row(OVERHEAD_HEADER.map(() => '---'))];
  const cell = (a: Aggregate, metric: OverheadMetric, unit: (v: number) => string = seconds): string => {
    const s = a.metrics[metric];
    if (s === undefined) return '–';
    const r = ratioToBaseline(over, a, metric);
    const p = a.paired?.[metric]?.median;
    return `${unit(s.median)} (${r === undefined ? '–' : `${r.toFixed(2)}×`}${p === undefined ? '' : `; paired ${p.toFixed(2)}×`})`;
  };
  for (const a of over) {
    const disk = [cell(a, 'diskV1Bytes', megabytes), cell(a, 'diskV1V2Bytes', megabytes)];
    lines.push(row([a.image, a.mode, ...OVERHEAD_COLUMNS.flatMap((c) => [cell(a, c.cold), cell(a, c.warm)]), ...disk, status(a)]));
  }
  return lines.join('\n') + '\n';
}
