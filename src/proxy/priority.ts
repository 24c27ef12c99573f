/**
 * The merge of startup traces into one priority order (PURE: no I/O, no clock; identical input →
 * identical output, whatever the order of the traces). docs/protocol.md "Merging traces".
 *
 * Score: a trace with n entries gives the entry at 0-based position i the normalized position
 * floor(i · POSITION_SCALE / n) (in [0, POSITION_SCALE)); a file absent from a trace gets
 * POSITION_SCALE (after everything the trace saw). A key's score is the SUM over all merged traces
 * (= the mean times the trace count, which is the same for every key), in integers, so neither the
 * order of the traces nor float rounding can change a result. Keys are paths and, separately,
 * content digests (a digest's position in a trace = its first entry's). A file of the target tree
 * scores min(score of its path, score of its digest), so a file keeps its rank when it moves (same
 * digest, new path: an update) or changes (same path, new digest: an update of that file). Only files
 * at least one trace saw are ranked; ties are broken by path bytes.
 *
 * Not here: choosing WHICH traces to merge (image, group, related images: priority-service.ts), the
 * heuristic for unranked files (planner.ts).
 */
import type { TocEntry } from '../layers/toc.js';
import type { OrderSignal } from '../protocol/traces.js';

/** Fixed-point scale of a normalized position (2^20 > MAX_TRACE_ENTRIES, so positions stay distinct). */
export const POSITION_SCALE = 1 << 20;

/** What the merge needs of one trace: its entries in first-access order. */
export interface MergeTrace {
  entries: readonly { path: string; digest?: string }[];
  /**
   * Who uploaded it. Traces of one source are averaged first (integer mean of their normalized
   * positions), so a source weighs as ONE trace however many it uploads: one uploader cannot outweigh
   * the rest. Absent: the trace is a source of its own.
   */
  source?: string;
}

export interface MergedScores {
  /** Traces merged. */
  traces: number;
  /** path → sum of normalized positions over all traces (absent = POSITION_SCALE). */
  byPath: Map<string, number>;
  /** digest → same, by content. */
  byDigest: Map<string, number>;
}

/**
 * Sums normalized positions per path and per digest over `traces` (see the file header), each source's
 * traces averaged into one first (MergeTrace.source). `traces` of the result counts sources.
 */
export function mergeTraces(traces: readonly MergeTrace[]): MergedScores {
  const bySource = new Map<string, MergeTrace[]>();
  traces.forEach((t, i) => {
    const k = t.source === undefined ? `\0${i}` : `s${t.source}`;
    const list = bySource.get(k);
    if (list === undefined) bySource.set(k, [t]);
    else list.push(t);
  });
  if (bySource.size === traces.length) return mergeSums(traces);
  // score(k) = Σ over sources of the source's mean (SCALE where the source never saw k).
  const byPath = new Map<string, number>();
  const byDigest = new Map<string, number>();
  const fold = (into: Map<string, number>, from: Map<string, number>, n: number): void => {
    for (const [k, sum] of from) into.set(k, (into.get(k) ?? 0) + Math.floor(sum / n) - POSITION_SCALE);
  };
  for (const list of bySource.values()) {
    const m = mergeSums(list);
    fold(byPath, m.byPath, list.length);
    fold(byDigest, m.byDigest, list.length);
  }
  const base = bySource.size * POSITION_SCALE;
  for (const m of [byPath, byDigest]) for (const [k, v] of m) m.set(k, v + base);
  return { traces: traces.length, byPath, byDigest };
}

/** The plain sums over `traces`, every trace weighing one. */
function mergeSums(traces: readonly MergeTrace[]): MergedScores {
  const present = new Map<string, { sum: number; hits: number }>();
  const presentD = new Map<string, { sum: number; hits: number }>();
  const add = (m: Map<string, { sum: number; hits: number }>, k: string, pos: number): void => {
    const v = m.get(k);
    if (v === undefined) m.set(k, { sum: pos, hits: 1 });
    else {
      v.sum += pos;
      v.hits++;
    }
  };
  for (const t of traces) {
    const n = t.entries.length;
    const seenD = new Set<string>();
    t.entries.forEach((e, i) => {
      const pos = Math.floor((i * POSITION_SCALE) / n);
      add(present, e.path, pos);
      if (e.digest !== undefined && !seenD.has(e.digest)) {
        seenD.add(e.digest);
        add(presentD, e.digest, pos);
      }
    });
  }
  const total = (m: Map<string, { sum: number; hits: number }>): Map<string, number> =>
    new Map([...m].map(([k, v]) => [k, v.sum + (traces.length - v.hits) * POSITION_SCALE]));
  return { traces: traces.length, byPath: total(present), byDigest: total(presentD) };
}

export interface RankedFile {
  path: string;
  digest: string;
  size: number;
  /** 0 = first. */
  rank: number;
  /** What put the file there (rankFiles: 'trace'; priority-service.ts adds the others). */
  signal?: OrderSignal;
  via?: string;
}

/**
 * The learned order of a tree's files: every regular file or hardlink with content that the merged
 * traces saw (by path or by digest), sorted by score, ties by path bytes. Zero-size files are left
 * out (they need no content item).
 */
export function rankFiles(entries: readonly TocEntry[], scores: MergedScores): RankedFile[] {
  if (scores.traces === 0) return [];
  const scored: { e: TocEntry; s: number; key: Buffer }[] = [];
  for (const e of entries) {
    if ((e.type !== 'reg' && e.type !== 'hardlink') || e.digest === undefined || e.size === 0) continue;
    const a = scores.byPath.get(e.path);
    const b = scores.byDigest.get(e.digest);
    if (a === undefined && b === undefined) continue;
    scored.push({ e, s: Math.min(a ?? Infinity, b ?? Infinity), key: Buffer.from(e.path, 'utf8') });
  }
  scored.sort((x, y) => x.s - y.s || Buffer.compare(x.key, y.key));
  return scored.map((x, rank) => ({ path: x.e.path, digest: x.e.digest!, size: x.e.size, rank }));
}

/** The planner's rank map (path → rank) of a learned order. */
export function rankMap(order: readonly RankedFile[]): Map<string, number> {
  return new Map(order.map((f) => [f.path, f.rank]));
}
