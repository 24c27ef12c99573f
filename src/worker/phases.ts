/**
 * Phase timings of the path to a running container (issue 19): named durations of one operation
 * (a pull, a view mount), measured by the component doing the work and reported once per operation
 * (a structured log record, the pull's API answer, `GET /v1/status`). Not a profiler: a handful of
 * monotonic clock reads per operation.
 */
import { performance } from 'node:perf_hooks';

/** Phase name → duration in ms (rounded to 0.1 ms), in the order the phases ran. */
export type Phases = Record<string, number>;

/** Laps of one operation: `lap(name)` closes the phase that began at the previous lap (or creation). */
export class PhaseTimer {
  private last = performance.now();
  private readonly began = this.last;
  readonly phases: Phases = {};

  /** Ends phase `name` now; a repeated name adds up. Returns its duration, ms. */
  lap(name: string): number {
    const now = performance.now();
    const ms = now - this.last;
    this.last = now;
    this.phases[name] = round((this.phases[name] ?? 0) + ms);
    return ms;
  }

  /** Copies `phases` (measured elsewhere, e.g. by the puller) in, under `prefix`. */
  add(phases: Phases, prefix = ''): void {
    for (const [k, v] of Object.entries(phases)) this.phases[prefix + k] = v;
  }

  /** Since creation, ms. */
  total(): number {
    return round(performance.now() - this.began);
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** One timed operation, as kept by the daemon for `GET /v1/status` and printed by the bench. */
export interface PhaseRecord {
  /**
   * 'pull' (header to containerd records), 'view' (merge + inode table + FUSE mount + first read) or
   * 'graduate' (materialising a complete image's tree, issue 12).
   */
  op: 'pull' | 'view' | 'graduate';
  /** The image ref (pull) or remote id (view). */
  subject: string;
  /** Wall time of the operation's start, ms since the epoch. */
  at: number;
  totalMs: number;
  phases: Phases;
}

/** The last `capacity` records, oldest first (a status call is cheap and bounded). */
export class PhaseLog {
  private readonly records: PhaseRecord[] = [];
  constructor(private readonly capacity = 32) {}

  push(r: PhaseRecord): void {
    this.records.push(r);
    if (this.records.length > this.capacity) this.records.shift();
  }

  all(): PhaseRecord[] {
    return [...this.records];
  }
}
