/**
 * Keeping the event loop responsive during long synchronous work (issue 14: /healthz answers within a
 * second while the proxy indexes and plans an image of 60 000 files). Work that would run for long as
 * one synchronous stretch (or one chain of already-resolved promises, which starves I/O the same way)
 * is cut into slices; between slices `setImmediate` lets timers and I/O callbacks run.
 *
 * Not here: what is sliced (callers), bounding concurrency (semaphore.ts).
 */

/** Default longest slice of synchronous work, ms (the layer passes use it too: src/layers/indexer.ts, native-index.ts). */
const SLICE_MS = 20;

/** Resolves after pending I/O callbacks and timers have had their turn. */
export function yieldToLoop(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/** Counts a slice's time; `maybeYield()` yields once the slice is longer than `sliceMs`. */
export class TimeSlicer {
  private start = performance.now();

  constructor(private readonly sliceMs = SLICE_MS) {}

  /** True when the current slice is over its time (the caller should await maybeYield soon). */
  get due(): boolean {
    return performance.now() - this.start > this.sliceMs;
  }

  /** Yields to the event loop if the slice is over its time; then starts a new slice. */
  async maybeYield(): Promise<void> {
    if (!this.due) return;
    await yieldToLoop();
    this.start = performance.now();
  }
}

/**
 * Runs a generator of synchronous steps to its end, yielding to the event loop whenever a slice is over
 * `sliceMs` (the generator `yield`s at points where a pause is safe). Returns its result.
 */
export async function runSliced<T>(steps: Generator<unknown, T, undefined>, sliceMs = SLICE_MS): Promise<T> {
  const slicer = new TimeSlicer(sliceMs);
  for (;;) {
    const r = steps.next();
    if (r.done === true) return r.value;
    await slicer.maybeYield();
  }
}

/** Runs a generator of synchronous steps to its end at once (the synchronous twin of runSliced). */
export function runAtOnce<T>(steps: Generator<unknown, T, undefined>): T {
  for (;;) {
    const r = steps.next();
    if (r.done === true) return r.value;
  }
}
