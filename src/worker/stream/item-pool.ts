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
import zlib from 'node:zlib';
import { CHUNK_BYTES } from '../../layers/toc.js';
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
  kind: 'batch';
  id: number;
  data: ArrayBuffer;
  items: { hex: string; size: number; encoding: Encoding; offset: number; length: number; blobPath: string }[];
}

/** @internal main → thread: a streamed item begins (its ingest file is created at `path`). */
export interface StreamOpen {
  kind: 'open';
  id: number;
  hex: string;
  size: number;
  encoding: Encoding;
  path: string;
  blobPath: string;
  /** Its chunk digests (TocEntry.chunks), when its ranges may be served before it ends. */
  chunkDigests?: Uint8Array;
}

/** @internal main → thread: encoded bytes [0, length) of `data` of a streamed item, in order. */
export interface StreamPiece {
  kind: 'piece';
  id: number;
  data: ArrayBuffer;
  length: number;
  /** The item's last piece: verify and store it. */
  end: boolean;
}

/** @internal main → thread: the stream dropped a streamed item (its file is removed). */
export interface StreamAbort {
  kind: 'abort';
  id: number;
}

/** @internal */
export type ThreadRequest = BatchRequest | StreamOpen | StreamPiece | StreamAbort;

/** @internal thread → main, one per StreamPiece (and for a StreamOpen that failed). */
export interface StreamAnswer {
  kind: 'stream';
  id: number;
  /** The piece's buffer, given back for reuse. */
  data?: ArrayBuffer;
  /** Encoded bytes of the piece. */
  took: number;
  /** Decoded bytes [0, verified) are written and match their chunk digests. */
  verified: number;
  /** Stored at its blob path: (inode, ctime ns) after the rename. */
  stamp?: [bigint, bigint];
  failed?: ItemFailure;
}

/** @internal thread → main: why one item of a batch was not stored */
export type ItemFailure =
  | { error: 'decode' | 'io'; message: string; errno?: string }
  | { error: 'size'; actual: number }
  | { error: 'digest'; actual: string }
  | { error: 'chunk'; index: number };

/**
 * @internal thread → main, one per batch. Typed arrays, not an object per item: deserialising
 * thousands of outcome objects with BigInts was a measurable share of the main thread
 * (docs/design-notes.md "Ingest", session 6).
 */
export interface BatchAnswer {
  kind: 'batch';
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

/** A large item that streams through a thread (stream()). */
export interface StreamedItem {
  digest: string;
  /** Decoded size the source announced: more decoded bytes fail the item before they are written. */
  size: number;
  encoding: Encoding;
  /** Its chunk digests (TocEntry.chunks, checked by the caller to fit `size`), if any. */
  chunkDigests?: Uint8Array;
}

/** What a streamed item reports; both called on the main thread, from later turns. */
export interface StreamEvents {
  /** Decoded bytes [0, bytes) are at `path` and verified against the chunk digests. */
  verified(bytes: number): void;
  /**
   * Once: stored (undefined; readable at its blob path, renamed from `path`) or failed (its typed
   * error, possibly before end()). Not called after abort().
   */
  settled(err: StarlightError | undefined): void;
}

/** The main thread's handle of a streamed item. */
export interface StreamedWrite {
  /** Its ingest file: verified ranges may be read there until it is stored. */
  readonly path: string;
  /** Queues encoded bytes (a view is fine: copied at the next flush, in this or the next turn). */
  push(data: Buffer): void;
  /** No more bytes: the thread verifies and stores it (StreamEvents.settled). */
  end(): void;
  /** Drops it (the connection was lost): its file is removed, settled is not called. */
  abort(): void;
}

interface Streamed {
  id: number;
  item: StreamedItem;
  t: Thread;
  ev: StreamEvents;
  /** Encoded bytes queued on the main thread, not yet sent. */
  pending: Buffer[];
  pendingBytes: number;
  ended: boolean;
  /** settled() was called, or abort(): later answers only release their bytes. */
  over: boolean;
  verified: number;
}

interface Thread {
  worker: Worker;
  /** Encoded bytes sent and not answered. */
  queued: number;
  batches: Map<number, Pending[]>;
  /** Streamed items open on this thread, by id. */
  streams: Map<number, Streamed>;
  /** Encoded bytes of streamed pieces sent and not answered. */
  streamSent: number;
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
  /** Streamed items with bytes queued for the next flush. */
  private readonly streamsPending = new Set<Streamed>();
  /** Whether the threads can decode streamed items (node:zlib internals present), probed once. */
  private canStream: boolean | undefined;

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
    else this.scheduleFlush();
  }

  private readonly flushLater = (): void => this.flush();

  /**
   * Whether stream() takes items of `encoding`: identity, br, gzip and deflate-raw, when node:zlib's
   * native engine internals (item-thread.ts ZlibHandle) are there.
   */
  streams(encoding: Encoding): boolean {
    if (encoding !== 'identity' && encoding !== 'br' && encoding !== 'gzip' && encoding !== 'deflate-raw') return false;
    if (this.canStream === undefined) {
      const engine = zlib.createBrotliDecompress() as zlib.BrotliDecompress & { _handle?: { writeSync?: unknown }; _writeState?: unknown };
      this.canStream = typeof engine._handle?.writeSync === 'function' && engine._writeState instanceof Uint32Array;
      engine.close();
    }
    return this.canStream && !this.closed;
  }

  /**
   * A large item decoded, verified and written by a thread as its bytes arrive (only where
   * streams(encoding)): decoded pieces are checked against the announced size and the chunk digests
   * before they are written to `path`; `verified` reports each verified chunk (parked reads of its
   * ranges wake then), `settled` the end (size and sha256 checked, renamed to its blob path). Why:
   * decoding, both hashes and the writes of postgres' large items were ~40 % of the main thread's
   * stream CPU, plus the libuv pool's async brotli (docs/design-notes.md "Ingest", session 8).
   */
  stream(item: StreamedItem, ev: StreamEvents): StreamedWrite {
    if (this.closed) {
      setImmediate(() => ev.settled(new StarlightError('SL_ERR_CANCELED', `worker closing; content ${item.digest} not stored`)));
      return { path: '', push: () => {}, end: () => {}, abort: () => {} };
    }
    const t = this.pick();
    const id = ++this.seq;
    const s: Streamed = { id, item, t, ev, pending: [], pendingBytes: 0, ended: false, over: false, verified: 0 };
    const hex = digestHex(item.digest);
    const path = this.store.ingestFile();
    t.streams.set(id, s);
    t.worker.ref();
    const open: StreamOpen = { kind: 'open', id, hex, size: item.size, encoding: item.encoding, path, blobPath: this.store.blobPath(hex), chunkDigests: item.chunkDigests };
    t.worker.postMessage(open);
    return {
      path,
      push: (data) => {
        if (s.over || s.ended || data.length === 0) return;
        s.pending.push(data);
        s.pendingBytes += data.length;
        this.inFlight += data.length;
        this.streamsPending.add(s);
        if (s.pendingBytes >= BATCH_BYTES) this.sendPiece(s);
        else this.scheduleFlush();
      },
      end: () => {
        if (s.over || s.ended) return;
        s.ended = true;
        this.sendPiece(s);
      },
      abort: () => {
        if (s.over) return;
        s.over = true;
        this.release(s.pendingBytes);
        s.pending = [];
        s.pendingBytes = 0;
        this.streamsPending.delete(s);
        t.worker.postMessage({ kind: 'abort', id } satisfies StreamAbort);
        this.forget(s);
      },
    };
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flushLater);
  }

  /** Sends a streamed item's queued bytes as one piece (one copy into a transferred buffer). */
  private sendPiece(s: Streamed): void {
    this.streamsPending.delete(s);
    if (this.closed || s.over) return;
    const bytes = s.pendingBytes;
    if (bytes === 0 && !s.ended) return;
    const spare = bytes <= ARENA_BYTES ? this.spares.pop() : undefined;
    const buf = spare ? Buffer.from(spare) : Buffer.allocUnsafeSlow(Math.max(bytes, ARENA_BYTES));
    let off = 0;
    for (const c of s.pending) {
      c.copy(buf, off);
      off += c.length;
    }
    s.pending = [];
    s.pendingBytes = 0;
    s.t.queued += bytes;
    s.t.streamSent += bytes;
    const piece: StreamPiece = { kind: 'piece', id: s.id, data: buf.buffer, length: bytes, end: s.ended };
    s.t.worker.postMessage(piece, [piece.data]);
  }

  /** A streamed item is no longer open on its thread (stored, failed, aborted). */
  private forget(s: Streamed): void {
    s.t.streams.delete(s.id);
    if (s.t.batches.size === 0 && s.t.streams.size === 0) s.t.worker.unref();
  }

  private streamAnswered(t: Thread, m: StreamAnswer): void {
    t.queued -= m.took;
    t.streamSent -= m.took;
    this.release(m.took);
    const s = t.streams.get(m.id);
    if (s === undefined || s.over) return;
    if (m.failed !== undefined) {
      s.over = true;
      this.release(s.pendingBytes);
      s.pending = [];
      s.pendingBytes = 0;
      this.streamsPending.delete(s);
      this.forget(s);
      s.ev.settled(itemError(s.item, m.failed));
      return;
    }
    if (m.verified > s.verified) {
      s.verified = m.verified;
      s.ev.verified(m.verified);
    }
    if (m.stamp !== undefined) {
      s.over = true;
      this.forget(s);
      this.store.committed(s.item.digest, s.item.size, { ino: m.stamp[0], ctimeNs: m.stamp[1] });
      s.ev.settled(undefined);
    }
  }

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
    for (const t of ts) for (const s of t.streams.values()) this.streamLost(s, err);
    await Promise.all(ts.map((t) => t.worker.terminate()));
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const s of this.streamsPending) this.sendPiece(s);
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
    const req: BatchRequest = { kind: 'batch', id, data: buf.buffer, items };
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
    const t: Thread = { worker, queued: 0, batches: new Map(), streams: new Map(), streamSent: 0 };
    worker.on('message', (m: BatchAnswer | StreamAnswer) => {
      if (m.data?.byteLength === ARENA_BYTES && this.spares.length < MAX_SPARES) this.spares.push(m.data);
      if (m.kind === 'batch') this.answered(t, m);
      else this.streamAnswered(t, m);
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
    if (t.batches.size === 0 && t.streams.size === 0) t.worker.unref();
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
    for (const s of t.streams.values()) this.streamLost(s, e);
    this.release(t.streamSent);
    t.streamSent = 0;
    t.queued = 0;
  }

  /** A streamed item whose thread is gone (closing, or it died): fails with `err`. */
  private streamLost(s: Streamed, err: StarlightError): void {
    if (s.over) return;
    s.over = true;
    this.release(s.pendingBytes);
    this.streamsPending.delete(s);
    s.t.streams.delete(s.id);
    s.ev.settled(err);
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

function itemError(item: { digest: string; size: number }, o: ItemFailure): StarlightError {
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
    case 'chunk':
      return new StarlightError('SL_ERR_CAS_DIGEST_MISMATCH', `content ${digest}: chunk ${o.index} (bytes ${o.index * CHUNK_BYTES}-${Math.min(item.size, (o.index + 1) * CHUNK_BYTES)}) does not match its TOC digest`, {
        details: { digest, chunk: o.index },
      });
    case 'io':
      if (o.errno === 'ENOSPC' || o.errno === 'EDQUOT') {
        return new StarlightError('SL_ERR_DISK_FULL', `no space left writing content ${digest}`, { details: { digest } });
      }
      return new StarlightError('SL_ERR_INTERNAL', `writing content ${digest} failed: ${o.message}`, { details: { digest, errno: o.errno } });
  }
}
