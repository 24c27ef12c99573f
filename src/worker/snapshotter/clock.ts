/**
 * Wall-clock time in nanoseconds since the Unix epoch, for snapshot timestamps. containerd keeps
 * Go's time.Time (ns) and its snapshotter test suite checks that a call's Created/Updated lies
 * between two time.Now() taken around the call; Date.now() truncates to the millisecond and so reads
 * as EARLIER than the call's start (issue 17). Node has no CLOCK_REALTIME read finer than 1 ms, so:
 *
 *   realtime = monotonic (process.hrtime, CLOCK_MONOTONIC) + offset
 *
 * Linux slews both clocks alike (NTP frequency changes apply to both); they differ only by steps
 * of the wall clock (settimeofday, NTP step). The offset is measured at the instant Date.now()
 * ticks to a new millisecond (a busy wait of ~1 ms, once), bracketed by two monotonic reads a few
 * µs apart at most. Every read is checked against Date.now();
 * a reading outside Date.now()'s millisecond (± CHECK_SLACK_NS) means the wall clock was stepped,
 * and the offset is measured again.
 *
 * Not here: storage (metastore.ts), the wire form (grpc-proto.ts).
 */
import type { EpochNanos } from './types.js';

const NS_PER_MS = 1_000_000n;
/** Tolerance of the step check: Date.now() is read just after the monotonic clock. */
const CHECK_SLACK_NS = 1_000_000n;
/** A tick bracket wider than this (preempted, GC pause) is measured again, ns. */
const MAX_BRACKET_NS = 4_000n;
const MAX_ATTEMPTS = 20;

let offset: bigint | null = null;

/**
 * wall − monotonic, ns: brackets the instant Date.now() ticks to a new ms between two monotonic
 * reads (the last one before a Date.now() that still returned the old ms, the first one after it
 * returned the new one) and takes the middle. Retries a wide bracket; keeps the narrowest.
 */
function measureOffset(): bigint {
  let best: { mid: bigint; width: bigint } | null = null;
  for (let attempt = 0; attempt < MAX_ATTEMPTS && !(best && best.width <= MAX_BRACKET_NS); attempt++) {
    const start = Date.now();
    let before: bigint | null = null;
    let mono = process.hrtime.bigint();
    let ms = Date.now();
    while (ms === start) {
      before = mono; // the wall clock was still < (start + 1) ms here
      mono = process.hrtime.bigint();
      ms = Date.now();
    }
    const after = process.hrtime.bigint(); // the wall clock was ≥ ms here
    if (before === null || ms !== start + 1) continue; // ticked at once, or skipped a ms: no bracket
    const tick = BigInt(ms) * NS_PER_MS;
    const width = after - before;
    if (!best || width < best.width) best = { mid: tick - before - width / 2n, width };
  }
  // Never without a bracket in practice; fall back to ms precision rather than fail.
  return best ? best.mid : BigInt(Date.now()) * NS_PER_MS - process.hrtime.bigint();
}

/** Now, in ns since the Unix epoch: ns resolution, within a few µs of CLOCK_REALTIME. */
export function nowNanos(): EpochNanos {
  offset ??= measureOffset();
  const ns = process.hrtime.bigint() + offset;
  const wallMs = BigInt(Date.now()) * NS_PER_MS;
  if (ns < wallMs - CHECK_SLACK_NS || ns >= wallMs + NS_PER_MS + CHECK_SLACK_NS) {
    offset = measureOffset(); // the wall clock was stepped
    return process.hrtime.bigint() + offset;
  }
  return ns;
}
