/**
 * Whole small items into the CAS off the main thread: put() queues an item whose encoded bytes have
 * all arrived; items queued in the same event-loop turn (or until BATCH_BYTES) go to one thread of a
 * small pool as one message (one copy into a transferred buffer), which decodes, verifies size and
 * sha256 and only then writes the file at its digest path (item-thread.ts). submit() calls back
 * (put() resolves) once the content is readable at store.path(digest), or with the typed error of the item
 * (SL_ERR_PROTOCOL_MALFORMED: does not decode; SL_ERR_CAS_SIZE_MISMATCH / _DIGEST_MISMATCH;
 * SL_ERR_DISK_FULL). Nothing of a bad item is ever written.
 *
 * Why: per item, the old path awaited open, write, close, chmod, rename and rm on the libuv pool one
 * after another (~6 round trips, ~1 ms per file) and decoded through a stream pipeline; the stream's
 * speed was bounded by that latency, not by CPU (docs/design-notes.md "Ingest").
 *
 * Not here: which items are whole (the receiver), single-flight and waking readers (content-tracker.ts).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { StarlightError } from '../../errors.js';
import type { Encoding } from '../../protocol/constants.js';
import { digestHex, type BlobFiles } from '../cas/store.js';

/** An item whose encoded bytes are all here. */
export interface WholeItem {
  digest: string;
  /** Decoded size the source announced. */
  size: number;
  encoding: Encoding;
  /** Its encoded bytes, in order (usually one CONTENT frame's data). */
  chunks: Buffer[];
}

/** @internal main → thread */
export interface BatchRequest {
  id: number;
  data: ArrayBuffer;
  items: { hex: string; size: number; encoding: Encoding; offset: number; length: number; blobPath: string }[];
}

/** @internal thread → main: why one item of a batch was not stored */
export type ItemFailure =
  | { error: 'decode' | 'io'; message: string; errno?: string }
  | { error: 'size'; actual: number }
  | { error: 'digest'; actual: string };

/**
 * @internal thread → main, one per batch. Typed arrays, not an object per item: deserialising
 * thousands of outcome objects with BigInts was a measurable share of the main thread
 * (docs/design-notes.md "Ingest", session 6).
 */
export interface BatchAnswer {
  id: number;
  /** The request's buffer, given back for reuse. */
  data: ArrayBuffer;
  /** Item i's stamp when stored: inode at [2i], ctime ns at [2i + 1]. */
  stamps: BigUint64Array;
  /** The items not stored (rare), by index in the batch. */
  failed: { i: number; why: ItemFailure }[];
}

export interface ItemPoolOptions {
  /** Threads; default $STARLIGHT_ITEM_THREADS, else min(4, available cores). */
  threads?: number;
}

/** Encoded bytes per batch message: beyond it the batch goes at once. */
const BATCH_BYTES = 512 * 1024;
/** Items per batch message. */
const BATCH_ITEMS = 256;
const MAX_THREADS = 4;
/** Size of a reusable batch buffer (a batch is < BATCH_BYTES + one whole item ≤ 1 MiB). */
const ARENA_BYTES = 2 * 1024 * 1024;
/** Spare batch buffers kept. */
const MAX_SPARES = 8;

/**
 * Called once per submitted item: `undefined` once it is stored (readable at its blob path), else
 * its typed error (see the file comment).
 */
export type ItemDone = (err: StarlightError | undefined) => void;

interface Pending {
  item: WholeItem;
  encoded: number;
  done: ItemDone;
}

interface Thread {
  worker: Worker;
  /** Encoded bytes sent and not answered. */
  queued: number;
  batches: Map<number, Pending[]>;
}

export class ItemPool {
  private readonly size: number;
  private readonly threads: Thread[] = [];
  private batch: Pending[] = [];
  private batchBytes = 0;
  private flushScheduled = false;
  private seq = 0;
  private inFlight = 0;
  private readonly belowWaiters: { limit: number; resolve: () => void }[] = [];
  private closed = false;
  /** Batch buffers the threads gave back. */
  private readonly spares: ArrayBuffer[] = [];

  constructor(
    private readonly store: BlobFiles,
    opts: ItemPoolOptions = {},
  ) {
    const fromEnv = Number(process.env.STARLIGHT_ITEM_THREADS);
    this.size = Math.max(1, opts.threads ?? (fromEnv > 0 ? fromEnv : Math.min(MAX_THREADS, availableParallelism())));
  }

  /** @internal Threads started so far (tests). */
  get threadsStarted(): number {
    return this.threads.length;
  }

  /** Encoded bytes queued or being processed. */
  get inFlightBytes(): number {
    return this.inFlight;
  }

  /** Resolves once inFlightBytes ≤ limit (backpressure for the stream). */
  whenBelow(limit: number): Promise<void> {
    if (this.inFlight <= limit) return Promise.resolve();
    return new Promise((resolve) => this.belowWaiters.push({ limit, resolve }));
  }

  /** Decodes, verifies and stores one whole item; see the file comment. */
  put(item: WholeItem): Promise<void> {
    return new Promise<void>((resolve, reject) => this.submit(item, (err) => (err === undefined ? resolve() : reject(err))));
  }

  /**
   * put() without a promise: `done` is called once, from a later turn (or at once when the pool is
   * closed). The stream's receive path submits thousands of items per second; a promise chain per
   * item was a measurable share of its main thread (docs/design-notes.md "Ingest", session 6).
   */
  submit(item: WholeItem, done: ItemDone): void {
    if (this.closed) return done(new StarlightError('SL_ERR_CANCELED', `worker closing; content ${item.digest} not stored`));
    let encoded = 0;
    for (const c of item.chunks) encoded += c.length;
    this.batch.push({ item, encoded, done });
    this.batchBytes += encoded;
    this.inFlight += encoded;
    if (this.batchBytes >= BATCH_BYTES || this.batch.length >= BATCH_ITEMS) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushLater);
    }
  }

  private readonly flushLater = (): void => this.flush();

  /**
   * Starts every thread of the pool now (idle threads do not keep the process alive). Why: a thread
   * takes 0.2–0.5 s of wall time and ~0.08 s of CPU to boot on this VM (a fresh isolate); started on
   * the first item, python-web's stream waited ~0.3 s for it with 8 MiB queued (docs/design-notes.md
   * "Ingest", session 7). The receiver warms the pool when it sends its request, so the threads boot
   * while the header is on its way.
   */
  warm(): void {
    if (this.closed) return;
    while (this.threads.length < this.size) this.spawn().worker.unref();
  }

  /** Terminates the threads; queued items fail with SL_ERR_CANCELED. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new StarlightError('SL_ERR_CANCELED', 'worker closing; content not stored');
    const queued = this.batch;
    this.batch = [];
    for (const p of queued) p.done(err);
    const ts = this.threads.splice(0);
    for (const t of ts) for (const b of t.batches.values()) for (const p of b) p.done(err);
    await Promise.all(ts.map((t) => t.worker.terminate()));
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.batch.length === 0 || this.closed) return;
    const batch = this.batch;
    const bytes = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    // A spare comes back from a thread with its pages touched; a new one is not zero-filled.
    const spare = bytes <= ARENA_BYTES ? this.spares.pop() : undefined;
    const buf = spare ? Buffer.from(spare) : Buffer.allocUnsafeSlow(Math.max(bytes, ARENA_BYTES));
    const items: BatchRequest['items'] = [];
    let off = 0;
    for (const p of batch) {
      const start = off;
      for (const c of p.item.chunks) {
        c.copy(buf, off);
        off += c.length;
      }
      const hex = digestHex(p.item.digest);
      items.push({ hex, size: p.item.size, encoding: p.item.encoding, offset: start, length: off - start, blobPath: this.store.blobPath(hex) });
    }
    const t = this.pick();
    const id = ++this.seq;
    t.batches.set(id, batch);
    t.queued += bytes;
    t.worker.ref();
    const req: BatchRequest = { id, data: buf.buffer, items };
    t.worker.postMessage(req, [req.data]);
  }

  /** The thread with the least queued bytes; starts threads up to the pool size. */
  private pick(): Thread {
    let best: Thread | undefined;
    for (const t of this.threads) if (best === undefined || t.queued < best.queued) best = t;
    if (best !== undefined && (best.queued === 0 || this.threads.length >= this.size)) return best;
    return this.spawn();
  }

  private spawn(): Thread {
    const worker = new Worker(new URL('./item-thread.js', import.meta.url));
    const t: Thread = { worker, queued: 0, batches: new Map() };
    worker.on('message', (m: BatchAnswer) => {
      if (m.data.byteLength === ARENA_BYTES && this.spares.length < MAX_SPARES) this.spares.push(m.data);
      this.answered(t, m);
    });
    worker.on('error', (err) => this.lost(t, err));
    worker.on('exit', (code) => this.lost(t, new Error(`item thread exited with code ${code}`)));
    this.threads.push(t);
    return t;
  }

  private answered(t: Thread, m: BatchAnswer): void {
    const batch = t.batches.get(m.id);
    if (batch === undefined) return;
    t.batches.delete(m.id);
    const failed = new Map<number, ItemFailure>();
    for (const f of m.failed) failed.set(f.i, f.why);
    const stamps = m.stamps;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      t.queued -= p.encoded;
      this.release(p.encoded);
      const why = failed.size === 0 ? undefined : failed.get(i);
      if (why === undefined) {
        this.store.committed(p.item.digest, p.item.size, { ino: stamps[2 * i]!, ctimeNs: stamps[2 * i + 1]! });
        p.done(undefined);
      } else p.done(itemError(p.item, why));
    }
    if (t.batches.size === 0) t.worker.unref();
  }

  /** A thread died (a bug): its items fail (readers get EIO; the stream's resume asks again). */
  private lost(t: Thread, err: unknown): void {
    const i = this.threads.indexOf(t);
    if (i < 0) return;
    this.threads.splice(i, 1);
    const e = new StarlightError('SL_ERR_INTERNAL', `item thread failed: ${(err as Error).message}`, { cause: err });
    for (const b of t.batches.values()) {
      for (const p of b) {
        this.release(p.encoded);
        p.done(e);
      }
    }
    t.batches.clear();
  }

  private release(n: number): void {
    this.inFlight -= n;
    for (let i = 0; i < this.belowWaiters.length; ) {
      const w = this.belowWaiters[i]!;
      if (this.inFlight <= w.limit) {
        this.belowWaiters.splice(i, 1);
        w.resolve();
      } else i++;
    }
  }
}

function itemError(item: WholeItem, o: ItemFailure): StarlightError {
  const digest = item.digest;
  switch (o.error) {
    case 'decode':
      return new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `content ${digest} does not decode: ${o.message}`, { details: { digest } });
    case 'size':
      return new StarlightError('SL_ERR_CAS_SIZE_MISMATCH', `content ${digest}: received ${o.actual > item.size ? 'more than ' + item.size : o.actual} bytes, expected ${item.size}`, {
        details: { digest, expected: item.size, actual: o.actual },
      });
    case 'digest':
      return new StarlightError('SL_ERR_CAS_DIGEST_MISMATCH', `content ${digest}: received bytes hash to ${o.actual}`, { details: { digest, actual: o.actual } });
    case 'io':
      if (o.errno === 'ENOSPC' || o.errno === 'EDQUOT') {
        return new StarlightError('SL_ERR_DISK_FULL', `no space left writing content ${digest}`, { details: { digest } });
      }
      return new StarlightError('SL_ERR_INTERNAL', `writing content ${digest} failed: ${o.message}`, { details: { digest, errno: o.errno } });
  }
}
