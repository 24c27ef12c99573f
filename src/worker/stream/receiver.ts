/**
 * Consumes one delta stream into the content tracker: header first (resolved by `header`), then every
 * item in the proxy's order. A dropped or failed connection resumes from the first item not yet
 * complete (`from=`), with backoff, until every item is present or the receiver is closed; items some
 * other source already wrote are skipped. An item that arrives but is bad (does not decode, or fails
 * its digest) fails its readers and is not asked for again; the connection goes on with the next
 * item, and `done` rejects once every other item is present (a later read fetches it out of order).
 *
 * Not here: HTTP details (proxy-client.ts), waiting readers and out-of-order fetches
 * (content-tracker.ts), what the header means for images and views (the puller).
 */
import { StarlightError, kindOf, withContext } from '../../errors.js';
import { nullLogger, type Logger } from '../../log.js';
import { decodeDelta } from '../../protocol/decoder.js';
import type { DeltaHeader } from '../../protocol/types.js';
import type { ContentTracker, Ingest } from './content-tracker.js';
import { ItemDecoder } from './item-decoder.js';
import type { DeltaRequest, ProxyClient } from './proxy-client.js';

export interface ReceiverOptions {
  client: ProxyClient;
  tracker: ContentTracker;
  request: DeltaRequest;
  log?: Logger;
  /** First and largest delay between reconnects, in ms; defaults 200 and 5 000. */
  retryMinMs?: number;
  /**
   * Keep reconnecting also before the first header arrived (a resume after a daemon restart, when
   * views already exist). Default false: a fresh pull fails at once if the proxy cannot be reached.
   */
  retryBeforeHeader?: boolean;
  retryMaxMs?: number;
}

export interface ReceiverProgress {
  items: number;
  itemsDone: number;
  /** Items that arrived but failed verification (their reads got EIO). */
  itemsFailed: number;
  /** Decoded bytes of all items, and of items present. */
  bytes: number;
  bytesDone: number;
  /** Encoded bytes received over the wire by this receiver (all connections). */
  wireBytes: number;
  connections: number;
  done: boolean;
}

/** complete[] states: 0 pending, DONE present, FAILED arrived but failed verification. */
const DONE = 1;
const FAILED = 2;

/** Whether two headers list the same items in the same order. */
function sameItems(a: DeltaHeader, b: DeltaHeader): boolean {
  return a.items.length === b.items.length && a.items.every((it, i) => it.digest === b.items[i]!.digest);
}

/**
 * The index of the item an ERROR frame says the proxy could not produce (its details carry `item`
 * and `digest`, and the kind says retrying will not help), or undefined.
 */
function unproducibleItem(err: unknown, h: DeltaHeader): number | undefined {
  if (!(err instanceof StarlightError) || (err.kind !== 'data-loss' && err.kind !== 'not-found')) return undefined;
  const { item, digest } = err.details;
  if (typeof item !== 'number' || !Number.isInteger(item) || item < 0 || item >= h.items.length) return undefined;
  return h.items[item]!.digest === digest ? item : undefined;
}

/** Errors after which reconnecting cannot help. */
function permanent(err: unknown): boolean {
  const k = kindOf(err);
  return k === 'not-found' || k === 'invalid-argument' || k === 'unauthenticated' || k === 'permission-denied' || k === 'unimplemented';
}

export class DeltaReceiver {
  /** Resolves with the header of the first connection; rejects if no header could be had. */
  readonly header: Promise<DeltaHeader>;
  /**
   * Resolves when every item is present; rejects on a permanent error, close(), or (once all other
   * items are present) when some item arrived bad (the first such error, kind data-loss).
   */
  readonly done: Promise<void>;

  private hdr: DeltaHeader | undefined;
  private complete: Uint8Array = new Uint8Array(0);
  private itemsDone = 0;
  private itemsFailed = 0;
  private bytesDone = 0;
  private wireBytes = 0;
  private connections = 0;
  private finished = false;
  /** The first bad item's error (done rejects with it once the rest is in). */
  private firstFailure: unknown;
  private readonly ac = new AbortController();
  private readonly log: Logger;
  private resolveHeader!: (h: DeltaHeader) => void;
  private rejectHeader!: (e: unknown) => void;

  constructor(private readonly opts: ReceiverOptions) {
    this.log = opts.log ?? nullLogger;
    this.header = new Promise((res, rej) => {
      this.resolveHeader = res;
      this.rejectHeader = rej;
    });
    this.header.catch(() => {});
    this.done = this.run();
    this.done.catch(() => {});
  }

  progress(): ReceiverProgress {
    const items = this.hdr?.items ?? [];
    return {
      items: items.length,
      itemsDone: this.itemsDone,
      itemsFailed: this.itemsFailed,
      bytes: items.reduce((a, i) => a + i.size, 0),
      bytesDone: this.bytesDone,
      wireBytes: this.wireBytes,
      connections: this.connections,
      done: this.finished,
    };
  }

  /** Stops receiving; partial items are dropped. Idempotent. */
  close(): void {
    this.ac.abort();
  }

  private async run(): Promise<void> {
    const min = this.opts.retryMinMs ?? 200;
    const max = this.opts.retryMaxMs ?? 5_000;
    let delay = min;
    for (;;) {
      if (this.ac.signal.aborted) throw this.canceled();
      const from = this.firstIncomplete();
      if (this.hdr && from >= this.hdr.items.length) break;
      try {
        const progressed = await this.connect(from);
        if (progressed) delay = min;
        if (this.hdr && this.firstIncomplete() >= this.hdr.items.length) break;
      } catch (err) {
        if (this.ac.signal.aborted) throw this.canceled();
        const bad = this.hdr === undefined ? undefined : unproducibleItem(err, this.hdr);
        if (bad !== undefined) {
          // The proxy cannot produce this item (docs/protocol.md "Errors mid-stream"): fail that file
          // and resume after it.
          this.noteFailure(bad, err);
          continue;
        }
        // Before the first header nothing is mounted yet: the caller gets the error at once (proxy
        // down, unknown image) instead of a pull that silently retries. After it, a mounted view
        // depends on the stream, so it resumes for as long as the receiver lives.
        if (permanent(err) || (this.hdr === undefined && !this.opts.retryBeforeHeader)) {
          this.rejectHeader(err);
          throw err;
        }
        this.log.warn('delta-reconnect', { ref: this.opts.request.ref, from, delayMs: delay, err });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(max, delay * 2);
      }
    }
    if (this.itemsFailed > 0) {
      this.log.error('delta-incomplete', { ref: this.opts.request.ref, ...this.progress() });
      throw withContext(this.firstFailure, `delta of ${this.opts.request.ref}: ${this.itemsFailed} item(s) arrived bad`, { ref: this.opts.request.ref });
    }
    this.finished = true;
    this.log.info('delta-complete', { ref: this.opts.request.ref, ...this.progress() });
  }

  private canceled(): StarlightError {
    const e = new StarlightError('SL_ERR_CANCELED', `delta of ${this.opts.request.ref} canceled`);
    this.rejectHeader(e);
    return e;
  }

  private firstIncomplete(): number {
    if (!this.hdr) return 0;
    let i = 0;
    while (i < this.complete.length && this.complete[i]) i++;
    return i;
  }

  /** One connection; returns whether any item completed. Throws what ended it early. */
  private async connect(from: number): Promise<boolean> {
    const { client, tracker, request } = this.opts;
    const body = await client.delta({ ...request, from }, this.ac.signal);
    this.connections++;
    let current: { index: number; ing: Ingest | null; dec: ItemDecoder | null } | undefined;
    // This connection's header: its items carry the encodings this connection sends (they may differ
    // from an earlier connection's for the same digests, and deferred ones are set by ITEM frames).
    let conn: DeltaHeader | undefined;
    let progressed = false;
    const counted = (async function* (src: AsyncIterable<Buffer>, onBytes: (n: number) => void) {
      for await (const c of src) {
        onBytes(c.length);
        yield c;
      }
    })(body as AsyncIterable<Buffer>, (n) => (this.wireBytes += n));
    try {
      for await (const ev of decodeDelta(counted)) {
        if (ev.type === 'header') {
          conn = ev.header;
          this.acceptHeader(ev.header);
          await this.skipPresent();
          continue;
        }
        if (ev.type === 'end') break;
        const item = this.hdr!.items[ev.index]!;
        if (current === undefined || current.index !== ev.index) {
          if (current?.ing) throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `item ${current.index} ended without its last chunk`);
          const ing = this.complete[ev.index] ? null : await tracker.begin(item.digest, 'stream', item.size);
          current = { index: ev.index, ing, dec: ing ? new ItemDecoder((conn ?? this.hdr!).items[ev.index]!.encoding, ing, item.digest) : null };
        }
        if (current.dec) {
          try {
            await current.dec.push(ev.data);
          } catch (err) {
            // Bytes that do not decode: a bad item, not a bad connection (reconnecting would
            // resend the same bytes forever). The rest of its chunks are skipped.
            await this.itemFailed(current, err);
            current.ing = null;
            current.dec = null;
          }
        }
        if (ev.last) {
          const c = current;
          current = undefined;
          if (c.ing && c.dec) {
            try {
              await c.dec.end();
            } catch (err) {
              await this.itemFailed(c, err);
              continue;
            }
            try {
              await c.ing.finish(item.size);
            } catch (err) {
              // A bad item fails its readers (EIO for that file only) and is not asked for again by
              // this stream; a later read fetches it out of order.
              this.noteFailure(c.index, err);
              continue;
            }
          }
          if (this.complete[ev.index] === FAILED) continue;
          this.markComplete(ev.index);
          progressed = true;
        }
      }
    } finally {
      if (current?.ing) {
        current.dec?.destroy();
        await current.ing.abort();
      }
      body.destroy();
    }
    return progressed;
  }

  /** An item whose bytes do not decode: its ingest fails (readers get EIO), the stream goes on. */
  private async itemFailed(c: { index: number; ing: Ingest | null; dec: ItemDecoder | null }, err: unknown): Promise<void> {
    c.dec?.destroy();
    await c.ing?.fail(err);
    this.noteFailure(c.index, err);
  }

  private noteFailure(index: number, err: unknown): void {
    if (this.complete[index]) return;
    this.log.error('delta-item-failed', { ref: this.opts.request.ref, digest: this.hdr!.items[index]!.digest, err });
    this.complete[index] = FAILED;
    this.itemsFailed++;
    this.firstFailure ??= err;
  }

  private acceptHeader(h: DeltaHeader): void {
    if (this.hdr === undefined) {
      this.hdr = h;
      this.complete = new Uint8Array(h.items.length);
      this.resolveHeader(h);
      this.log.info('delta-header', { ref: h.ref, manifest: h.manifestDigest, items: h.items.length, layers: h.layers.length });
      return;
    }
    if (h.manifestDigest !== this.hdr.manifestDigest) {
      throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `resumed delta of ${h.ref} describes another image (manifest ${h.manifestDigest})`, {
        details: { ref: h.ref },
      });
    }
    if (sameItems(h, this.hdr)) return;
    // The proxy learned a new order meanwhile (a trace upload, docs/protocol.md "Traces"): take the new
    // item table, carrying each item's state over by digest. This connection was opened with a `from`
    // of the old table; items the new table puts before it are picked up by the next reconnect.
    const state = new Map<string, number>();
    this.hdr.items.forEach((it, i) => state.set(it.digest, this.complete[i]!));
    this.hdr = h;
    this.complete = new Uint8Array(h.items.length);
    this.itemsDone = 0;
    this.bytesDone = 0;
    h.items.forEach((it, i) => {
      const st = state.get(it.digest) ?? 0;
      if (st === DONE) this.markComplete(i);
      else this.complete[i] = st;
    });
    this.log.info('delta-reordered', { ref: h.ref, manifest: h.manifestDigest, items: h.items.length });
  }

  /** Marks items already in the store (earlier pulls, out-of-order fetches) as complete. */
  private async skipPresent(): Promise<void> {
    const items = this.hdr!.items;
    for (let i = 0; i < items.length; i++) if (!this.complete[i] && this.opts.tracker.has(items[i]!.digest)) this.markComplete(i);
  }

  private markComplete(i: number): void {
    if (this.complete[i]) return;
    this.complete[i] = DONE;
    this.itemsDone++;
    this.bytesDone += this.hdr!.items[i]!.size;
  }
}
