/**
 * The seams of the bench harness: what the parent (run.ts) prepares once per bench run
 * (`SharedEnv`, `BenchImage`), what one trial process gets (`TrialSpec`, `TrialEnv`), and what every
 * mode implements (`ModeDefinition` in the parent, `ModeDriver` in a trial).
 *
 * Lifecycle of a trial (trials.ts): env is built (WAN links, request counters) → driver.setup(env)
 * (containerd, snapshotter daemons) → [update: pull v1 + run v1 to ready + stop, counters reset] →
 * t0 → driver.pull(target) → t1 → driver.run(target) resolves at the ready line → counters read →
 * [driver.settle(target) → total counters read] → container stopped → env.cleanups run (always, also on error/SIGINT).
 *
 * Not here: timing and result records (trials.ts, report/types.ts).
 */
import type { Logger } from '../../src/log.js';
import type { TrialKey, TrialMetrics } from '../report/types.js';
import type { ReadyContainer } from './container.js';
import type { Cleanups, RunOutput } from './proc.js';

export type ImageVersion = 'v1' | 'v2';

/** One bench image (both versions) as pushed to the bench registry by the parent. */
export interface BenchImage {
  /** Short name, e.g. "python-web". */
  name: string;
  /** Repository in the registry, e.g. "bench/python-web". */
  repository: string;
  versions: Record<ImageVersion, {
    tag: string;
    /** Manifest digest. */
    digest: string;
    /** Substring of the stdout line the container prints once it serves. */
    ready: string;
    /** Compressed layers (what a full pull fetches), bottom first. */
    layers: { digest: string; size: number }[];
  }>;
  /** Tags of the eStargz-converted versions, when the estargz mode prepared them. */
  estargzTags?: Record<ImageVersion, string>;
  /** True when the image has python3 (the overhead workload's import test). */
  hasPython: boolean;
}

/** What the parent set up for the whole bench run (cloud side, not behind the WAN emulator). */
export interface SharedEnv {
  /** Registry "127.0.0.1:PORT" (direct, no emulation). */
  registry: string;
  /** Starlight proxy "127.0.0.1:PORT" (direct), when one runs. */
  proxy?: string;
  /** Parent scratch dir (removed at the end of the bench run). */
  workDir: string;
  log: Logger;
}

/** Everything a trial process needs, passed as one JSON argument. */
export interface TrialSpec extends TrialKey {
  run: number;
  benchImage: BenchImage;
  /** The other images of this bench run (mode starlight+prior trains the proxy on them). */
  otherImages?: BenchImage[];
  shared: Omit<SharedEnv, 'log'>;
  /** Longest one trial may take, ms. */
  timeoutMs: number;
  /** Drop the kernel page cache before the trial (as root). */
  dropCaches: boolean;
}

/** Counters over all emulated links of a trial. */
export interface LinkCounters {
  /** Both directions. */
  bytes: number;
  /** Received by the worker (cloud → worker) only. */
  bytesDown: number;
  requests: number;
  connections: number;
}

/** The per-trial environment trials.ts builds and hands to the driver. */
export interface TrialEnv {
  spec: TrialSpec;
  image: BenchImage;
  /** A fresh directory of this trial (short path; removed by the cleanups). */
  dir: string;
  signal: AbortSignal;
  cleanups: Cleanups;
  log: Logger;
  /**
   * "127.0.0.1:PORT" that reaches `target` ("host:port", cloud side) over the emulated WAN link
   * of this trial (RTT, bandwidth), counted. One link per target; repeated calls reuse it.
   */
  link(target: string): Promise<string>;
  counters(): LinkCounters;
  resetCounters(): void;
}

/** A mode as seen by one trial process. Created fresh per trial. */
export interface ModeDriver {
  readonly name: string;
  /** Per trial: start what the mode needs (containerd, snapshotter daemons), registering cleanups in env.cleanups. */
  setup(env: TrialEnv): Promise<void>;
  /** Pull `version` of the image; resolves when the pull command ends. */
  pull(version: ImageVersion, env: TrialEnv): Promise<void>;
  /** Start `version` and resolve at its ready line (download-only: at once). */
  run(version: ImageVersion, env: TrialEnv): Promise<ReadyContainer>;
  /**
   * Overhead workload: run `command` in `version` to completion after everything was downloaded
   * (lazy modes fetch the rest first). Absent = the mode has no runtime (download-only).
   */
  exec?(version: ImageVersion, command: string[], env: TrialEnv): Promise<RunOutput>;
  /**
   * Lazy modes: resolves once the background transfer of `version` has completed (Starlight: its
   * stream is complete). trials.ts calls it after the update warm-up (so v2's `have` includes all of
   * v1) and after the ready line (bytes in total). Absent = nothing transfers after ready (or no signal).
   * May resolve with the `performance.now()` at which the transfer was seen complete, when it waits
   * for more than that (Starlight: graduation); trials.ts takes completeMs from it.
   */
  settle?(version: ImageVersion, env: TrialEnv): Promise<number | void>;
  /**
   * Overhead workload (issue 12): bytes this mode keeps on disk for the images pulled so far, from
   * `du -scx --block-size=1` (hardlinks counted once). Absent = not measured for this mode.
   */
  diskBytes?(): Promise<number>;
  /** Optional driver-specific note for the result (e.g. "delta" vs "layers" bytes source). */
  note?(): string | undefined;
  /** Optional driver-specific metrics merged into the result (starlight+traces: `startupFiles`). */
  extraMetrics?(): Partial<TrialMetrics>;
}

/** A mode as seen by the parent. */
export interface ModeDefinition {
  readonly name: string;
  /** Undefined when the mode can run here; else why not (missing tool, component not built yet). */
  unavailable(shared: SharedEnv): Promise<string | undefined>;
  /** Once per bench run, before trials: e.g. convert images to eStargz. May set fields on `images`. */
  prepare?(shared: SharedEnv, images: BenchImage[], signal: AbortSignal): Promise<void>;
  create(): ModeDriver;
}
