/**
 * TraceReporter: uploads the spool's pending traces to the proxy, one round at a time (single
 * flight). `report()` is `starlight report`; `schedule()` is auto mode: a round now, and while
 * retriable failures remain, more rounds with exponential backoff (bounded count), timers unref'd.
 *
 * Not here: what is on disk (spool.ts), HTTP details (the PostTraces function, ProxyClient.postJson).
 */
import { nullLogger, type Logger } from '../../log.js';
import type { PostTraces, ReportResult, TraceSpool } from './spool.js';

/** First retry delay after a failed automatic upload, ms; doubles per attempt. */
const DEFAULT_RETRY_BASE_MS = 2_000;
/** Longest delay between automatic retries, ms. */
const MAX_RETRY_DELAY_MS = 5 * 60_000;
/** Automatic retries after a failed round before giving up until the next trace (or `report`). */
const DEFAULT_MAX_RETRIES = 8;

export interface TraceReporterOptions {
  spool: TraceSpool;
  post: PostTraces;
  /** First retry delay, ms (doubles, capped at 5 min). Default 2000. */
  retryBaseMs?: number;
  /** Retries per schedule(). Default 8. */
  maxRetries?: number;
  log?: Logger;
}

export class TraceReporter {
  private round: Promise<ReportResult> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private closed = false;
  private readonly log: Logger;

  constructor(private readonly opts: TraceReporterOptions) {
    this.log = opts.log ?? nullLogger;
  }

  /** One upload round now (joins a round in flight). */
  report(): Promise<ReportResult> {
    this.round ??= this.opts.spool
      .upload(this.opts.post)
      .then((r) => {
        if (r.uploaded > 0) this.log.info('traces-uploaded', { traces: r.uploaded, pending: r.pending });
        for (const f of r.failures) this.log.warn('traces-upload-failed', f);
        return r;
      })
      .finally(() => (this.round = undefined));
    return this.round;
  }

  /** Auto mode: upload soon; retry retriable failures with backoff. */
  schedule(): void {
    if (this.closed) return;
    this.attempt = 0;
    this.arm(0);
  }

  private arm(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.report().then(
        (r) => this.after(r.failures.some((f) => f.retriable)),
        (err: unknown) => {
          this.log.warn('traces-upload-failed', { err });
          this.after(true);
        },
      );
    }, delayMs);
    this.timer.unref();
  }

  private after(retry: boolean): void {
    if (!retry || this.closed) return;
    const max = this.opts.maxRetries ?? DEFAULT_MAX_RETRIES;
    if (this.attempt >= max) {
      this.log.warn('traces-upload-gave-up', { attempts: this.attempt });
      return;
    }
    const delay = Math.min(MAX_RETRY_DELAY_MS, (this.opts.retryBaseMs ?? DEFAULT_RETRY_BASE_MS) * 2 ** this.attempt);
    this.attempt++;
    this.arm(delay);
  }

  /** Stops automatic rounds; waits for a round in flight. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.round?.catch(() => undefined);
  }
}
