/**
 * Headers before content across the delta streams of one proxy. When a rollout starts, many pulls
 * arrive at once; a worker can mount only once it has the whole HEADER frame, so the headers of late
 * requests should not queue behind the content of early ones for the proxy's single thread and the
 * peers' reading (bench/proxy.ts --fanout, docs/design-notes.md "Serving many pulls").
 *
 * Contract:
 * - begin() marks one header as being written; its release (idempotent) is called once the header's
 *   bytes have left the process (the response's buffer is empty) or the stream ended.
 * - A header counts as pending for at most `maxHoldMs` from its begin(): a peer that reads slowly (a
 *   WAN link, a stalled client) holds the other streams' content back only that long.
 * - clear() resolves at once while nothing is pending (`pending` is the synchronous check), else when
 *   no header is pending any more (released or past its hold).
 *
 * Not here: writing (session.ts, protocol/encoder.ts).
 */

/**
 * Longest time one header holds back other streams' content, ms. On loopback 50 headers of 1.3 MB
 * (python-web) left the proxy ~60 ms after they were written; a slow peer costs the others at most this.
 */
export const HEADER_HOLD_MS = 250;

export class HeaderFirst {
  /** Pending headers: their hold deadlines (performance.now() ms). */
  private readonly holds = new Set<{ until: number }>();
  private waiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly maxHoldMs = HEADER_HOLD_MS) {}

  /** True while a header is pending (content writers should await clear()). */
  get pending(): boolean {
    return this.holds.size > 0;
  }

  /** Marks a header as being written; returns its release. */
  begin(): () => void {
    const hold = { until: performance.now() + this.maxHoldMs };
    this.holds.add(hold);
    this.arm();
    return () => {
      if (this.holds.delete(hold)) this.settle();
    };
  }

  /** Resolves once no header is pending. */
  clear(): Promise<void> {
    if (this.holds.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Drops holds past their deadline; wakes the waiters when none is left. */
  private settle(): void {
    const now = performance.now();
    for (const h of this.holds) if (h.until <= now) this.holds.delete(h);
    if (this.holds.size > 0) {
      this.arm();
      return;
    }
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }

  /** A timer at the earliest hold deadline (holds end even if their release never comes). */
  private arm(): void {
    let first = Infinity;
    for (const h of this.holds) first = Math.min(first, h.until);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.settle(), Math.max(0, first - performance.now()) + 1);
    this.timer.unref();
  }
}
