/**
 * The bench's result records: what one trial process prints (one JSON line, `TrialResult`) and what
 * the aggregation makes of N runs (`Aggregate`). Shared by run.ts, trials.ts and the report writers.
 *
 * Not here: measuring (drivers/), formatting (csv.ts, markdown.ts, svg.ts).
 */

/** `fresh`: nothing of the image on the worker; `update`: v1 pulled and run, then v2 measured. */
export type Scenario = 'fresh' | 'update';
/** `startup`: pull + run to the ready line; `overhead`: read-heavy job after a full download. */
export type Workload = 'startup' | 'overhead';

/** The coordinates of one measurement (one bar, one table row). */
export interface TrialKey {
  mode: string;
  image: string;
  rttMs: number;
  /** Link capacity per direction, bits/s; 0 = unlimited. */
  bandwidthBps: number;
  scenario: Scenario;
  workload: Workload;
}

/** Numeric metrics of a trial. Absent = not measured by this mode/workload. */
export interface TrialMetrics {
  /** From the start of pull to the end of the pull command, ms. */
  pullMs?: number;
  /** From the start of `ctr run` to the image's ready line on the container's stdout, ms. */
  runToReadyMs?: number;
  /** From the start of pull to the ready line, ms. */
  totalMs?: number;
  /** Bytes through the emulated link(s) (both directions) from the start of pull to ready. */
  bytes?: number;
  /** Lazy modes with a completion signal: bytes through the link(s) until the background transfer completed. */
  bytesTotal?: number;
  /** Lazy modes with a completion signal: from the start of pull to the transfer's completion, ms. */
  completeMs?: number;
  /**
   * Starlight: from the daemon's delta request to the stream's end, ms — the transfer alone, without
   * the CLI's start-up and the daemon's work before the request, as download-only's one GET (issue 18).
   */
  streamMs?: number;
  /** HTTP requests that crossed the emulated link(s) until ready. */
  requests?: number;
  /** TCP connections opened over the emulated link(s) until ready. */
  connections?: number;
  /** overhead workload: read every regular file of the rootfs after dropping caches, fresh container, ms (measured inside the container). */
  readAllMs?: number;
  /** overhead workload: an import-heavy python3 start, ms (images with python3 only). */
  pythonImportMs?: number;
  /** overhead workload: `find` every entry + `stat` every path of the rootfs, ms. */
  findStatMs?: number;
  /** overhead workload: read every regular file < 16 KiB, ms. */
  smallFilesMs?: number;
  /** The same four workloads warm: a fresh container right after the cold one (caches kept), ms. */
  readAllWarmMs?: number;
  findStatWarmMs?: number;
  smallFilesWarmMs?: number;
  pythonImportWarmMs?: number;
  /** overhead workload: bytes on disk with v1 pulled (and fully present), then with v1 + v2 (drivers' diskBytes). */
  diskV1Bytes?: number;
  diskV1V2Bytes?: number;
  /** Bytes the worker received over the emulated link(s) (down direction only) from the start of pull to ready. */
  bytesDown?: number;
  /** starlight+traces: the files the traced (training) run read at startup (bench/traces.ts). */
  startupFiles?: StartupFilesSize;
  /** Starlight modes: where the time of the last pull + start went, ms (bench/report/phases.ts). */
  phases?: Record<string, number>;
}

/** Size of the files an app read at startup, from its uploaded trace (bench/report/startup-files.ts). */
export interface StartupFilesSize {
  /** Distinct contents (by digest) counted. */
  files: number;
  /** Sum of their raw sizes, bytes. */
  rawBytes: number;
  /** Sum of their sizes as the proxy encodes them on the wire (brotli q5 or identity), bytes. */
  encodedBytes: number;
  /** 'ready': trace entries with ms ≤ the training run's ready time; 'whole': the whole learned order. */
  cut: 'ready' | 'whole';
  /** The training run's `ctr run` → ready line, ms (the cut), when known. */
  readyMs?: number;
}

export const METRIC_NAMES = ['pullMs', 'runToReadyMs', 'totalMs', 'bytes', 'bytesTotal', 'completeMs', 'streamMs', 'requests', 'connections', 'readAllMs', 'pythonImportMs', 'findStatMs', 'smallFilesMs', 'readAllWarmMs', 'findStatWarmMs', 'smallFilesWarmMs', 'pythonImportWarmMs', 'diskV1Bytes', 'diskV1V2Bytes'] as const;
export type MetricName = (typeof METRIC_NAMES)[number];
/** The overhead workload's metrics (ratios to overlayfs are taken of these). */
export type OverheadMetric = 'readAllMs' | 'readAllWarmMs' | 'findStatMs' | 'findStatWarmMs' | 'smallFilesMs' | 'smallFilesWarmMs' | 'pythonImportMs' | 'pythonImportWarmMs' | 'diskV1Bytes' | 'diskV1V2Bytes';
/** The overhead workload's timed metrics (ms; the ones paired per run against overlayfs). */
export const OVERHEAD_TIME_METRICS = ['readAllMs', 'readAllWarmMs', 'findStatMs', 'findStatWarmMs', 'smallFilesMs', 'smallFilesWarmMs', 'pythonImportMs', 'pythonImportWarmMs'] as const satisfies readonly OverheadMetric[];

/** The one JSON line a trial process prints on stdout. */
export interface TrialResult extends TrialKey, TrialMetrics {
  /** 1-based run index. */
  run: number;
  status: 'ok' | 'failed' | 'skipped';
  /** Why it failed or was skipped (status ≠ ok). */
  reason?: string;
  /** Free-form detail, e.g. download-only's byte source ("delta" or "layers"). */
  note?: string;
}

export interface Summary {
  median: number;
  min: number;
  max: number;
}

/** N runs of one TrialKey folded together; metrics over `ok` runs only. */
export interface Aggregate extends TrialKey {
  runs: number;
  ok: number;
  /** Distinct failure/skip reasons, if any. */
  reasons: string[];
  notes: string[];
  metrics: Partial<Record<MetricName, Summary>>;
  /**
   * Overhead workload, modes other than overlayfs: per timed metric, the median/min/max over runs k of
   * (this mode's run k ÷ overlayfs's run k), pairing the runs the plan ran adjacently (same image,
   * RTT, bandwidth, scenario, run index; both ok). Absent without such pairs.
   */
  paired?: Partial<Record<OverheadMetric, Summary>>;
}
