/** Human units for bench tables and figures: seconds, MB, bandwidth. Pure. */
import type { Summary } from './types.js';

/** "1.23" seconds from ms. */
export function seconds(ms: number): string {
  return (ms / 1000).toFixed(ms < 10_000 ? 2 : 1);
}

/** "12.3" MB (10^6 bytes). */
export function megabytes(bytes: number): string {
  return (bytes / 1e6).toFixed(bytes < 10e6 ? 2 : 1);
}

/** "100mbit", "1gbit", "unlimited". */
export function bandwidthLabel(bps: number): string {
  if (bps <= 0) return 'unlimited';
  if (bps >= 1e9 && bps % 1e9 === 0) return `${bps / 1e9}gbit`;
  if (bps >= 1e6) return `${+(bps / 1e6).toFixed(3)}mbit`;
  return `${+(bps / 1e3).toFixed(3)}kbit`;
}

/** "median [min–max]" with `fmt`, or just the median when min = max; "–" when absent. */
export function summaryCell(s: Summary | undefined, fmt: (n: number) => string): string {
  if (!s) return '–';
  return s.min === s.max ? fmt(s.median) : `${fmt(s.median)} [${fmt(s.min)}–${fmt(s.max)}]`;
}
