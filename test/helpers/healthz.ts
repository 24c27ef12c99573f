/**
 * Polling a server's GET /healthz while some work runs, to bound how long its event loop is blocked
 * (issue 14: "/healthz answers within a second while the proxy indexes the largest image").
 *
 * Not here: what runs meanwhile (the caller's promise), asserting the bound (the caller).
 */

/** What healthzWhile() saw. */
export interface HealthzPolls {
  /** Slowest answer (or the time until the failure), ms. */
  maxMs: number;
  /** Answers received. */
  polls: number;
  /** Answers slower than `slowMs`. */
  slow: number;
  /** Set if a poll got no 200 answer within `deadlineMs` (then polling stops). */
  failed?: string;
}

export interface HealthzOptions {
  /** A poll without an answer by then fails, ms. Default 10 000. */
  deadlineMs?: number;
  /** Pause between polls, ms. Default 50. */
  intervalMs?: number;
  /** Answers slower than this are counted in `slow`, ms. Default 1000. */
  slowMs?: number;
}

/**
 * Polls `${url}/healthz` until `until` settles; returns the slowest answer. Never throws: a poll that
 * fails or gets no answer within the deadline ends polling with `failed` set (the caller asserts).
 */
export async function healthzWhile(url: string, until: Promise<unknown>, o: HealthzOptions = {}): Promise<HealthzPolls> {
  const deadlineMs = o.deadlineMs ?? 10_000;
  const slowMs = o.slowMs ?? 1000;
  let done = false;
  void until.then(
    () => (done = true),
    () => (done = true),
  );
  const out: HealthzPolls = { maxMs: 0, polls: 0, slow: 0 };
  while (!done) {
    const t0 = performance.now();
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(deadlineMs) });
      await res.text();
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    } catch (err) {
      out.maxMs = Math.max(out.maxMs, performance.now() - t0);
      out.failed = `/healthz did not answer 200 within ${deadlineMs} ms (${(performance.now() - t0).toFixed(0)} ms): ${String(err)}`;
      return out;
    }
    const ms = performance.now() - t0;
    out.maxMs = Math.max(out.maxMs, ms);
    if (ms > slowMs) out.slow++;
    out.polls++;
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 50));
  }
  return out;
}
