/**
 * Consumes one delta stream into the content tracker: header first (resolved by `header`), then every
 * item in the proxy's order. A dropped or failed connection resumes from the first item not yet
 * complete (`from=`), with backoff, until every item is present or the receiver is closed; items some
 * other source already wrote are skipped. An item that arrives but is bad (does not decode, or fails
 * its digest) fails its readers and is not asked for again; the connection goes on with the next
 * item, and `done` rejects once every other item is present (a later read fetches it out of order).
 *
 * Frames of different items may interleave (a queue jump preempts a large item). Small items are
 * buffered whole and handed to the tracker's item pool without waiting (decoded, verified and stored
 * off the main thread, in batches); larger ones stream through the item pool's threads too (decoded and
 * verified as they arrive, ItemPool.stream) — or through an ItemDecoder on this thread for encodings the
 * pool lacks — so their first verified ranges are readable early. As a QueueJumper, the receiver asks the proxy (POST /v1/sessions/<id>/next) to
 * send items that reads wait for next, when its stream has a session (docs/protocol.md "Sessions").
 *
 * Not here: HTTP details (proxy-client.ts), waiting readers and out-of-order fetches
 * (content-tracker.ts), what the header means for images and views (the puller).
 */
import { StarlightError, hasCode, kindOf, withContext } from '../../errors.js';
import type { Readable } from 'node:stream';
import { nullLogger, type Logger } from '../../log.js';
import { DEFAULT_CHUNK_BYTES } from '../../protocol/constants.js';
import { DeltaDecoder } from '../../protocol/decoder.js';
import type { DeltaEvent, DeltaHeader, DeltaImage } from '../../protocol/types.js';
import type { ContentTracker, Ingest, QueueJumper } from './content-tracker.js';
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
  /**
   * Awaited once, after the first header and before any of its items is taken in (the puller checks
   * the header and registers its TOCs' chunk digests); a rejection ends the connection.
   */
  beforeItems?: (h: DeltaHeader) => Promise<void>;
  /**
   * Called with the IMAGE frame of a connection before the first header (the proxy sends it before
   * the header while it indexes or plans, docs/protocol.md "Image first"); a throw ends the
   * connection as a bad header would.
   */
  onImage?: (image: DeltaImage) => void;
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
  /** When the last item landed (ms since the epoch): the stream's completion; absent until done. */
  doneAt?: number;
  /** When the first delta request went out (ms since the epoch): the stream's start; absent before. */
  requestedAt?: number;
}

/**
 * Items up to this many encoded bytes (one CONTENT frame of the proxy) and decoded bytes take the
 * whole-item path (item-pool.ts); larger ones stream through ItemDecoder so their first ranges can be
 * served before the rest arrives.
 */
const WHOLE_MAX_ENCODED_BYTES = DEFAULT_CHUNK_BYTES;
const WHOLE_MAX_BYTES = 16 * 1024 * 1024;
/** Encoded bytes of whole items queued for the pool before the stream stops reading. */
const POOL_INFLIGHT_BYTES = 8 * 1024 * 1024;

/** An item of the current connection whose first frame arrived. */
interface Arriving {
  index: number;
  ing: Ingest | null;
  /** Streamed item: its decoder. */
  dec: ItemDecoder | null;
  /** Whole item: its encoded bytes so far. */
  whole: Buffer[] | null;
  /** Streamed by the item pool (Ingest.pushEncoded): no decoder here. */
  pooled: boolean;
}

/** State of one connection. */
interface Connection {
  /**
   * This connection's header: its items carry the encodings this connection sends (they may differ
   * from an earlier connection's for the same digests, and deferred ones are set by ITEM frames).
   */
  header?: DeltaHeader;
  /** Items begun and not yet at their last frame. */
  open: Map<number, Arriving>;
  /** Streamed items with all their bytes, not yet verified and stored. */
  streaming: Set<Promise<void>>;
  /** Whole items handed to the item pool, not yet answered (a count: no promise per item). */
  landing: number;
  /** Called when `landing` drops to 0 (set while the connection's end waits for it). */
  onLanded: (() => void) | undefined;
  progressed: boolean;
}

type ChunkEvent = Extract<DeltaEvent, { type: 'chunk' }>;

/** Streamed items finishing (decoder tail, verify, rename) while the stream goes on. */
const MAX_STREAMED_SETTLING = 2;

/** Socket chunks buffered before the body is paused. */
const MAX_QUEUED_CHUNKS = 64;

/**
 * The body's chunks as they arrive. Not Readable's async iterator: its read() concatenates whatever
 * is buffered into one new Buffer, a copy of most of the stream (measured: docs/design-notes.md "Ingest").
 */
async function* chunksOf(body: Readable): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const onData = (b: Buffer): void => {
    queue.push(b);
    if (queue.length >= MAX_QUEUED_CHUNKS) body.pause();
    wake?.();
  };
  const onEnd = (): void => {
    ended = true;
    wake?.();
  };
  const onError = (err: unknown): void => {
    failure = err;
    wake?.();
  };
  body.on('data', onData);
  body.once('end', onEnd);
  body.once('close', onEnd);
  body.once('error', onError);
  try {
    for (;;) {
      while (queue.length > 0) yield queue.shift()!;
      if (failure !== undefined) throw failure;
      if (ended) return;
      if (body.isPaused()) body.resume();
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  } finally {
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('close', onEnd);
    body.off('error', onError);
  }
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

export class DeltaReceiver implements QueueJumper {
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
  /** When the stream completed (ms since the epoch); undefined until then. */
  private finishedAt: number | undefined;
  /** See ReceiverProgress.requestedAt. */
  private requestedAt: number | undefined;
  /** The first bad item's error (done rejects with it once the rest is in). */
  private firstFailure: unknown;
  private readonly ac = new AbortController();
  private readonly log: Logger;
  /** Session of the current connection (queue jumping), undefined without one or once it failed. */
  private session: string | undefined;
  /** First item index the current connection's stream carries. */
  private connFirst = 0;
  /** Item index by digest, of the current header. */
  private byDigest = new Map<string, number>();
  /** Items to ask for next, not yet sent; and whether a request is in flight (one at a time). */
  private jumpQueue = new Set<number>();
  private jumpInFlight = false;
  private resolveHeader!: (h: DeltaHeader) => void;
  private rejectHeader!: (e: unknown) => void;

  constructor(private readonly opts: ReceiverOptions) {
    this.log = opts.log ?? nullLogger;
    this.header = new Promise((res, rej) => {
      this.resolveHeader = res;
      this.rejectHeader = rej;
    });
    this.header.catch(() => {});
    const unregister = opts.tracker.addJumper(this);
    this.done = this.run().finally(unregister);
    this.done.catch(() => {});
  }

  /**
   * QueueJumper: asks the proxy to send the item of `digest` next on this stream, batched with other
   * items parked in the same turn, one request in flight (later ones coalesce behind it). False when
   * this stream has no session or will not carry the item.
   */
  jump(digest: string): boolean {
    const i = this.byDigest.get(digest);
    if (this.session === undefined || i === undefined || this.complete[i] || i < this.connFirst) return false;
    this.jumpQueue.add(i);
    if (!this.jumpInFlight) {
      this.jumpInFlight = true;
      setImmediate(() => this.sendJumps());
    }
    return true;
  }

  private sendJumps(): void {
    const session = this.session;
    const items = [...this.jumpQueue].filter((i) => !this.complete[i]);
    this.jumpQueue.clear();
    if (items.length === 0) {
      this.jumpInFlight = false;
      return;
    }
    const digests = items.map((i) => this.hdr!.items[i]!.digest);
    const failed = (err: unknown): void => {
      // The session is gone (stream finished, proxy restarted) or refuses: no more jumps on it.
      if (this.session === session) this.session = undefined;
      this.log.info('delta-jump-failed', { ref: this.opts.request.ref, items: items.length, err });
      for (const d of digests) this.opts.tracker.jumpFailed(d);
    };
    if (session === undefined) {
      failed(new StarlightError('SL_ERR_CANCELED', 'the stream ended'));
      this.jumpInFlight = false;
      return;
    }
    if (this.log.enabled('debug')) this.log.debug('delta-jump', { ref: this.opts.request.ref, items });
    const send = (retried: boolean): Promise<void> =>
      this.opts.client.next(session, items, this.ac.signal).catch((err: unknown) => {
        // A keep-alive connection the proxy closed while idle, just as it was reused, fails without
        // the proxy having seen the request: once more, on a fresh connection (a bump is idempotent).
        if (!retried && hasCode(err, 'SL_ERR_PROXY_UNREACHABLE') && !this.ac.signal.aborted) return send(true);
        throw err;
      });
    send(false)
      .catch(failed)
      .finally(() => {
        if (this.jumpQueue.size > 0) this.sendJumps();
        else this.jumpInFlight = false;
      });
  }

  /**
   * Opens the connection bumps go over before any reader blocks, with an empty bump (docs/protocol.md
   * "Sessions"): the stream's own connection is busy with its response, so the first bump would
   * otherwise pay a TCP (and TLS) handshake, one RTT or more, before its request. The client's
   * keep-alive agent keeps the connection for the bumps (while the proxy keeps it open when idle).
   */
  private openControl(session: string): void {
    this.opts.client.next(session, [], this.ac.signal).catch((err: unknown) => {
      if (this.log.enabled('debug')) this.log.debug('delta-control-failed', { ref: this.opts.request.ref, err });
    });
  }

  /** The connection ended: its session with it; items still queued for a jump are fetched otherwise. */
  private endSession(): void {
    this.session = undefined;
    if (this.jumpInFlight) return; // sendJumps drains the queue (and fails it) when its request ends
    const digests = [...this.jumpQueue].map((i) => this.hdr!.items[i]!.digest);
    this.jumpQueue.clear();
    for (const d of digests) this.opts.tracker.jumpFailed(d);
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
      done: this.finishedAt !== undefined,
      ...(this.finishedAt !== undefined ? { doneAt: this.finishedAt } : {}),
      ...(this.requestedAt !== undefined ? { requestedAt: this.requestedAt } : {}),
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
    this.finishedAt = Date.now();
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
    const { client, request } = this.opts;
    // The item threads boot while the request and its header are under way (item-pool.ts warm()).
    this.opts.tracker.pool().warm();
    this.requestedAt ??= Date.now();
    const { body, session } = await client.delta({ ...request, from }, this.ac.signal);
    this.connections++;
    this.session = session;
    if (session !== undefined) this.openControl(session);
    this.connFirst = from;
    const conn: Connection = { open: new Map(), streaming: new Set(), landing: 0, onLanded: undefined, progressed: false };
    const dec = new DeltaDecoder({ splitFrames: true });
    try {
      read: for await (const bytes of chunksOf(body)) {
        this.wireBytes += bytes.length;
        for (const ev of dec.push(bytes)) {
          if (ev.type === 'header') {
            conn.header = ev.header;
            this.acceptHeader(ev.header);
            this.connFirst = ev.header.firstItem;
            this.skipPresent();
            if (this.opts.beforeItems) await this.opts.beforeItems(this.hdr!);
          } else if (ev.type === 'end') break read;
          else if (ev.type === 'image') {
            if (this.hdr !== undefined) continue;
            this.log.info('delta-image', { ref: ev.image.ref, manifest: ev.image.manifestDigest });
            this.opts.onImage?.(ev.image);
          } else {
            // Whole items are taken in synchronously: no promise and no microtask per item.
            const p = this.chunk(conn, ev);
            if (p !== undefined) await p;
          }
        }
        // Backpressure: whole items waiting for the pool bound memory and a parked read's queueing.
        const pool = this.opts.tracker.pool();
        if (pool.inFlightBytes > POOL_INFLIGHT_BYTES) await pool.whenBelow(POOL_INFLIGHT_BYTES);
      }
      if (!dec.isDone()) dec.finish();
    } finally {
      for (const a of conn.open.values()) {
        a.dec?.destroy();
        await a.ing?.abort();
      }
      this.endSession();
      // Items with all their bytes: let them land before the caller decides where to resume.
      await Promise.allSettled([...conn.streaming]);
      if (conn.landing > 0) await new Promise<void>((r) => (conn.onLanded = r));
      body.destroy();
    }
    return conn.progressed;
  }

  /**
   * One CONTENT frame's data. Items may interleave (a queue jump preempts at a frame boundary).
   * Synchronous for whole items and skipped ones (the bulk of a stream's items); a promise only for
   * a streamed item's pieces (written and decoded through the libuv pool).
   */
  private chunk(conn: Connection, ev: ChunkEvent): Promise<void> | undefined {
    let a = conn.open.get(ev.index);
    if (a === undefined) {
      a = this.startSync(conn, ev.index);
      if (a === undefined) return this.chunkStreamed(conn, ev, undefined);
      if (!ev.last) conn.open.set(ev.index, a);
    } else if (a.dec !== null) return this.chunkStreamed(conn, ev, a);
    if (a.whole !== null) a.whole.push(ev.data);
    else if (a.pooled) a.ing?.pushEncoded(ev.data);
    if (!ev.last) return undefined;
    conn.open.delete(ev.index);
    const index = ev.index;
    if (a.ing !== null && a.whole !== null) {
      conn.landing++;
      a.ing.commitWhole((conn.header ?? this.hdr!).items[index]!.encoding, a.whole, (err) => this.landed(conn, index, err));
    } else if (a.ing !== null && a.pooled) {
      conn.landing++;
      a.ing.endEncoded((err) => this.landed(conn, index, err));
    } else if (this.complete[index] !== FAILED) {
      this.markComplete(index);
      conn.progressed = true;
    }
    return undefined;
  }

  /** A whole item the pool answered: complete, or failed (its readers already got the error). */
  private landed(conn: Connection, index: number, err: unknown): void {
    if (err !== undefined) this.noteFailure(index, err);
    else if (this.complete[index] !== FAILED) {
      this.markComplete(index);
      conn.progressed = true;
    }
    if (--conn.landing === 0 && conn.onLanded !== undefined) conn.onLanded();
  }

  /** A piece of a streamed item (decoded and written as it arrives); `a` undefined at its first piece. */
  private async chunkStreamed(conn: Connection, ev: ChunkEvent, a: Arriving | undefined): Promise<void> {
    const item = this.hdr!.items[ev.index]!;
    const { encoding } = (conn.header ?? this.hdr!).items[ev.index]!;
    if (a === undefined) {
      const ing = await this.opts.tracker.begin(item.digest, 'stream', item.size);
      a = { index: ev.index, ing, dec: ing ? new ItemDecoder(encoding, ing, item.digest) : null, whole: null, pooled: false };
      if (!ev.last) conn.open.set(ev.index, a);
    }
    if (a.dec) {
      try {
        await a.dec.push(ev.data);
      } catch (err) {
        // Bytes that do not decode: a bad item, not a bad connection (reconnecting would
        // resend the same bytes forever). The rest of its chunks are skipped.
        await this.itemFailed(a, err);
        a.ing = null;
        a.dec = null;
      }
    }
    if (!ev.last) return;
    conn.open.delete(ev.index);
    const index = ev.index;
    if (a.ing && a.dec) {
      const { ing, dec } = a;
      const ended = dec.end().then(
        () => ing.finish(item.size),
        async (err: unknown) => {
          dec.destroy();
          await ing.fail(err);
          throw err;
        },
      );
      const settled = ended.then(
        () => {
          if (this.complete[index] === FAILED) return;
          this.markComplete(index);
          conn.progressed = true;
        },
        (err: unknown) => this.noteFailure(index, err),
      );
      conn.streaming.add(settled);
      void settled.finally(() => conn.streaming.delete(settled));
      // Streamed items finish (decode tail, verify, rename) while the next ones arrive; a few at most.
      if (conn.streaming.size > MAX_STREAMED_SETTLING) await Promise.race(conn.streaming);
    } else if (this.complete[index] !== FAILED) {
      this.markComplete(index);
      conn.progressed = true;
    }
  }

  /**
   * Begins item `index` when that needs no I/O: a present item (skipped) or a whole one (small: its
   * encoded bytes are buffered and go to the item pool at the end; no ingest when another source
   * writes it). Undefined for an item to stream (decoded and written as frames arrive, so reads of
   * its first ranges are served early): chunkStreamed begins it.
   */
  private startSync(conn: Connection, index: number): Arriving | undefined {
    if (this.complete[index]) return { index, ing: null, dec: null, whole: null, pooled: false };
    const item = this.hdr!.items[index]!;
    const { encodedSize, encoding } = (conn.header ?? this.hdr!).items[index]!;
    const { tracker } = this.opts;
    if (encodedSize <= WHOLE_MAX_ENCODED_BYTES && item.size <= WHOLE_MAX_BYTES) {
      const ing = tracker.beginWhole(item.digest, 'stream', item.size);
      return { index, ing, dec: null, whole: ing ? [] : null, pooled: false };
    }
    // Larger: decoded, verified and written by the item pool as it arrives (its verified ranges are
    // served early, as on the main-thread path below, which stays for encodings the pool lacks).
    if (tracker.pool().streams(encoding)) {
      return { index, ing: tracker.beginStreamed(item.digest, 'stream', item.size, encoding), dec: null, whole: null, pooled: true };
    }
    return undefined;
  }

  /** An item whose bytes do not decode: its ingest fails (readers get EIO), the stream goes on. */
  private async itemFailed(c: Arriving, err: unknown): Promise<void> {
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
      this.byDigest = new Map(h.items.map((it, i) => [it.digest, i]));
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
    this.byDigest = new Map(h.items.map((it, i) => [it.digest, i]));
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
  private skipPresent(): void {
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
