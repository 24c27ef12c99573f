/**
 * The one way tests wait for something asynchronous: poll a probe until it answers, with a deadline.
 * Never a sleep standing in for synchronisation (a loaded CI machine makes every fixed sleep too short).
 */

export interface PollOptions {
  /** Give up after this long, ms (generous: machines running tests are shared and loaded). */
  timeoutMs?: number;
  /** Between probes, ms. */
  intervalMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_INTERVAL_MS = 20;

/** Resolves with the first truthy answer of `probe`; rejects naming `what` when the deadline passes. */
export async function pollUntil<T>(what: string, probe: () => T | undefined | null | false | Promise<T | undefined | null | false>, opts: PollOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await probe();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? DEFAULT_INTERVAL_MS));
  }
}
