/**
 * The worker's ContentProvider: what is present, what is arriving, and who waits for which bytes.
 *
 * Content arrives through ingests (begin → write… → finish): from a delta stream in priority order,
 * or fetched out of order (GET /v1/content) when a read waits for an item no stream is writing now.
 * A small item whose encoded bytes are all in memory takes the whole-item path instead (beginWhole →
 * commitWhole): decoded, verified and stored by a thread of the item pool (item-pool.ts); its readers
 * wake when it is committed (a whole item is never served before it is verified).
 * One ingest per digest at a time (single-flight): a second source for the same digest is told to
 * skip it. A waiter is woken when the content is committed (size and digest verified); a digest
 * mismatch (or an item that does not decode) fails every waiter of that digest (EIO for that file
 * only); a waiter not served within the deadline fails with SL_ERR_CONTENT_DEADLINE (EIO, logged),
 * never a hang.
 *
 * Queue jumping (docs/protocol.md "Sessions"): a read that parks on an item no source is writing
 * first asks the registered streams (QueueJumper: a receiver whose proxy gave its stream a session)
 * to send that item next on the stream they already have; only if none will, its request fails, or
 * the item has not started arriving within `queueJumpFallbackMs`, is it fetched out of order (a
 * second transfer competing with the stream for the link).
 *
 * Never unverified bytes (issue 14): a range of a file still streaming is served from its ingest file
 * only once every byte of it is verified, which needs the file's chunk digests (TocEntry.chunks, TOC
 * version 2, registered with addChunkDigests by the puller): each CHUNK_BYTES piece is hashed as it
 * arrives and compared before it is written, a bad piece fails the item at once (readers get EIO). A
 * file without chunk digests (small, or indexed before version 2) is served only once committed.
 * Serving unverified ranges (the rule before) handed a corrupted head of a large file to readers with
 * no error (test/unit/stream/verified-reads.test.ts, `npm run faults` "bit flip"). Cost and figures:
 * docs/design-notes.md "Verified reads". Since no unverified byte is ever served, the kernel never
 * caches one: a failed item has nothing to invalidate (its parked reads get EIO; the bytes served
 * before were verified).
 *
 * Path validity: an ingest path is only handed out while the ingest is writing; commit (rename) starts
 * only after finish(), when no more ingest paths are handed out. The FUSE addon opens the path
 * synchronously inside provide(), in the same tick the promise resolved, so it cannot race the rename.
 *
 * Not here: frames and resume (receiver.ts), the HTTP client (proxy-client.ts), storage (cas/).
 */
import { StarlightError, hasCode, kindOf } from '../../errors.js';
import { nullLogger, type Logger } from '../../log.js';
import type { BlobFiles, ContentStore, ContentWriter } from '../cas/store.js';
import type { ContentProvider } from '../fs/view.js';
import type { Encoding } from '../../protocol/constants.js';
import { ChunkHasher } from '../../layers/chunks.js';
import { CHUNK_BYTES, CHUNK_DIGEST_BYTES, chunkCount } from '../../layers/toc.js';
import { ItemDecoder } from './item-decoder.js';
import { ItemPool, type StreamedWrite } from './item-pool.js';
import type { ContentResponse } from './proxy-client.js';

export interface ContentTrackerOptions {
  /** How long a read may wait for content before it fails with EIO, in ms; default 60 000. */
  readDeadlineMs?: number;
  /** Fetches one item out of order; without it, waiters only wait for streams. */
  fetchItem?: (digest: string, signal: AbortSignal) => Promise<ContentResponse>;
  /** Delay between out-of-order fetch attempts while someone still waits, in ms; default 500. */
  fetchRetryMs?: number;
  /** Threads of the whole-item pool (item-pool.ts); default min(4, cores). */
  itemThreads?: number;
  /**
   * How long an item a stream was asked to send next may take to start arriving before it is
   * fetched out of order anyway, in ms; default 3 000 (a few RTTs plus what is already in flight).
   * Capped at JUMP_FALLBACK_DEADLINE_SHARE of readDeadlineMs: a fallback at or after the deadline
   * never fires (the read has already failed).
   */
  queueJumpFallbackMs?: number;
  log?: Logger;
}

/** Default read deadline of a lazy view, ms: a read waiting longer for its content fails with EIO. */
export const DEFAULT_READ_DEADLINE_MS = 60_000;
const DEFAULT_FETCH_RETRY_MS = 500;
const DEFAULT_QUEUE_JUMP_FALLBACK_MS = 3_000;
/**
 * The queue-jump fallback fires by this share of the read deadline at the latest, leaving the rest
 * for the out-of-order fetch. A jump cannot overtake the stream bytes already buffered on the way
 * (socket buffers, the link; MiBs at WAN speed), so a jump that lands behind them must not use up the
 * read's whole deadline (mount-faults "killed": 3 s deadline, 4 Mbit/s, an 8 MiB item in flight).
 */
const JUMP_FALLBACK_DEADLINE_SHARE = 0.25;

/** A stream that can be asked to send an item next (the receiver of a delta with a session). */
export interface QueueJumper {
  /**
   * Asks this stream to send `digest` next. True: it will (it carries the item and has a session; it
   * calls ContentTracker.jumpFailed if the proxy refuses). False: ask someone else.
   */
  jump(digest: string): boolean;
}

interface Waiter {
  end: number;
  resolve: (path: string) => void;
  reject: (err: unknown) => void;
}

/** One content being written. */
export class Ingest {
  finished = false;
  /** Bytes [0, verifiedBytes) are on disk and match their chunk digests. */
  private verifiedBytes = 0;
  private readonly chunkHasher: ChunkHasher | null;
  /** A streamed item the item pool decodes, verifies and writes (beginStreamed); else null. */
  private pooled: StreamedWrite | null = null;
  /** The pooled item's outcome once the pool settled it (undefined: stored), and who waits for it. */
  private pooledOutcome: { err: unknown } | undefined;
  private pooledDone: ((err: unknown) => void) | undefined;

  constructor(
    private readonly tracker: ContentTracker,
    readonly digest: string,
    readonly source: 'stream' | 'fetch',
    /** The CAS writer; null for a whole item (decoded and stored by the item pool at commitWhole). */
    readonly writer: ContentWriter | null,
    /** Decoded size the source announced: more decoded bytes than this fail the item (write()). */
    readonly expectedSize: number,
    /** The content's chunk digests (TocEntry.chunks), if known: ranges are served once verified. */
    chunks?: Uint8Array,
  ) {
    this.chunkHasher =
      writer !== null && chunks !== undefined && chunks.length === chunkCount(expectedSize) * CHUNK_DIGEST_BYTES && chunks.length > 0
        ? new ChunkHasher((i, d) => {
            const want = chunks.subarray(i * CHUNK_DIGEST_BYTES, (i + 1) * CHUNK_DIGEST_BYTES);
            if (!d.equals(want)) {
              throw new StarlightError('SL_ERR_CAS_DIGEST_MISMATCH', `content ${digest}: chunk ${i} (bytes ${i * CHUNK_BYTES}-${Math.min(expectedSize, (i + 1) * CHUNK_BYTES)}) does not match its TOC digest`, {
                details: { digest, chunk: i },
              });
            }
          })
        : null;
  }

  /** Whether a waiter for bytes [.., end) may be answered from the ingest file now (all verified). */
  serves(end: number): boolean {
    return (this.writer !== null || this.pooled !== null) && !this.finished && end <= this.verifiedBytes;
  }

  get writtenBytes(): number {
    return this.writer?.writtenBytes ?? 0;
  }

  /** Path of the ingest file (only while serves() is true for some range). */
  get ingestPath(): string {
    return this.pooled?.path ?? this.writer!.ingestPath;
  }

  /** @internal ContentTracker.beginStreamed: the item pool writes this ingest. */
  streamInPool(pool: ItemPool, encoding: Encoding, chunks: Uint8Array | undefined): void {
    this.pooled = pool.stream(
      { digest: this.digest, size: this.expectedSize, encoding, chunkDigests: chunks },
      {
        verified: (bytes) => {
          if (bytes <= this.verifiedBytes) return;
          this.verifiedBytes = bytes;
          this.tracker.progressed(this);
        },
        settled: (err) => {
          if (this.pooledOutcome !== undefined) return;
          this.pooledOutcome = { err };
          // A failure before the item's end: no range of it is served any more, its waiters fail now.
          this.finished = true;
          this.tracker.ended(this, err);
          this.pooledDone?.(err);
        },
      },
    );
  }

  /**
   * Encoded bytes of a pooled streamed item (beginStreamed), in order; dropped once the item failed.
   * Synchronous: copied and sent to its thread in this or the next turn.
   */
  pushEncoded(data: Buffer): void {
    if (this.pooledOutcome === undefined) this.pooled!.push(data);
  }

  /**
   * The pooled streamed item's last bytes were pushed: `done` is called once it is stored
   * (undefined; its waiters woke) or with its error (its waiters failed). No range of its ingest file
   * is handed out from now on (the thread renames it when it is verified).
   */
  endEncoded(done: (err: unknown) => void): void {
    this.finished = true;
    if (this.pooledOutcome !== undefined) return done(this.pooledOutcome.err);
    this.pooledDone = done;
    this.pooled!.end();
  }

  /**
   * Appends decoded bytes. Fails with SL_ERR_CAS_SIZE_MISMATCH (nothing written) once they would
   * exceed the announced size: a decompression bomb from a proxy cannot fill the disk.
   */
  async write(chunk: Uint8Array): Promise<void> {
    const writer = this.writer!;
    if (writer.writtenBytes + chunk.length > this.expectedSize) {
      throw new StarlightError('SL_ERR_CAS_SIZE_MISMATCH', `content ${this.digest}: decodes to more than the ${this.expectedSize} bytes announced`, {
        details: { digest: this.digest, expected: this.expectedSize, actual: writer.writtenBytes + chunk.length },
      });
    }
    // Verified before it is written: a bad chunk never reaches the disk, let alone a reader.
    const h = this.chunkHasher;
    if (h !== null) {
      h.update(chunk);
      if (writer.writtenBytes + chunk.length === this.expectedSize) h.finish();
    }
    await writer.write(chunk);
    if (h !== null && h.completedBytes > this.verifiedBytes) {
      this.verifiedBytes = h.completedBytes;
      this.tracker.progressed(this);
    }
  }

  /** Verifies and commits; wakes or fails every waiter of this digest. */
  async finish(size: number): Promise<void> {
    this.finished = true;
    try {
      await this.writer!.commit(size, this.digest);
    } catch (err) {
      this.tracker.ended(this, err);
      throw err;
    }
    this.tracker.ended(this, undefined);
  }

  /**
   * A whole item (beginWhole): decodes, verifies and stores `chunks` on the item pool, then wakes
   * every waiter of this digest and calls `done(undefined)`; a bad item fails them (typed error, see
   * item-pool.ts) and is passed to `done`. A callback, not a promise: see ItemPool.submit.
   */
  commitWhole(encoding: Encoding, chunks: Buffer[], done: (err: unknown) => void): void {
    this.finished = true;
    this.tracker.pool().submit({ digest: this.digest, size: this.expectedSize, encoding, chunks }, (err) => {
      this.tracker.ended(this, err);
      done(err);
    });
  }

  /** Drops an ingest whose bytes are bad (do not decode): fails its waiters like a digest mismatch. */
  async fail(err: unknown): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.pooled?.abort();
    await this.writer?.abort();
    this.tracker.ended(this, err);
  }

  /** Drops a partial ingest (connection lost); waiters keep waiting for another source. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.pooled?.abort();
    await this.writer?.abort();
    this.tracker.ended(this, null);
  }
}

export class ContentTracker implements ContentProvider {
  /** For the daemon's metrics: out-of-order fetches of single items (reads ahead of the stream), reads failed by the deadline. */
  readonly counters = { onDemandFetches: 0, deadlineExpired: 0 };
  private readonly ingests = new Map<string, Ingest>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly fetching = new Set<string>();
  private readonly jumpers = new Set<QueueJumper>();
  /** Items a stream was asked to send next: the fallback timer of each. */
  private readonly jumped = new Map<string, NodeJS.Timeout>();
  private readonly closed = new AbortController();
  private readonly readDeadlineMs: number;
  private readonly fetchRetryMs: number;
  private readonly queueJumpFallbackMs: number;
  private readonly log: Logger;
  private itemPool: ItemPool | undefined;
  /** Chunk digests by content digest (addChunkDigests). */
  private readonly chunkDigests = new Map<string, Uint8Array>();
  /** Sizes checked TOCs give contents (expectSize): what an out-of-order fetch may announce. */
  private readonly expectedSizes = new Map<string, number>();

  constructor(
    /** The CAS; whole items are written into its blob files by the item pool. */
    readonly store: ContentStore & BlobFiles,
    private readonly opts: ContentTrackerOptions = {},
  ) {
    this.readDeadlineMs = opts.readDeadlineMs ?? DEFAULT_READ_DEADLINE_MS;
    this.fetchRetryMs = opts.fetchRetryMs ?? DEFAULT_FETCH_RETRY_MS;
    this.queueJumpFallbackMs = Math.min(opts.queueJumpFallbackMs ?? DEFAULT_QUEUE_JUMP_FALLBACK_MS, Math.floor(this.readDeadlineMs * JUMP_FALLBACK_DEADLINE_SHARE));
    this.log = opts.log ?? nullLogger;
  }

  locate(digest: string): string | null {
    return this.store.path(digest);
  }

  has(digest: string): boolean {
    return this.store.has(digest);
  }

  /** True while some source is writing `digest`. */
  arriving(digest: string): boolean {
    return this.ingests.has(digest);
  }

  /**
   * Registers the chunk digests (TocEntry.chunks) of content `digest`, from a TOC the worker checked:
   * its ranges can then be served as they are verified, before the whole content is.
   */
  addChunkDigests(digest: string, chunks: Uint8Array): void {
    if (!this.chunkDigests.has(digest)) this.chunkDigests.set(digest, chunks);
  }

  /**
   * Records the size a checked TOC gives content `digest`: an out-of-order fetch announcing another
   * size is refused before a byte is written (a hostile proxy cannot make the worker write more).
   */
  expectSize(digest: string, size: number): void {
    this.expectedSizes.set(digest, size);
  }

  /**
   * Starts an ingest of `size` decoded bytes (as the source announced it), or returns null when the
   * digest is present or already being written.
   */
  async begin(digest: string, source: 'stream' | 'fetch', size: number): Promise<Ingest | null> {
    if (this.store.has(digest) || this.ingests.has(digest)) return null;
    const writer = await this.store.writer(digest).catch((err: unknown) => {
      if (hasCode(err, 'SL_ERR_CAS_WRITER_BUSY')) return null;
      throw err;
    });
    if (writer === null) return null;
    if (this.store.has(digest)) {
      await writer.abort();
      return null;
    }
    const ing = new Ingest(this, digest, source, writer, size, this.chunkDigests.get(digest));
    this.ingests.set(digest, ing);
    this.arrivingNow(digest);
    return ing;
  }

  /**
   * Reserves `digest` for a whole-item ingest (commitWhole) without touching the disk, or returns
   * null when it is present or already being written. Synchronous: the stream does not wait per item.
   */
  beginWhole(digest: string, source: 'stream' | 'fetch', size: number): Ingest | null {
    if (this.store.has(digest) || this.ingests.has(digest)) return null;
    const ing = new Ingest(this, digest, source, null, size);
    this.ingests.set(digest, ing);
    this.arrivingNow(digest);
    return ing;
  }

  /**
   * Reserves `digest` for a large item the item pool decodes, verifies and writes as its encoded
   * bytes arrive (Ingest.pushEncoded … endEncoded), without touching the disk here; verified ranges
   * are served from its ingest file as before. Null when it is present or already being written.
   * Only where the pool streams this encoding (ItemPool.streams); else use begin().
   */
  beginStreamed(digest: string, source: 'stream' | 'fetch', size: number, encoding: Encoding): Ingest | null {
    if (this.store.has(digest) || this.ingests.has(digest)) return null;
    const ing = new Ingest(this, digest, source, null, size);
    const chunks = this.chunkDigests.get(digest);
    const usable = chunks !== undefined && chunks.length > 0 && chunks.length === chunkCount(size) * CHUNK_DIGEST_BYTES ? chunks : undefined;
    ing.streamInPool(this.pool(), encoding, usable);
    this.ingests.set(digest, ing);
    this.arrivingNow(digest);
    return ing;
  }

  /** @internal The whole-item pool, started on first use. */
  pool(): ItemPool {
    return (this.itemPool ??= new ItemPool(this.store, { threads: this.opts.itemThreads }));
  }

  waitFor(digest: string, offset: number, length: number, signal?: AbortSignal): Promise<string> {
    const done = this.store.path(digest);
    if (done !== null) return Promise.resolve(done);
    const end = offset + Math.max(0, length);
    const ing = this.ingests.get(digest);
    if (ing !== undefined && ing.serves(end)) return Promise.resolve(ing.ingestPath);
    return new Promise<string>((resolve, reject) => {
      let set = this.waiters.get(digest);
      if (set === undefined) this.waiters.set(digest, (set = new Set()));
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        set!.delete(w);
        if (set!.size === 0 && this.waiters.get(digest) === set) this.waiters.delete(digest);
      };
      const w: Waiter = {
        end,
        resolve: (p) => {
          cleanup();
          resolve(p);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.counters.deadlineExpired++;
        this.log.error('content-deadline', { digest, offset, length, deadlineMs: this.readDeadlineMs });
        w.reject(
          new StarlightError('SL_ERR_CONTENT_DEADLINE', `content ${digest} (bytes ${offset}-${end}) did not arrive within ${this.readDeadlineMs} ms`, {
            details: { digest, offset, length },
          }),
        );
      }, this.readDeadlineMs);
      timer.unref();
      const onAbort = () => w.reject(new StarlightError('SL_ERR_CANCELED', `read of ${digest} interrupted`, { details: { digest } }));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      set.add(w);
      if (!this.ingests.has(digest)) this.request(digest);
    });
  }

  /** Number of reads waiting for content (for status and tests). */
  waiting(): number {
    let n = 0;
    for (const s of this.waiters.values()) n += s.size;
    return n;
  }

  /** Fails every waiter and stops fetching. Idempotent. */
  /** Registers a stream that can be asked to send items next; returns its unregistration. */
  addJumper(j: QueueJumper): () => void {
    this.jumpers.add(j);
    return () => this.jumpers.delete(j);
  }

  /** A stream could not get `digest` sent next (no session any more, proxy refused): fetch it now. */
  jumpFailed(digest: string): void {
    const timer = this.jumped.get(digest);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.jumped.delete(digest);
    this.log.info('content-jump-failed', { digest });
    if (!this.ingests.has(digest) && (this.waiters.get(digest)?.size ?? 0) > 0) this.fetchOutOfOrder(digest);
  }

  close(): void {
    this.closed.abort();
    for (const t of this.jumped.values()) clearTimeout(t);
    this.jumped.clear();
    void this.itemPool?.close();
    for (const [digest, set] of this.waiters) {
      const err = new StarlightError('SL_ERR_CANCELED', `worker closing; read of ${digest} abandoned`, { details: { digest } });
      for (const w of [...set]) w.reject(err);
    }
  }

  /** @internal Ingest → tracker: more bytes verified. */
  progressed(ing: Ingest): void {
    const set = this.waiters.get(ing.digest);
    if (set === undefined) return;
    for (const w of [...set]) if (ing.serves(w.end)) w.resolve(ing.ingestPath);
  }

  /** @internal Ingest → tracker: committed (err undefined), failed (err), or aborted (err null). */
  ended(ing: Ingest, err: unknown): void {
    if (this.ingests.get(ing.digest) === ing) this.ingests.delete(ing.digest);
    const set = this.waiters.get(ing.digest);
    if (err === undefined) {
      if (set === undefined) return; // the usual case: nobody parked on it
      const p = this.store.path(ing.digest)!;
      for (const w of [...set]) w.resolve(p);
      return;
    }
    if (err !== null) {
      this.log.error('content-verify-failed', { digest: ing.digest, source: ing.source, err });
      if (set) for (const w of [...set]) w.reject(err);
      return;
    }
    // Aborted: someone still waiting asks again (a stream that still has a session, or out of order).
    if (set && set.size > 0) this.request(ing.digest);
  }

  /** Someone waits for `digest` and no source writes it: a stream sends it next, or it is fetched. */
  private request(digest: string): void {
    if (this.jumped.has(digest) || this.closed.signal.aborted) return;
    for (const j of this.jumpers) {
      if (!j.jump(digest)) continue;
      if (this.log.enabled('debug')) this.log.debug('content-jump', { digest });
      const timer = setTimeout(() => {
        this.jumped.delete(digest);
        if (this.ingests.has(digest) || this.store.has(digest) || (this.waiters.get(digest)?.size ?? 0) === 0) return;
        this.log.info('content-jump-fallback', { digest, afterMs: this.queueJumpFallbackMs });
        this.fetchOutOfOrder(digest);
      }, this.queueJumpFallbackMs);
      timer.unref();
      this.jumped.set(digest, timer);
      return;
    }
    this.fetchOutOfOrder(digest);
  }

  /** `digest` started arriving: a stream's queue jump (if any) worked. */
  private arrivingNow(digest: string): void {
    const timer = this.jumped.get(digest);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.jumped.delete(digest);
  }

  /** Single-flight out-of-order fetch of `digest`, retried while anyone waits for it. */
  private fetchOutOfOrder(digest: string): void {
    const fetchItem = this.opts.fetchItem;
    if (fetchItem === undefined || this.fetching.has(digest) || this.closed.signal.aborted) return;
    this.fetching.add(digest);
    const run = async (): Promise<void> => {
      while (!this.closed.signal.aborted && (this.waiters.get(digest)?.size ?? 0) > 0 && !this.store.has(digest)) {
        if (this.ingests.has(digest)) return; // a stream took it over
        try {
          this.counters.onDemandFetches++;
          await this.fetchOnce(digest, fetchItem);
          return;
        } catch (err) {
          if (kindOf(err) === 'data-loss' || kindOf(err) === 'not-found') {
            for (const w of [...(this.waiters.get(digest) ?? [])]) w.reject(err);
            return;
          }
          this.log.warn('content-fetch-retry', { digest, err });
          await new Promise((r) => setTimeout(r, this.fetchRetryMs).unref());
        }
      }
    };
    run()
      .catch((err: unknown) => this.log.error('content-fetch-failed', { digest, err }))
      .finally(() => this.fetching.delete(digest));
  }

  private async fetchOnce(digest: string, fetchItem: NonNullable<ContentTrackerOptions['fetchItem']>): Promise<void> {
    const res = await fetchItem(digest, this.closed.signal);
    const want = this.expectedSizes.get(digest);
    if (want !== undefined && res.size !== want) {
      res.body.destroy();
      throw new StarlightError('SL_ERR_CAS_SIZE_MISMATCH', `content ${digest}: the proxy announced ${res.size} bytes, its TOC says ${want}`, {
        details: { digest, expected: want, actual: res.size },
      });
    }
    const ing = await this.begin(digest, 'fetch', res.size);
    if (ing === null) {
      res.body.destroy();
      return;
    }
    if (this.log.enabled('debug')) this.log.debug('content-fetch', { digest, size: res.size });
    const dec = new ItemDecoder(res.encoding, ing, digest);
    let badBytes = false;
    try {
      for await (const chunk of res.body) {
        badBytes = true;
        await dec.push(chunk as Buffer);
        badBytes = false;
      }
      badBytes = true;
      await dec.end();
    } catch (err) {
      dec.destroy();
      res.body.destroy();
      // Bytes that do not decode are bad content (fail the readers); a broken connection is retried.
      if (badBytes) await ing.fail(err);
      else await ing.abort();
      throw err;
    }
    await ing.finish(res.size);
  }
}
