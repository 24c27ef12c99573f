/**
 * A hand-written SVG bar chart in the style of the Starlight paper's startup figure: time to ready
 * per image, one bar per mode (median, min–max whisker, value in seconds on top), a panel per scenario
 * (fresh, update; each with its own time axis) and a row of panels per (RTT, bandwidth). Pure; no dependencies.
 *
 * Each bar is `<rect class="bar" data-image=… data-mode=… data-scenario=…>` so tests (and readers of
 * the file) can find them. Missing measurements get a grey "n/a" marker instead of a bar.
 */
import { bandwidthLabel } from './format.js';
import type { Aggregate, Scenario } from './types.js';

/** Layout, px. */
const PANEL_W = 460;
const PANEL_H = 260;
const MARGIN = { left: 56, right: 16, top: 40, bottom: 46 };
const LEGEND_H = 28;
/** Bar colours by mode position (colour-blind safe palette, Okabe–Ito). */
const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000'];
const SCENARIOS: Scenario[] = ['fresh', 'update'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round axis maxima (× 10^k) and their tick steps: at most ~25 % of the axis above the value stays empty. */
const NICE: readonly (readonly [number, number])[] = [[1, 0.2], [1.2, 0.2], [1.5, 0.3], [2, 0.4], [2.5, 0.5], [3, 0.5], [4, 1], [5, 1], [6, 1], [8, 2], [10, 2]];

/** A "nice" axis maximum ≥ v and its tick step. */
export function niceScale(v: number): { max: number; step: number } {
  if (!(v > 0)) return { max: 1, step: 0.2 };
  const pow = 10 ** Math.floor(Math.log10(v));
  const round = (x: number): number => +x.toPrecision(12);
  for (const [m, step] of NICE) {
    if (round(m * pow) >= v) return { max: round(m * pow), step: round(step * pow) };
  }
  return { max: round(10 * pow), step: round(2 * pow) };
}

export interface SvgOptions {
  title?: string;
  /** Mode order (bar order and colours). Default: first-seen order. */
  modes?: string[];
}

/** The figure for the startup aggregates. */
export function startupSvg(all: readonly Aggregate[], opts: SvgOptions = {}): string {
  const aggs = all.filter((a) => a.workload === 'startup');
  const uniq = <T>(xs: T[]): T[] => [...new Set(xs)];
  const modes = opts.modes ?? uniq(aggs.map((a) => a.mode));
  const images = uniq(aggs.map((a) => a.image));
  const links = uniq(aggs.map((a) => `${a.rttMs}|${a.bandwidthBps}`)).map((s) => s.split('|').map(Number) as [number, number]);
  const scenarios = SCENARIOS.filter((s) => aggs.some((a) => a.scenario === s));
  const cellW = MARGIN.left + PANEL_W + MARGIN.right;
  const cellH = MARGIN.top + PANEL_H + MARGIN.bottom;
  const width = Math.max(1, scenarios.length) * cellW;
  const height = LEGEND_H + Math.max(1, links.length) * cellH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
  ];
  if (opts.title) out.push(`<title>${esc(opts.title)}</title>`);
  modes.forEach((m, i) => {
    const x = 10 + i * 130;
    out.push(`<rect x="${x}" y="8" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`, `<text x="${x + 16}" y="18">${esc(m)}</text>`);
  });
  links.forEach(([rtt, bw], li) => {
    const rowAggs = aggs.filter((a) => a.rttMs === rtt && a.bandwidthBps === bw);
    scenarios.forEach((scenario, si) => {
      // Own scale per panel: update bars are a fraction of fresh ones and would vanish on a shared axis.
      const { max, step } = niceScale(Math.max(0, ...rowAggs.filter((a) => a.scenario === scenario).map((a) => (a.metrics.totalMs?.max ?? 0) / 1000)));
      const ox = si * cellW + MARGIN.left;
      const oy = LEGEND_H + li * cellH + MARGIN.top;
      const y = (sec: number): number => oy + PANEL_H - (sec / max) * PANEL_H;
      out.push(`<g class="panel" data-scenario="${scenario}" data-rtt="${rtt}" data-bandwidth="${bw}">`);
      out.push(`<text x="${ox + PANEL_W / 2}" y="${oy - 18}" text-anchor="middle" font-weight="bold">${esc(`${scenario} — RTT ${rtt} ms, ${bandwidthLabel(bw)}`)}</text>`);
      for (let t = 0; t <= max + 1e-9; t += step) {
        const ty = y(t).toFixed(1);
        out.push(`<line x1="${ox}" x2="${ox + PANEL_W}" y1="${ty}" y2="${ty}" stroke="#ddd"/>`);
        out.push(`<text x="${ox - 4}" y="${ty}" text-anchor="end" dominant-baseline="middle">${+t.toFixed(2)}</text>`);
      }
      out.push(`<text transform="translate(${ox - 40},${oy + PANEL_H / 2}) rotate(-90)" text-anchor="middle">time to ready (s)</text>`);
      const groupW = PANEL_W / Math.max(1, images.length);
      const barW = (groupW * 0.8) / Math.max(1, modes.length);
      images.forEach((image, ii) => {
        const gx = ox + ii * groupW + groupW * 0.1;
        out.push(`<text x="${gx + groupW * 0.4}" y="${oy + PANEL_H + 16}" text-anchor="middle">${esc(image)}</text>`);
        modes.forEach((mode, mi) => {
          const a = rowAggs.find((r) => r.image === image && r.mode === mode && r.scenario === scenario);
          const s = a?.metrics.totalMs;
          const bx = gx + mi * barW;
          const data = `data-image="${esc(image)}" data-mode="${esc(mode)}" data-scenario="${scenario}"`;
          if (!s) {
            if (a) out.push(`<text class="missing" ${data} x="${bx + barW / 2}" y="${oy + PANEL_H - 4}" text-anchor="middle" fill="#999" font-size="9">n/a</text>`);
            return;
          }
          const top = y(s.median / 1000);
          out.push(
            `<rect class="bar" ${data} x="${bx.toFixed(1)}" y="${top.toFixed(1)}" width="${(barW * 0.9).toFixed(1)}" height="${(oy + PANEL_H - top).toFixed(1)}" fill="${PALETTE[mi % PALETTE.length]}"><title>${esc(`${mode} ${image} ${scenario}: ${(s.median / 1000).toFixed(2)} s`)}</title></rect>`,
          );
          const label = s.median / 1000;
          out.push(`<text class="value" x="${(bx + (barW * 0.9) / 2).toFixed(1)}" y="${(Math.min(top, y(s.max / 1000)) - 3).toFixed(1)}" text-anchor="middle" font-size="9">${label < 10 ? label.toFixed(2) : label.toFixed(1)}</text>`);
          if (s.max > s.min) {
            const cx = (bx + (barW * 0.9) / 2).toFixed(1);
            out.push(`<line class="whisker" x1="${cx}" x2="${cx}" y1="${y(s.min / 1000).toFixed(1)}" y2="${y(s.max / 1000).toFixed(1)}" stroke="#333"/>`);
          }
        });
      });
      out.push(`<line x1="${ox}" x2="${ox + PANEL_W}" y1="${oy + PANEL_H}" y2="${oy + PANEL_H}" stroke="#333"/>`, '</g>');
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
