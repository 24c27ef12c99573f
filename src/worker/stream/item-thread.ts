/**
 * Body of one item-pool thread (item-pool.ts): for each whole item of a batch, decode its encoded
 * bytes, check size and sha256, and only then write it into the CAS (its digest path, created
 * read-only). Synchronous on purpose: one thread per core, no event-loop round trip
 * per syscall (what made the old per-item path latency-bound, docs/design-notes.md "Ingest").
 *
 * Not here: batching, which thread gets what, waking readers (item-pool.ts, content-tracker.ts).
 */
import { createHash } from 'node:crypto';
import { closeSync, constants as fsc, fstatSync, openSync, rmSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import zlib from 'node:zlib';
import type { BatchAnswer, BatchRequest, ItemFailure } from './item-pool.js';

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
    const engine = zlib.createBrotliDecompress() as zlib.BrotliDecompress & { _handle?: ZlibHandle; _writeState?: Uint32Array };
    const h = engine._handle;
    if (typeof h?.writeSync !== 'function' || typeof h.reset !== 'function' || !(engine._writeState instanceof Uint32Array)) {
      engine.close();
      return undefined;
    }
    // Replaces the stream's handler (which would destroy the stream and emit 'error' later).
    h.onerror = (errno, code, message) => {
      this.error = Object.assign(new Error(message), { errno, code });
    };
    this.engine = engine;
    this.handle = h;
    this.state = engine._writeState;
    return h;
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

/**
 * Writes the blob straight to its digest path (no temporary, no rename: one syscall and a directory
 * lock less per file, docs/design-notes.md "Durable content"). Safe because nothing reads a blob
 * path before the pool answered (the store's map decides what is readable), and a blob cut short by
 * a crash is not in the durable log, so the next open() re-verifies and drops it. Created read-only
 * (0444 applies to later opens; this fd may write). Returns its stamp (inode, ctime: its durable-log
 * record, cas/store.ts).
 */
function store(blobPath: string, bytes: Buffer, stamps: BigUint64Array, i: number): void {
  let fd: number;
  try {
    fd = openSync(blobPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o444);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Not committed (the tracker writes only absent digests): a leftover, replaced.
    rmSync(blobPath, { force: true });
    fd = openSync(blobPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o444);
  }
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    const st = fstatSync(fd, { bigint: true });
    closeSync(fd);
    stamps[2 * i] = st.ino;
    stamps[2 * i + 1] = st.ctimeNs;
  } catch (err) {
    closeSync(fd);
    rmSync(blobPath, { force: true });
    throw err;
  }
}

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
  const hex = createHash('sha256').update(raw).digest('hex');
  if (hex !== it.hex) return { error: 'digest', actual: 'sha256:' + hex };
  try {
    store(it.blobPath, raw, stamps, i);
    return undefined;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { error: 'io', message: e.message, errno: e.code };
  }
}

parentPort!.on('message', (req: BatchRequest) => {
  const n = req.items.length;
  const stamps = new BigUint64Array(2 * n);
  const failed: BatchAnswer['failed'] = [];
  for (let i = 0; i < n; i++) {
    const why = one(req, i, stamps);
    if (why !== undefined) failed.push({ i, why });
  }
  // The batch buffer goes back for reuse (no fresh, page-faulting allocation per batch).
  const answer: BatchAnswer = { id: req.id, data: req.data, stamps, failed };
  parentPort!.postMessage(answer, [req.data, stamps.buffer]);
});
