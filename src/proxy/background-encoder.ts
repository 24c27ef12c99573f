/**
 * Finishes the indexing of staged layers off the critical path: reads each staged raw content and
 * puts it into the content cache (which chooses and applies the encoding, brotli q5 or identity),
 * then discards the stage. The next pull of the image is warm (cached, compressed) without anyone
 * waiting for the compression of the first.
 *
 * Bounded: `concurrency` stages at once (each encodes one file at a time), and it yields to layer
 * passes (`yieldTo`) between files so that a header someone waits for gets the CPU first. close()
 * stops between files and discards what is left (the store's content rows make those contents
 * re-fetchable from their layers on demand).
 *
 * Not here: staging (staging.ts), the encoding choice (content-cache.ts).
 */
import { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { ContentCache } from './content-cache.js';
import { Semaphore } from './semaphore.js';
import { type LayerStage, readStaged } from './staging.js';

export interface BackgroundEncoderOptions {
  cache: ContentCache;
  logger: Logger;
  /** Stages encoded at once. */
  concurrency: number;
  /** Resolves when no layer pass is running (encoding waits for it between files). */
  yieldTo: () => Promise<void>;
}

export class BackgroundEncoder {
  private readonly slots: Semaphore;
  /** diffID → the encode of its stage (resolves when discarded; never rejects). */
  private readonly running = new Map<string, Promise<void>>();
  private stopped = false;
  private holds = 0;
  private holdWaiters: (() => void)[] = [];

  constructor(private readonly o: BackgroundEncoderOptions) {
    this.slots = new Semaphore(o.concurrency);
  }

  /** Stages not finished yet. */
  get pending(): number {
    return this.running.size;
  }

  /** Encodes `stage` in the background; the promise settles when it is discarded. */
  enqueue(stage: LayerStage): Promise<void> {
    const prior = this.running.get(stage.diffID);
    const p = (async () => {
      await prior;
      try {
        await this.slots.run(() => this.encode(stage));
      } catch (err) {
        this.o.logger.warn('layer-encode-failed', { diffID: stage.diffID, error: err });
      } finally {
        await stage.discard();
      }
    })();
    const tracked = p.finally(() => {
      if (this.running.get(stage.diffID) === tracked) this.running.delete(stage.diffID);
    });
    this.running.set(stage.diffID, tracked);
    return tracked;
  }

  /**
   * Pauses encoding between files until the returned release is called (a session encoding the items
   * it sends right now gets the CPU first). Holds nest; each release counts once.
   */
  hold(): () => void {
    this.holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.holds > 0) return;
      const w = this.holdWaiters;
      this.holdWaiters = [];
      for (const f of w) f();
    };
  }

  /** Resolves when the stages of `diffIDs` queued so far are encoded (or dropped). */
  async settled(diffIDs: readonly string[]): Promise<void> {
    for (const d of diffIDs) await this.running.get(d);
  }

  /** Lets running encodes finish for up to `graceMs`, then stops between files; resolves when every stage is discarded. */
  async close(graceMs = 0): Promise<void> {
    if (graceMs > 0 && this.running.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all([...this.running.values()]), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    this.stopped = true;
    const w = this.holdWaiters;
    this.holdWaiters = [];
    for (const f of w) f();
    await Promise.all([...this.running.values()]);
  }

  private async encode(stage: LayerStage): Promise<void> {
    const t0 = performance.now();
    let files = 0;
    for (const s of stage.contents()) {
      if (this.stopped) return;
      if (this.o.cache.has(s.digest)) continue;
      await this.o.yieldTo();
      while (this.holds > 0 && !this.stopped) await new Promise<void>((r) => this.holdWaiters.push(r));
      if (this.stopped || this.o.cache.has(s.digest)) continue;
      const raw = readStaged(s);
      if (raw === undefined) return;
      await this.o.cache.put(Buffer.isBuffer(raw) ? Readable.from([raw]) : raw, s.size, stage.diffID, { expectedDigest: s.digest });
      files++;
    }
    this.o.logger.info('layer-encoded', { diffID: stage.diffID, files, seconds: (performance.now() - t0) / 1000 });
  }
}
