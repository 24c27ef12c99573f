/**
 * Body of one item-pool thread (item-pool.ts): for each whole item of a batch, decode its encoded
 * bytes, check size and sha256, and only then write it into the CAS (its digest path, created
 * read-only). Large items stream through here piece by piece (StreamOpen/StreamPiece): each decoded
 * piece is checked against the size and chunk digests before it is written to the item's ingest file,
 * which is renamed to its blob path once size and sha256 match. Synchronous on purpose: one thread per core, no event-loop round trip
 * per syscall (what made the old per-item path latency-bound, docs/design-notes.md "Ingest").
 *
 * Not here: batching, which thread gets what, waking readers (item-pool.ts, content-tracker.ts).
 */
import { createHash, hash, type Hash } from 'node:crypto';
import { closeSync, constants as fsc, fchmodSync, fstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createBlob } from './create-blob.js';
import { parentPort } from 'node:worker_threads';
import zlib from 'node:zlib';
import { ChunkHasher } from '../../layers/chunks.js';
import { CHUNK_DIGEST_BYTES } from '../../layers/toc.js';
import type { BatchAnswer, BatchRequest, ItemFailure, StreamAnswer, StreamOpen, StreamPiece, ThreadRequest } from './item-pool.js';

/** zlib refuses output chunks below 64 bytes. */
const MIN_ZLIB_CHUNK = 64;
/** Largest output buffer a thread keeps for the next item; larger items get one of their own. */
const KEEP_OUTPUT_BYTES = 4 * 1024 * 1024;

/**
 * The native half of a zlib/brotli stream (node:zlib internals, stable since Node 12): writeSync
 * decodes into a caller's buffer and leaves [avail out, avail in] in the engine's _writeState;
 * errors arrive synchronously through onerror.
 */
interface ZlibHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  reset(): void;
  onerror: (errno: number, code: string, message: string) => void;
}

type ZlibEngine = zlib.Gunzip | zlib.InflateRaw | zlib.BrotliDecompress;

/**
 * The native half of `engine` and its [avail out, avail in] state, its errors routed to `onError`
 * (replacing the stream's handler, which would destroy the stream and emit 'error' later); undefined,
 * with the engine closed, when node:zlib's internals are not there.
 */
function nativeOf(engine: ZlibEngine, onError: (err: Error) => void): { handle: ZlibHandle; state: Uint32Array } | undefined {
  const e = engine as ZlibEngine & { _handle?: ZlibHandle; _writeState?: Uint32Array };
  const h = e._handle;
  if (typeof h?.writeSync !== 'function' || typeof h.reset !== 'function' || !(e._writeState instanceof Uint32Array)) {
    engine.close();
    return undefined;
  }
  h.onerror = (errno, code, message) => onError(Object.assign(new Error(message), { errno, code }));
  return { handle: h, state: e._writeState };
}

/**
 * One brotli decoder per thread, reset per item, decoding into one reused output buffer.
 * Why: brotliDecompressSync builds a stream object, a native engine and an output buffer per call;
 * for python-web's 6465 items (most < 30 KB) that JS setup, its garbage and the fresh buffers' page
 * faults cost about as much as the decoding itself (docs/design-notes.md "Ingest", session 5).
 * Falls back to brotliDecompressSync when the internals are not there.
 */
class ReusedBrotli {
  private engine: zlib.BrotliDecompress | undefined;
  private handle: ZlibHandle | undefined;
  private state: Uint32Array | undefined;
  private error: Error | undefined;
  private out = Buffer.allocUnsafeSlow(256 * 1024);

  /** The decoded bytes (a view valid until the next call), or throws the decoder's error. */
  decode(data: Uint8Array, size: number): Buffer {
    const h = this.handle ?? this.open();
    if (h === undefined) return zlib.brotliDecompressSync(data, { chunkSize: Math.max(MIN_ZLIB_CHUNK, size + 1), maxOutputLength: size + 1 });
    // +1: an output larger than announced fills the buffer and is seen as such.
    const want = size + 1;
    let out = this.out;
    if (out.length < want) {
      out = Buffer.allocUnsafeSlow(want);
      if (want <= KEEP_OUTPUT_BYTES) this.out = out;
    }
    this.error = undefined;
    h.writeSync(zlib.constants.BROTLI_OPERATION_FINISH, data, 0, data.length, out, 0, want);
    const err = this.error as Error | undefined;
    if (err !== undefined) {
      this.close(); // an engine that failed is not reused
      throw err;
    }
    const produced = want - this.state![0]!;
    h.reset();
    return out.subarray(0, produced);
  }

  private open(): ZlibHandle | undefined {
    const engine = zlib.createBrotliDecompress();
    const native = nativeOf(engine, (err) => (this.error = err));
    if (native === undefined) return undefined;
    this.engine = engine;
    this.handle = native.handle;
    this.state = native.state;
    return native.handle;
  }

  private close(): void {
    this.engine?.close();
    this.engine = this.handle = this.state = undefined;
  }
}

const brotli = new ReusedBrotli();

function decode(encoding: string, data: Uint8Array, size: number): Buffer {
  // One output chunk of the announced size (+1 so that a larger output is seen as such): no concat.
  const opts = { chunkSize: Math.max(MIN_ZLIB_CHUNK, size + 1), maxOutputLength: size + 1 };
  switch (encoding) {
    case 'identity':
      return Buffer.from(data.buffer, data.byteOffset, data.length);
    case 'br':
      return brotli.decode(data, size);
    case 'gzip':
      return zlib.gunzipSync(data, opts);
    case 'deflate-raw':
      return zlib.inflateRawSync(data, opts);
    default:
      throw Object.assign(new Error(`encoding '${encoding}' is not decoded by this worker`), { code: 'SL_ERR_PROTOCOL_MALFORMED' });
  }
}

/*
 * A whole item's blob is written straight to its digest path (no temporary, no rename: one syscall and
 * a directory lock less per file, docs/design-notes.md "Durable content"). Safe because nothing reads
 * a blob path before the pool answered (the store's map decides what is readable), and a blob cut short
 * by a crash is not in the durable log, so the next open() re-verifies and drops it (create-blob.ts).
 */

/** Decodes, verifies and stores item i of the batch (its stamp into `stamps`); why not, if it was not. */
function one(req: BatchRequest, i: number, stamps: BigUint64Array): ItemFailure | undefined {
  const it = req.items[i]!;
  const data = new Uint8Array(req.data, it.offset, it.length);
  let raw: Buffer;
  try {
    raw = decode(it.encoding, data, it.size);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE' || e instanceof RangeError) return { error: 'size', actual: it.size + 1 };
    return { error: 'decode', message: e.message };
  }
  if (raw.length !== it.size) return { error: 'size', actual: raw.length };
  // One-shot: no Hash object per item.
  const hex = hash('sha256', raw, 'hex');
  if (hex !== it.hex) return { error: 'digest', actual: 'sha256:' + hex };
  try {
    createBlob(it.blobPath, raw, stamps, i);
    return undefined;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { error: 'io', message: e.message, errno: e.code };
  }
}

/** Decoded bytes of a streamed item per decoder call (one reused buffer per thread). */
const STREAM_OUT_BYTES = 256 * 1024;
const streamOut = Buffer.allocUnsafeSlow(STREAM_OUT_BYTES);

/**
 * An incremental decoder over a zlib/brotli engine's native half (ZlibHandle), the loop of node:zlib's
 * processChunkSync: each call decodes what it can into `streamOut` and hands the decoded pieces on.
 */
class StreamDecoder {
  private readonly engine: ZlibEngine | undefined;
  private readonly handle: ZlibHandle | undefined;
  private readonly state: Uint32Array | undefined;
  private error: Error | undefined;
  private readonly flushes: [process: number, finish: number];

  constructor(encoding: string) {
    let engine: ZlibEngine;
    switch (encoding) {
      case 'identity':
        this.flushes = [0, 0];
        return;
      case 'br':
        engine = zlib.createBrotliDecompress();
        this.flushes = [zlib.constants.BROTLI_OPERATION_PROCESS, zlib.constants.BROTLI_OPERATION_FINISH];
        break;
      case 'gzip':
        engine = zlib.createGunzip();
        this.flushes = [zlib.constants.Z_NO_FLUSH, zlib.constants.Z_FINISH];
        break;
      case 'deflate-raw':
        engine = zlib.createInflateRaw();
        this.flushes = [zlib.constants.Z_NO_FLUSH, zlib.constants.Z_FINISH];
        break;
      default:
        throw new Error(`encoding '${encoding}' is not decoded by this worker's threads`);
    }
    const native = nativeOf(engine, (err) => (this.error = err));
    if (native === undefined) throw new Error('node:zlib internals not available');
    this.engine = engine;
    this.handle = native.handle;
    this.state = native.state;
  }

  /** Decodes `input` (the item's last input when `final`); `out` gets views valid during its call only. */
  feed(input: Uint8Array, final: boolean, out: (decoded: Buffer) => void): void {
    const h = this.handle;
    if (h === undefined) {
      if (input.length > 0) out(Buffer.from(input.buffer, input.byteOffset, input.length));
      return;
    }
    const flush = this.flushes[final ? 1 : 0];
    let inOff = 0;
    let inLen = input.length;
    for (;;) {
      h.writeSync(flush, input, inOff, inLen, streamOut, 0, STREAM_OUT_BYTES);
      if (this.error !== undefined) throw this.error;
      const availOut = this.state![0]!;
      const availIn = this.state![1]!;
      if (availOut < STREAM_OUT_BYTES) out(streamOut.subarray(0, STREAM_OUT_BYTES - availOut));
      if (availOut !== 0) return; // all input taken (or the stream ended)
      inOff += inLen - availIn;
      inLen = availIn;
    }
  }

  close(): void {
    this.engine?.close();
  }
}

/** Thread-side state of a streamed item (StreamOpen … StreamPiece with `end`). */
interface Streaming {
  open: StreamOpen;
  fd: number;
  dec: StreamDecoder;
  hash: Hash;
  chunks: ChunkHasher | null;
  written: number;
}

const streams = new Map<number, Streaming>();

/** Why a streamed item failed, as thrown inside pieceOf. */
class StreamFailure extends Error {
  constructor(readonly why: ItemFailure) {
    super(why.error);
  }
}

function openStream(o: StreamOpen): void {
  const fd = openSync(o.path, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o600);
  let dec: StreamDecoder;
  try {
    dec = new StreamDecoder(o.encoding);
  } catch (err) {
    closeSync(fd);
    rmSync(o.path, { force: true });
    throw new StreamFailure({ error: 'decode', message: (err as Error).message });
  }
  const want = o.chunkDigests;
  const chunks =
    want === undefined
      ? null
      : new ChunkHasher((i, d) => {
          if (!d.equals(want.subarray(i * CHUNK_DIGEST_BYTES, (i + 1) * CHUNK_DIGEST_BYTES))) throw new StreamFailure({ error: 'chunk', index: i });
        });
  streams.set(o.id, { open: o, fd, dec, hash: createHash('sha256'), chunks, written: 0 });
}

/**
 * Decodes one piece of a streamed item, checks each decoded piece against the announced size and the
 * chunk digests before it is written (a bad chunk never reaches the disk), writes it to the item's
 * ingest file; at the end checks size and sha256 and renames the file to its blob path.
 */
function pieceOf(s: Streaming, data: Uint8Array, end: boolean, answer: StreamAnswer): void {
  const { open: o } = s;
  const write = (decoded: Buffer): void => {
    if (s.written + decoded.length > o.size) throw new StreamFailure({ error: 'size', actual: s.written + decoded.length });
    if (s.chunks !== null) {
      s.chunks.update(decoded);
      if (s.written + decoded.length === o.size) s.chunks.finish();
    }
    s.hash.update(decoded);
    let off = 0;
    while (off < decoded.length) off += writeSync(s.fd, decoded, off, decoded.length - off);
    s.written += decoded.length;
  };
  try {
    s.dec.feed(data, end, write);
  } catch (err) {
    if (err instanceof StreamFailure) throw err;
    const e = err as NodeJS.ErrnoException;
    if (typeof e.syscall === 'string') throw new StreamFailure({ error: 'io', message: e.message, errno: e.code });
    throw new StreamFailure({ error: 'decode', message: e.message });
  }
  answer.verified = s.chunks?.completedBytes ?? 0;
  if (!end) return;
  if (s.written !== o.size) throw new StreamFailure({ error: 'size', actual: s.written });
  const hex = s.hash.digest('hex');
  if (hex !== o.hex) throw new StreamFailure({ error: 'digest', actual: 'sha256:' + hex });
  try {
    fchmodSync(s.fd, 0o444);
    renameSync(o.path, o.blobPath);
    // rename(2) moves ctime: the stamp is taken after it (the durable log's record, cas/store.ts).
    const st = fstatSync(s.fd, { bigint: true });
    answer.stamp = [st.ino, st.ctimeNs];
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new StreamFailure({ error: 'io', message: e.message, errno: e.code });
  }
}

/** Ends a streamed item's thread state: closes its file, removes it unless stored. */
function dropStream(id: number, stored: boolean): void {
  const s = streams.get(id);
  if (s === undefined) return;
  streams.delete(id);
  s.dec.close();
  try {
    closeSync(s.fd);
  } catch {
    // closing is best effort: the file is removed below (or already renamed)
  }
  if (!stored) rmSync(s.open.path, { force: true });
}

function onStreamPiece(p: StreamPiece): void {
  const answer: StreamAnswer = { kind: 'stream', id: p.id, data: p.data, took: p.length, verified: 0 };
  const s = streams.get(p.id);
  if (s !== undefined) {
    try {
      pieceOf(s, new Uint8Array(p.data, 0, p.length), p.end, answer);
      if (p.end) dropStream(p.id, true);
    } catch (err) {
      dropStream(p.id, false);
      answer.failed = err instanceof StreamFailure ? err.why : { error: 'io', message: (err as Error).message };
    }
  }
  parentPort!.postMessage(answer, [p.data]);
}

function onMessage(req: ThreadRequest): void {
  switch (req.kind) {
    case 'batch':
      return onBatch(req);
    case 'open':
      try {
        openStream(req);
      } catch (err) {
        const why = err instanceof StreamFailure ? err.why : { error: 'io' as const, message: (err as Error).message, errno: (err as NodeJS.ErrnoException).code };
        const answer: StreamAnswer = { kind: 'stream', id: req.id, took: 0, verified: 0, failed: why };
        parentPort!.postMessage(answer);
      }
      return;
    case 'piece':
      return onStreamPiece(req);
    case 'abort':
      return dropStream(req.id, false);
  }
}

parentPort!.on('message', onMessage);

function onBatch(req: BatchRequest): void {
  const n = req.items.length;
  const stamps = new BigUint64Array(2 * n);
  const failed: BatchAnswer['failed'] = [];
  for (let i = 0; i < n; i++) {
    const why = one(req, i, stamps);
    if (why !== undefined) failed.push({ i, why });
  }
  // The batch buffer goes back for reuse (no fresh, page-faulting allocation per batch).
  const answer: BatchAnswer = { kind: 'batch', id: req.id, data: req.data, stamps, failed };
  parentPort!.postMessage(answer, [req.data, stamps.buffer]);
}
