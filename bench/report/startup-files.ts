/**
 * Issue 6's startup-trace acceptance, pure parts: which files an app read at startup (from its
 * recorded trace, cut at the ready time, sized by the proxy's learned order) and the table
 * bench/traces.ts prints (untraced vs traced ready time and bytes, ratio to the 1.2 goal).
 *
 * Not here: recording, uploading or fetching traces (drivers/startup-trace.ts), running trials.
 */
import { megabytes, seconds } from './format.js';

/** Issue 6's goal: bytes received before ready ≤ this × the size of the files read at startup. */
export const STARTUP_BYTES_GOAL = 1.2;

/** A recorded trace entry (the daemon's spool / `POST /v1/traces` body). */
export interface RecordedEntry {
  path: string;
  digest?: string;
  /** ms since the container start. */
  ms: number;
}

/** A row of the proxy's learned order (`GET /v1/traces`). */
export interface LearnedFile {
  path: string;
  /** Raw bytes. */
  size: number;
  digest: string;
}

/** The contents an app read at startup: distinct digests with their raw sizes. */
export interface StartupSelection {
  /** digest → raw size, each content once (the stream sends each content once). */
  contents: Map<string, number>;
  cut: 'ready' | 'whole';
}

/**
 * Entries of `traces` with ms ≤ `readyMs` (all when `readyMs` is undefined), sized by `learned`
 * (path → size; entries the learned order lacks, e.g. empty or non-regular files, are left out);
 * with no recorded traces, the whole learned order (`cut: 'whole'`).
 */
export function selectStartupFiles(traces: { entries: RecordedEntry[] }[], readyMs: number | undefined, learned: LearnedFile[]): StartupSelection {
  const byPath = new Map(learned.map((f) => [f.path, f]));
  const contents = new Map<string, number>();
  if (traces.length === 0) {
    for (const f of learned) contents.set(f.digest, f.size);
    return { contents, cut: 'whole' };
  }
  for (const t of traces) {
    for (const e of t.entries) {
      if (readyMs !== undefined && e.ms > readyMs) continue;
      const f = byPath.get(e.path);
      if (f) contents.set(f.digest, f.size);
    }
  }
  return { contents, cut: readyMs === undefined ? 'whole' : 'ready' };
}

/** Sum of a selection's raw sizes, bytes. */
export function rawBytes(sel: StartupSelection): number {
  let n = 0;
  for (const s of sel.contents.values()) n += s;
  return n;
}

/** One image's numbers (medians over the runs; undefined = not measured). */
export interface StartupTraceRow {
  image: string;
  untracedReadyMs?: number;
  untracedBytesDown?: number;
  tracedReadyMs?: number;
  tracedBytesDown?: number;
  startupRawBytes?: number;
  startupEncodedBytes?: number;
  startupFiles?: number;
  cut?: 'ready' | 'whole';
  /** Why a half is missing, if it is. */
  reason?: string;
}

/** a ÷ b as "1.23", or "–". */
export function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b <= 0 ? '–' : (a / b).toFixed(2);
}

/** Whether the traced bytes-at-ready meet the goal against the encoded startup files; undefined when unknown. */
export function meetsGoal(r: StartupTraceRow): boolean | undefined {
  if (r.tracedBytesDown === undefined || !r.startupEncodedBytes) return undefined;
  return r.tracedBytesDown / r.startupEncodedBytes <= STARTUP_BYTES_GOAL;
}

const opt = (n: number | undefined, f: (x: number) => string): string => (n === undefined ? '–' : f(n));

/** The markdown table of bench/traces.ts (MB = 10^6 bytes; bytes = received by the worker). */
export function startupTracesTable(rows: StartupTraceRow[]): string {
  const head = [
    '| image | ready s (untraced) | MB at ready (untraced) | ready s (traced) | MB at ready (traced) | startup files: n, MB raw / MB encoded | traced ÷ startup (encoded) | traced ÷ startup (raw) | goal ≤ 1.2 |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const lines = rows.map((r) => {
    const goal = meetsGoal(r);
    const files = r.startupRawBytes === undefined ? '–' : `${r.startupFiles ?? '?'}, ${megabytes(r.startupRawBytes)} / ${opt(r.startupEncodedBytes, megabytes)}${r.cut === 'whole' ? ' (whole trace)' : ''}`;
    return `| ${r.image} | ${opt(r.untracedReadyMs, seconds)} | ${opt(r.untracedBytesDown, megabytes)} | ${opt(r.tracedReadyMs, seconds)} | ${opt(r.tracedBytesDown, megabytes)} | ${files} | ${ratio(r.tracedBytesDown, r.startupEncodedBytes)} | ${ratio(r.tracedBytesDown, r.startupRawBytes)} | ${goal === undefined ? `– ${r.reason ?? ''}`.trim() : goal ? 'met' : 'not met'} |`;
  });
  return [...head, ...lines].join('\n') + '\n';
}
