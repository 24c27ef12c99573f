/**
 * The time model of one direction of an emulated WAN link: when may a chunk of n bytes that reaches
 * the link at time t leave it (bandwidth), given everything sent before? Pure arithmetic on
 * millisecond timestamps; the caller adds the propagation delay (RTT/2) and does the I/O.
 *
 * The rate limit is a token bucket of depth `burstBytes` filled at `bandwidthBps`, computed in its
 * virtual-scheduling form (GCRA, ITU-T I.371): one "theoretical arrival time" instead of a token
 * count, so no timer refills anything. A chunk larger than the bucket simply leaves once the bucket
 * would have refilled enough, i.e. long chunks are paced at the rate as a whole.
 *
 * Not here: sockets, queues, timers (pipe.ts), connections (emulator.ts).
 */

/** Token-bucket depth when the caller gives none: at most this many bytes pass above the rate at once. */
export const DEFAULT_BURST_BYTES = 64 * 1024;

export interface LinkShaperOptions {
  /** Capacity in bits/s; 0 = unlimited (every chunk leaves when it arrives). */
  bandwidthBps: number;
  /** Bucket depth in bytes. Default DEFAULT_BURST_BYTES. */
  burstBytes?: number;
}

/** Bandwidth of one link direction, shared by every connection that crosses it. */
export class LinkShaper {
  /** Bytes per millisecond; Infinity when unlimited. */
  private readonly rate: number;
  /** How far ahead of "now" the schedule may run without delaying a chunk, ms (= burst / rate). */
  private readonly tolerance: number;
  /** Theoretical arrival time of the next byte, ms (performance.now() clock). */
  private tat = -Infinity;

  constructor(opts: LinkShaperOptions) {
    const burst = opts.burstBytes ?? DEFAULT_BURST_BYTES;
    this.rate = opts.bandwidthBps > 0 ? opts.bandwidthBps / 8 / 1000 : Infinity;
    this.tolerance = burst / this.rate;
  }

  get unlimited(): boolean {
    return this.rate === Infinity;
  }

  /**
   * Books `bytes` on the link at time `now` (ms) and returns when they leave it (≥ now). Calls must
   * come in non-decreasing `now` order (they do: one clock, one thread).
   */
  depart(now: number, bytes: number): number {
    if (this.rate === Infinity) return now;
    this.tat = Math.max(this.tat, now) + bytes / this.rate;
    return Math.max(now, this.tat - this.tolerance);
  }

  /** How long a chunk arriving now would wait for bandwidth before its first byte leaves, ms (≥ 0). */
  backlogMs(now: number): number {
    if (this.rate === Infinity) return 0;
    return Math.max(0, this.tat - this.tolerance - now);
  }
}
