/**
 * One delta request's sender: writes the header, then the items in the order of its SendQueue —
 * planned order, with items bumped by POST /v1/sessions/<id>/next jumping ahead, preempting the item
 * being sent at its next CONTENT-frame boundary (docs/protocol.md "Sessions") — then END, or an ERROR
 * frame if it fails after the header. Each item is sent exactly once; a preempted item resumes at its
 * offset. Items are opened PREFETCH_ITEMS ahead of the one being written (hides per-file open/read
 * latency; memory stays bounded by that many small bodies or open streams, plus preempted streams).
 * With a HeaderFirst, content waits while any stream's header is still leaving the proxy (header-first.ts).
 * With FramedRuns, a stretch of small items the queue would send next in planned order goes out as
 * frames shared by the streams of the same plan (framed-runs.ts): the same bytes, one write.
 *
 * Not here: HTTP parsing (handlers.ts), planning (delta-plan.ts), where bytes come from (item-source.ts).
 */
import type { Readable } from 'node:stream';
import { StarlightError, withContext, type StarlightError as SE } from '../../errors.js';
import { TimeSlicer, yieldToLoop } from '../../event-loop.js';
import { type DeltaEncoder, type DeltaHeader } from '../../protocol/index.js';
import { type FramedRuns, RUN_ITEM_BYTES } from './framed-runs.js';
import type { HeaderFirst } from './header-first.js';
import { type ItemBody, type ItemSourceDeps, type OpenedItem, openDeferred, openItem } from './item-source.js';
import { SendQueue } from './send-queue.js';

/**
 * How far the sender runs ahead of the socket: CONTENT frames carry at most this much of an item, and
 * the encoder waits for 'drain' once the response buffers more than this (DeltaEncoder maxBuffered).
 * A bump can overtake only what is not written yet: with 1 MiB frames and the encoder's 1 MiB default
 * the response held 1–2 MiB in front of a bumped item, ~80–160 ms at 100 Mbit/s, on top of the
 * kernel's socket buffer (docs/design-notes.md "Queue-jump latency"). Bytes in the kernel keep the
 * link busy while the sender refills, so a smaller bound costs no throughput, only an event-loop turn
 * per 256 KiB.
 */
export const SEND_AHEAD_BYTES = 256 * 1024;

/** Items opened ahead of the one being written. */
const PREFETCH_ITEMS = 8;
/**
 * Raw bytes of the items opened ahead, at most (one more item may cross it): bounds a stream's memory
 * when deferred items are encoded in memory at send time (item-source.ts SEND_TIME_MAX_BYTES each).
 */
const PREFETCH_BYTES = 32 * 1024 * 1024;

export interface SessionOptions {
  /** The session id (HTTP header starlight-session). */
  id: string;
  header: DeltaHeader;
  /** headerBytes(header), when the caller has it (plan-cache.ts encodes a shared header once). */
  headerBytes?: Buffer;
  /** diffID of the layer that supplies each item (index-aligned with header.items), for re-fetches. */
  sources: string[];
  deps: ItemSourceDeps;
  encoder: DeltaEncoder;
  /** Bound on the encoded bytes restored by one re-fetch batch (a quarter of the cache). */
  refetchBudget: number;
  /** CONTENT frame data size; default SEND_AHEAD_BYTES (≤ the encoder's chunkBytes). */
  chunkBytes?: number;
  /**
   * Pauses background encoding while this session encodes deferred items itself (they get the CPU
   * first); returns the release. Optional.
   */
  holdEncoding?: () => () => void;
  /** Headers of all streams go out before content (header-first.ts). Optional. */
  headerFirst?: HeaderFirst;
  /** Shared frames of runs of small items of `header.items` (framed-runs.ts). Optional; unused with deferred items. */
  runs?: FramedRuns;
}

/** An item whose bytes are being read: what is left of it. */
interface Reading {
  iter: AsyncIterator<Buffer>;
  /** Bytes read but not written yet. */
  rest: Buffer | undefined;
  close(): void;
}

export class DeltaSession {
  readonly id: string;
  readonly queue: SendQueue;
  private readonly opened = new Map<number, Promise<OpenedItem>>();
  /** Raw bytes of the items in `opened`. */
  private openedBytes = 0;
  /** Deferred items whose ITEM frame is not written yet. */
  private readonly deferred: Set<number>;
  private readonly reading = new Map<number, Reading>();
  private readonly chunkBytes: number;
  private readonly runs: FramedRuns | undefined;
  /** Resolves at the first non-empty bump; what items wait for (holdItemsUntil). */
  private bumped!: () => void;
  private readonly firstBump = new Promise<void>((resolve) => (this.bumped = resolve));
  private itemsAfter: Promise<void> | undefined;
  private headerLeft!: () => void;
  /**
   * Settles once the header is written and handed to the socket (DeltaEncoder.headerWritten), or once
   * run() failed before that: work nobody waits for before the header (the startup prediction on
   * first contact) starts then, so the header's bytes leave without waiting for the event loop.
   * Never rejects.
   */
  readonly headerSent = new Promise<void>((resolve) => (this.headerLeft = resolve));

  constructor(private readonly o: SessionOptions) {
    this.id = o.id;
    this.queue = new SendQueue(o.header.items.length, o.header.firstItem);
    this.chunkBytes = o.chunkBytes ?? SEND_AHEAD_BYTES;
    this.deferred = new Set(o.header.deferred ?? []);
    // Runs frame items as the table announces them, each in one frame: not for a table of its own
    // (deferred items are rewritten), nor with frames too small to carry a run's item whole.
    this.runs = o.runs?.items === o.header.items && this.deferred.size === 0 && this.chunkBytes >= RUN_ITEM_BYTES ? o.runs : undefined;
  }

  /** Items in the header's table. */
  get itemCount(): number {
    return this.o.header.items.length;
  }

  /** Sends `indices` next, in this order (SendQueue.bump). Indices must be < itemCount. */
  bump(indices: readonly number[]): void {
    this.queue.bump(indices);
    if (indices.length > 0) this.bumped();
  }

  /** Sends `indices` before the rest of the planned order (SendQueue.prefer: after bumped items). */
  prefer(indices: readonly number[]): void {
    this.queue.prefer(indices);
  }

  /**
   * Items (not the header) wait until `p` settles or the first non-empty bump, whichever comes first:
   * an order that lands after the header (the startup prediction, which prefer()s its items) decides
   * the first items, and the worker reads the header meanwhile. Call before run().
   */
  holdItemsUntil(p: Promise<unknown>): void {
    this.itemsAfter = Promise.race([p.then(noop, noop), this.firstBump]);
  }

  /**
   * Writes the whole stream. Failures after the header go out as an ERROR frame (unless the client is
   * gone) and are returned, not thrown; failures before it are thrown.
   */
  async run(signal: AbortSignal): Promise<SE | undefined> {
    const enc = this.o.encoder;
    // Taken before the first await, so a caller's own hold can be handed over without a gap.
    const release = this.deferred.size > 0 ? this.o.holdEncoding?.() : undefined;
    // Small items from memory or staging resolve at once: without a pause, thousands of them are one
    // chain of microtasks that starves every other request (issue 14, /healthz).
    const slicer = new TimeSlicer();
    const gate = this.o.headerFirst;
    const headerOut = gate?.begin();
    try {
      // Encoding a large header is one synchronous piece: not in the same loop turn as the planning before it.
      if (this.o.headerBytes === undefined) await yieldToLoop();
      await enc.writeHeader(this.o.header, this.o.headerBytes);
      // The write's callback, not 'drain': a header under the socket's highWaterMark never gets one
      // (its write returned true), and held every stream's content for HEADER_HOLD_MS.
      void enc.headerWritten().then(() => {
        headerOut?.();
        this.headerLeft();
      });
      if (this.itemsAfter !== undefined) await this.itemsAfter;
    } catch (err) {
      headerOut?.();
      release?.();
      this.headerLeft();
      throw err;
    }
    try {
      for (;;) {
        await slicer.maybeYield();
        if (gate?.pending === true) await gate.clear();
        if (signal.aborted) throw new StarlightError('SL_ERR_CANCELED', 'client went away');
        if (await this.sendRun()) continue;
        const i = this.queue.shift();
        if (i === undefined) break;
        this.prefetch();
        const complete = await this.sendSome(i);
        if (complete) this.queue.done(i);
        else this.queue.preempt(i);
      }
      await enc.writeEnd();
      return undefined;
    } catch (err) {
      const e = withContext(err, `delta of ${this.o.header.ref}`);
      if (!signal.aborted) await enc.writeError({ code: e.code, message: e.message, detail: e.details }).catch(() => undefined);
      return e;
    } finally {
      headerOut?.();
      release?.();
      this.close();
    }
  }

  /** Writes the next items as a shared run if the queue would send exactly them next (false: it did not). */
  private async sendRun(): Promise<boolean> {
    const runs = this.runs;
    if (runs === undefined) return false;
    const start = this.queue.nextPlanned();
    if (start === undefined) return false;
    const run = runs.at(start);
    if (run === undefined || !this.queue.takeRun(start, run.end)) return false;
    // Items opened ahead that the run sends: let go of them.
    for (const [j, pr] of this.opened) {
      if (j < start || j >= run.end) continue;
      this.opened.delete(j);
      this.openedBytes -= this.o.header.items[j]!.size;
      letGo(pr);
    }
    await this.o.encoder.writeFrames(start, run.end, run.frames);
    return true;
  }

  /** Writes item `i` until it is complete (true) or a bumped item waits (false). */
  private async sendSome(i: number): Promise<boolean> {
    const item = this.o.header.items[i]!;
    let r = this.reading.get(i);
    if (r === undefined) {
      const opened = await this.open(i);
      r = reading(opened.body);
      this.reading.set(i, r);
      if (this.deferred.delete(i)) await this.o.encoder.writeItemEncoding(i, opened.encoding, opened.encodedSize);
    }
    try {
      if (item.encodedSize === 0) {
        await this.o.encoder.writeChunk(i, Buffer.alloc(0));
        this.finish(i);
        return true;
      }
      for (;;) {
        if (this.o.headerFirst?.pending === true) await this.o.headerFirst.clear();
        let buf = r.rest;
        r.rest = undefined;
        if (buf === undefined) {
          const next = await r.iter.next();
          if (next.done === true) {
            throw new StarlightError('SL_ERR_INTERNAL', `item ${i} (${item.digest}) ended before its encodedSize ${item.encodedSize}`, { details: { digest: item.digest } });
          }
          buf = next.value;
        }
        const take = Math.min(buf.length, this.chunkBytes);
        if (take < buf.length) r.rest = buf.subarray(take);
        if (take === 0) continue;
        const complete = await this.o.encoder.writeChunk(i, buf.subarray(0, take));
        if (complete) {
          if (r.rest !== undefined) throw new StarlightError('SL_ERR_INTERNAL', `item ${i} (${item.digest}) has more bytes than its encodedSize`, { details: { digest: item.digest } });
          this.finish(i);
          return true;
        }
        if (this.queue.shouldPreempt()) return false;
      }
    } catch (err) {
      this.finish(i);
      throw withContext(err, `content item ${i} (${item.digest})`, { item: i, digest: item.digest });
    }
  }

  private finish(i: number): void {
    this.reading.get(i)?.close();
    this.reading.delete(i);
  }

  /** Opens the next items ahead (bounded). */
  private prefetch(): void {
    for (const j of this.queue.peek(PREFETCH_ITEMS)) {
      if (this.runs?.isBuilt(j) === true) break; // it and what follows likely go out as a run
      if (this.opened.size >= 2 * PREFETCH_ITEMS || (this.opened.size > 0 && this.openedBytes >= PREFETCH_BYTES)) break;
      if (this.opened.has(j) || this.reading.has(j)) continue;
      const pr = this.openNow(j);
      pr.catch(() => undefined); // awaited, and so reported, when the item's turn comes
      this.opened.set(j, pr);
      this.openedBytes += this.o.header.items[j]!.size;
    }
  }

  private async open(i: number): Promise<OpenedItem> {
    const pending = this.opened.get(i);
    if (pending !== undefined) {
      this.opened.delete(i);
      this.openedBytes -= this.o.header.items[i]!.size;
    }
    // A failure to produce this item (its layer gone or corrupt in the registry) names it, so the
    // worker can fail that one file and resume after it instead of retrying it forever.
    try {
      return await (pending ?? this.openNow(i));
    } catch (err) {
      throw withContext(err, `content item ${i} (${this.o.header.items[i]!.digest})`, { item: i, digest: this.o.header.items[i]!.digest });
    }
  }

  private async openNow(i: number): Promise<OpenedItem> {
    const src = this.o.sources[i]!;
    const item = this.o.header.items[i]!;
    if (this.deferred.has(i)) return openDeferred(this.o.deps, item, src, () => this.upcoming(src));
    return { body: await openItem(this.o.deps, item, src, () => this.upcoming(src)), encoding: item.encoding, encodedSize: item.encodedSize };
  }

  /** Digests of upcoming items from `diffID` not in the cache, up to the re-fetch budget. */
  private upcoming(diffID: string): string[] {
    const out: string[] = [];
    let budget = this.o.refetchBudget;
    const items = this.o.header.items;
    for (let j = this.o.header.firstItem; j < items.length && budget > 0; j++) {
      if (this.queue.isDone(j) || this.o.sources[j] !== diffID || this.o.deps.cache.has(items[j]!.digest)) continue;
      out.push(items[j]!.digest);
      budget -= items[j]!.encodedSize;
    }
    return out;
  }

  private close(): void {
    for (const r of this.reading.values()) r.close();
    this.reading.clear();
    for (const pr of this.opened.values()) letGo(pr);
    this.opened.clear();
  }
}

const noop = (): void => undefined;

/** Closes an item opened ahead once it is open (its stream, if any). */
function letGo(pr: Promise<OpenedItem>): void {
  pr.then((o) => !Buffer.isBuffer(o.body) && o.body.destroy(), () => undefined);
}

function reading(body: ItemBody): Reading {
  if (Buffer.isBuffer(body)) {
    let given = false;
    return {
      iter: { next: async () => (given ? { done: true, value: undefined } : ((given = true), { done: false, value: body })) },
      rest: undefined,
      close: () => undefined,
    };
  }
  const stream = body as Readable;
  return { iter: stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>, rest: undefined, close: () => stream.destroy() };
}
