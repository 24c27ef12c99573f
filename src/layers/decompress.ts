/**
 * Layer decompression: a Transform from layer blob bytes to uncompressed tar bytes, choosing gzip,
 * zstd or none from the media type or, when the media type is absent or says nothing, from the first
 * bytes (gzip 1f 8b, zstd 28 b5 2f fd, anything else is taken as a plain tar).
 *
 * gzip is inflated by ISA-L on the libuv pool (build/Release/starlight_inflate.node, native/inflate.cc),
 * which also hashes the output there when asked (`digest`: the layer's diffID off the main thread);
 * without the addon (not built), by node:zlib, with the hash on the main thread. ISA-L inflated the
 * python-web base layer in 0.19 CPU-s against 0.34–0.42 for node:zlib (docs/design-notes.md, issue 10).
 *
 * Every decoder failure, truncation included, becomes SL_ERR_IMAGE_BAD_COMPRESSION. Errors that reach
 * the stream from outside (a pipeline destroying it with the source's error) pass through unchanged.
 *
 * NativeTarWalk drives the same addon for the native index pass (native-index.ts): it also walks the
 * output as a tar there and hands back only what the walk found.
 *
 * Not here: tar parsing (tar.ts), per-file digests (indexer.ts, or the walk itself).
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { createGunzip, constants as zc, type Gunzip } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { loadOptionalAddon } from '../build-artifact.js';
import { StarlightError } from '../errors.js';
import { DEFAULT_LAYER_LIMITS, limitError } from './limits.js';

export type Compression = 'gzip' | 'zstd' | 'none';

/**
 * Output chunk size of gunzip, bytes. 256 KiB measured 1.6x faster than zlib's 16 KiB default
 * (~320 MB/s; docs/design.md, "Hashing, gunzip, copies stay in TypeScript").
 */
const GUNZIP_CHUNK_SIZE = 256 * 1024;

/**
 * Longest run of synchronous zstd decoding before the event loop gets a turn, ms. fzstd's push() is
 * synchronous and, per block, moves its whole window (copyWithin), so a stream of tiny RLE blocks
 * under a large window is a CPU bomb; feeding it one block at a time and yielding bounds each run.
 */
const ZSTD_YIELD_MS = 10;

/**
 * Decompressed bytes buffered ahead of the consumer, bytes. Lets zlib (on the libuv threadpool) keep
 * inflating while the main thread parses and hashes, instead of the two stages alternating.
 * TODO(image): re-measure on an idle machine; under load here an 850 MB gzip layer indexed at
 * 134-198 MB/s with gunzip alone at 276-357 MB/s, so indexing is not yet fully gunzip-bound.
 */
const READ_AHEAD = 4 * 1024 * 1024;

/**
 * Output asked of one native inflate call, bytes (it may return one 1 MiB block more): bounds what a
 * gzip bomb inflates before the consumer's limits see it, and keeps the pool calls few.
 */
const NATIVE_OUT_PER_CALL = 2 * 1024 * 1024;

/** native/inflate.cc; see its header for the contract. */
interface InflateAddon {
  GzipInflater: new (hash: boolean, stageMax?: number) => NativeInflater;
}
interface NativeInflater {
  inflate(input: Buffer | null, maxOut: number, cb: (err: Error | null, out?: Buffer[], state?: number) => void): void;
  walk(input: Buffer | null, maxOut: number, cb: (err: Error | null, out?: TarWalkBatch, state?: number) => void): void;
  walkInside(): string;
  walkPosition(): number;
  ended(): boolean;
  digest(): string;
}

/** One finding of a native tar walk, in archive order (native/tar_walk.h TarEvent). */
export type TarWalkEvent =
  /** A non-zero header block at tar offset `at`: bytes [off, off + len) of its batch's `blocks`. */
  | { k: 0; at: number; off: number; len: number }
  /** The payload of the extended header at `at`, in `blocks` as a header's. */
  | { k: 1; at: number; off: number; len: number }
  /** A regular file's data, hashed; `stagedAt`: offset of its bytes in the concatenated `staged` buffers, -1 when not staged. */
  | { k: 2; at: number; size: number; digest: string; chunks?: Buffer; stagedAt: number }
  /** The end-of-archive marker. */
  | { k: 3; at: number }
  /** The walk could not frame the tar at `at` (the JS reader has the authoritative verdict). */
  | { k: 4; at: number; message: string };

/** What one pool call of a native tar walk found. */
export interface TarWalkBatch {
  /** Tar bytes inflated by this call. */
  output: number;
  /** Bytes of staged files from this call, in tar order (continuing the previous call's). */
  staged: Buffer | null;
  /** The header blocks and payloads of the events. */
  blocks: Buffer;
  events: TarWalkEvent[];
}

const inflateAddon = loadOptionalAddon<InflateAddon>('starlight_inflate.node');

/** Whether gzip goes through the native addon (tests, bench). */
export const nativeGzip = inflateAddon !== null;

/** Whether a layer of `mediaType` can be walked natively (NativeTarWalk): gzip by its media type, addon built. */
export function nativeTarWalkFor(mediaType: string | undefined): boolean {
  try {
    return inflateAddon !== null && compressionFromMediaType(mediaType) === 'gzip';
  } catch {
    return false; // an unsupported compression: the streaming pass names it
  }
}

/**
 * A gzip layer inflated and walked as a tar on the libuv pool (native/tar_walk.h): the tar bytes never
 * reach the main thread, only what the walk found (header blocks, extended header payloads, each
 * file's digests) and the bytes of files of 1..stageMax bytes. The caller reads the headers
 * (src/layers/native-index.ts). Errors: SL_ERR_IMAGE_BAD_COMPRESSION as createDecompressor's.
 */
export class NativeTarWalk {
  private readonly z: NativeInflater;

  /** Throws SL_ERR_INTERNAL when the addon is not built (check nativeTarWalkFor first). */
  constructor(stageMax: number) {
    if (inflateAddon === null) throw new StarlightError('SL_ERR_INTERNAL', 'the native gzip addon is not built');
    this.z = new inflateAddon.GzipInflater(true, stageMax);
  }

  /**
   * One pool call: feeds `input` (a chunk of compressed bytes; null to go on with what the previous
   * call left) and resolves with what it found. `more`: call again with null before the next chunk.
   * One call at a time.
   */
  step(input: Buffer | null): Promise<{ batch: TarWalkBatch; more: boolean }> {
    return new Promise((resolve, reject) =>
      this.z.walk(input, NATIVE_OUT_PER_CALL, (err, out, state) => (err ? reject(nativeFailure(err)) : resolve({ batch: out!, more: state === 1 }))),
    );
  }

  /** After the last step: throws SL_ERR_IMAGE_BAD_COMPRESSION when the gzip stream stopped before a member's end. */
  end(): void {
    if (!this.z.ended()) throw badCompression('gzip', new Error('unexpected end of file'));
  }

  /** 'sha256:<hex>' of the tar (the diffID); once, after end(). */
  digest(): string {
    return this.z.digest();
  }

  /** What the tar would end inside if it ended now ('' on an entry boundary): native/tar_walk.h Inside(). */
  inside(): string {
    return this.z.walkInside();
  }

  /** Tar bytes walked. */
  position(): number {
    return this.z.walkPosition();
  }
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
/** Bytes needed to sniff. */
const SNIFF_BYTES = 4;

/** Compression named by an OCI/Docker layer media type; undefined if the type does not say. */
function compressionFromMediaType(mediaType: string | undefined): Compression | undefined {
  if (!mediaType) return undefined;
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd') || mediaType.endsWith('.tar.zstd')) return 'zstd';
  if (mediaType.endsWith('.tar') || mediaType.endsWith('layer.v1.tar')) return 'none';
  if (mediaType.includes('+')) {
    throw new StarlightError('SL_ERR_IMAGE_UNSUPPORTED', `layer media type ${mediaType} uses an unsupported compression`, {
      details: { mediaType },
    });
  }
  return undefined;
}

/** Compression recognized from a blob's first bytes (at least 4 bytes for a reliable answer). */
function sniffCompression(head: Uint8Array): Compression {
  const starts = (magic: number[]) => head.length >= magic.length && magic.every((b, i) => head[i] === b);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/**
 * What a failed addon call means: its own allocation failures ('out of memory…', or a std::bad_alloc
 * its worker caught) say the layer needs more memory than the proxy can give it, as a V8 RangeError
 * does on the streaming pass (indexer-service.ts asLayerError): SL_ERR_IMAGE_LIMIT, not corrupt data.
 * Anything else is ISA-L finding the gzip stream corrupt.
 */
export function nativeFailure(err: Error): StarlightError {
  if (/^out of memory|bad_alloc/.test(err.message)) {
    return new StarlightError('SL_ERR_IMAGE_LIMIT', `the layer needs more memory than the proxy can give it: inflating it failed with ${err.message}`, { cause: err });
  }
  return badCompression('gzip', err);
}

function badCompression(kind: string, cause: unknown): StarlightError {
  const msg = cause instanceof Error ? cause.message : String(cause);
  return new StarlightError('SL_ERR_IMAGE_BAD_COMPRESSION', `layer ${kind} stream is corrupt or truncated: ${msg}`, {
    cause,
    details: { compression: kind },
  });
}

/** The inner decoders share this shape so the outer Transform can drive either. */
interface Decoder {
  /** Feeds compressed bytes; resolves when the caller may feed more. */
  write(chunk: Buffer): Promise<void>;
  /** Signals the end of input; resolves once all output was emitted. Throws on truncation. */
  end(): Promise<void>;
  destroy(): void;
  /** 'sha256:<hex>' of all output, for a decoder that hashes it itself (after end). */
  digest?(): string;
}

/** gzip through the native addon: each call inflates on the pool and hands back whole output blocks. */
function nativeGzipDecoder(out: DecompressTransform, addon: InflateAddon, hash: boolean): Decoder {
  const z = new addon.GzipInflater(hash);
  const call = (input: Buffer | null): Promise<number> =>
    new Promise((resolve, reject) => {
      z.inflate(input, NATIVE_OUT_PER_CALL, (err, blocks, state) => {
        if (err) return reject(nativeFailure(err));
        let blocked = false;
        for (const b of blocks!) if (!out.push(b)) blocked = true;
        if (blocked) out.onRead = () => resolve(state!);
        else resolve(state!);
      });
    });
  return {
    write: async (chunk) => {
      let state = await call(chunk);
      while (state === 1) state = await call(null);
    },
    end: async () => {
      // finishFlush Z_FINISH's twin: a stream that stops before a member's trailer is truncated.
      if (!z.ended()) throw badCompression('gzip', new Error('unexpected end of file'));
    },
    // A call running on the pool finishes there; its output goes to a destroyed stream (dropped).
    destroy: () => undefined,
    ...(hash ? { digest: () => z.digest() } : {}),
  };
}

function gzipDecoder(out: DecompressTransform): Decoder {
  // finishFlush Z_FINISH (zlib's own default, spelled out on purpose): a stream that ends before the
  // gzip trailer then fails with "unexpected end of file" instead of silently yielding what it had.
  const z: Gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK_SIZE, finishFlush: zc.Z_FINISH });
  let failure: unknown;
  z.on('error', (e) => {
    failure = e;
    out.fail(badCompression('gzip', e));
  });
  z.on('data', (d: Buffer) => {
    if (!out.push(d)) {
      z.pause();
      out.onRead = () => z.resume();
    }
  });
  return {
    // zlib stops at zero padding after the last member: its output ends, and it may not drain the
    // rest of a write that held that padding, so the end counts as drained too.
    write: (chunk) =>
      new Promise((resolve) => {
        if (z.write(chunk) || z.readableEnded) return resolve();
        const done = (): void => {
          z.off('drain', done);
          z.off('end', done);
          resolve();
        };
        z.on('drain', done);
        z.on('end', done);
      }),
    end: () =>
      new Promise((resolve, reject) => {
        if (failure) return reject(badCompression('gzip', failure));
        if (z.readableEnded) return resolve();
        z.once('end', resolve);
        z.once('error', (e) => reject(badCompression('gzip', e)));
        z.end();
      }),
    destroy: () => z.destroy(),
  };
}

/**
 * Splits a zstd stream into units fzstd can decode without buffering partial input: frame headers
 * (whose declared window is checked against the limit BEFORE fzstd allocates it), whole blocks
 * (with the frame checksum after the last one) and skippable-frame bytes. Bytes it cannot make sense
 * of are passed on as they are; fzstd then reports them as corrupt.
 */
class ZstdUnits {
  private pending: Buffer = Buffer.alloc(0);
  /** 'frame': expecting a frame (or skippable frame) start; 'block': inside a frame; 'skip': n bytes to pass on. */
  private state: 'frame' | 'block' | 'skip' | 'opaque' = 'frame';
  private checksum = false;
  private skip = 0;

  constructor(private readonly maxWindowBytes: number) {}

  /** Adds input; returns the complete units now available, in order. Throws SL_ERR_IMAGE_LIMIT. */
  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const units: Buffer[] = [];
    for (let u = this.next(); u !== undefined; u = this.next()) units.push(u);
    return units;
  }

  /** What is left (an incomplete unit) at the end of input. */
  rest(): Buffer {
    const r = this.pending;
    this.pending = Buffer.alloc(0);
    return r;
  }

  private take(n: number): Buffer {
    const u = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return u;
  }

  private next(): Buffer | undefined {
    const b = this.pending;
    if (b.length === 0) return undefined;
    if (this.state === 'opaque') return this.take(b.length);
    if (this.state === 'skip') {
      const u = this.take(Math.min(this.skip, b.length));
      this.skip -= u.length;
      if (this.skip === 0) this.state = 'frame';
      return u;
    }
    if (this.state === 'block') {
      if (b.length < 3) return undefined;
      const v = b[0]! | (b[1]! << 8) | (b[2]! << 16);
      const last = (v & 1) === 1;
      const type = (v >> 1) & 3;
      const body = type === 1 ? 1 : v >>> 3;
      const n = 3 + body + (last && this.checksum ? 4 : 0);
      if (type === 3) {
        this.state = 'opaque'; // reserved block type: fzstd reports it
        return undefined;
      }
      if (b.length < n) return undefined;
      if (last) this.state = 'frame';
      return this.take(n);
    }
    if (b.length < 4) return undefined;
    const magic = b.readUInt32LE(0);
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      if (b.length < 8) return undefined;
      this.skip = 8 + b.readUInt32LE(4);
      this.state = 'skip';
      return this.next();
    }
    if (magic !== 0xfd2fb528) {
      this.state = 'opaque';
      return this.take(b.length);
    }
    if (b.length < 5) return undefined;
    const fhd = b[4]!;
    const single = (fhd >> 5) & 1;
    const fcsFlag = fhd >> 6;
    const dictBytes = [0, 1, 2, 4][fhd & 3]!;
    const fcsBytes = fcsFlag === 0 ? single : 1 << fcsFlag;
    const n = 5 + (single ? 0 : 1) + dictBytes + fcsBytes;
    if (b.length < n) return undefined;
    let window: number;
    if (!single) {
      const wd = b[5]!;
      const base = 2 ** (10 + (wd >> 3));
      window = base + (base / 8) * (wd & 7);
    } else {
      const at = 5 + dictBytes;
      window = fcsBytes === 1 ? b[at]! : fcsBytes === 2 ? b.readUInt16LE(at) + 256 : fcsBytes === 4 ? b.readUInt32LE(at) : Number(b.readBigUInt64LE(at));
    }
    if (window > this.maxWindowBytes) {
      throw limitError('maxZstdWindowBytes', this.maxWindowBytes, `zstd frame declares a window of ${window} bytes`, { window });
    }
    this.checksum = ((fhd >> 2) & 1) === 1;
    this.state = 'block';
    return this.take(n);
  }
}

function zstdDecoder(out: DecompressTransform, maxWindowBytes: number): Decoder {
  let blocked = false;
  const d = new ZstdDecompress((data) => {
    if (data.length && !out.push(Buffer.from(data.buffer, data.byteOffset, data.length))) blocked = true;
  });
  const units = new ZstdUnits(maxWindowBytes);
  let lastYield = performance.now();
  const feed = async (list: Buffer[], final: boolean) => {
    if (final) list.push(units.rest());
    for (let i = 0; i < list.length; i++) {
      try {
        d.push(list[i]!, final && i === list.length - 1);
      } catch (e) {
        throw badCompression('zstd', e);
      }
      if (blocked) {
        await new Promise<void>((resolve) => (out.onRead = resolve));
        blocked = false;
        lastYield = performance.now();
      } else if (performance.now() - lastYield > ZSTD_YIELD_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        lastYield = performance.now();
      }
    }
  };
  return {
    write: async (chunk) => feed(units.push(chunk), false),
    // fzstd must be told about the end, or a truncated frame would go unnoticed.
    end: () => feed([], true),
    destroy: () => undefined,
  };
}

function passthroughDecoder(out: DecompressTransform): Decoder {
  return {
    write: async (chunk) => {
      if (!out.push(chunk)) await new Promise<void>((resolve) => (out.onRead = resolve));
    },
    end: async () => undefined,
    destroy: () => undefined,
  };
}

/** A layer's tar bytes; `outputDigest()` once they were all read, when created with `digest`. */
export interface Decompressor extends Transform {
  /** 'sha256:<hex>' of every byte it output (the diffID); call after the end. */
  outputDigest(): string;
}

/** The Transform returned by createDecompressor; sniffs lazily when the compression is unknown. */
class DecompressTransform extends Transform implements Decompressor {
  private decoder: Decoder | undefined;
  private head: Buffer[] = [];
  private headLen = 0;
  /** The output's sha256 when the decoder does not hash (asked for with `digest`). */
  private hash: Hash | undefined;
  /** Set by a decoder that waits for the consumer; called on the next _read. */
  onRead: (() => void) | undefined;

  constructor(
    private compression: Compression | undefined,
    private readonly maxZstdWindowBytes: number,
    private readonly digest: boolean,
    private readonly native: boolean,
  ) {
    super({ readableHighWaterMark: READ_AHEAD });
  }

  override push(chunk: Buffer | null, encoding?: BufferEncoding): boolean {
    if (chunk !== null) this.hash?.update(chunk);
    return super.push(chunk, encoding);
  }

  outputDigest(): string {
    if (!this.digest) throw new StarlightError('SL_ERR_INTERNAL', 'outputDigest() of a decompressor created without digest');
    const native = this.decoder?.digest;
    if (native) return native();
    return `sha256:${(this.hash ?? createHash('sha256')).digest('hex')}`;
  }

  override _read(size: number): void {
    const f = this.onRead;
    this.onRead = undefined;
    f?.();
    super._read(size);
  }

  fail(err: Error): void {
    this.destroy(err);
  }

  private start(c: Compression): Decoder {
    this.compression = c;
    if (c === 'gzip' && this.native && inflateAddon !== null) {
      this.decoder = nativeGzipDecoder(this, inflateAddon, this.digest);
      return this.decoder;
    }
    if (this.digest) this.hash = createHash('sha256');
    this.decoder = c === 'gzip' ? gzipDecoder(this) : c === 'zstd' ? zstdDecoder(this, this.maxZstdWindowBytes) : passthroughDecoder(this);
    return this.decoder;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let dec = this.decoder;
    if (!dec) {
      if (this.compression) dec = this.start(this.compression);
      else {
        this.head.push(chunk);
        this.headLen += chunk.length;
        if (this.headLen < SNIFF_BYTES) return cb();
        chunk = Buffer.concat(this.head);
        this.head = [];
        dec = this.start(sniffCompression(chunk));
      }
    }
    dec.write(chunk).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    let dec = this.decoder;
    let pending: Buffer | undefined;
    if (!dec) {
      pending = Buffer.concat(this.head);
      this.head = [];
      dec = this.start(this.compression ?? sniffCompression(pending));
    }
    const run = async () => {
      if (pending && pending.length) await dec.write(pending);
      await dec.end();
    };
    run().then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    this.decoder?.destroy();
    cb(err);
  }
}

/**
 * A Transform from layer blob bytes to the uncompressed tar. `mediaType` decides the compression when
 * it names one; otherwise the first bytes do. Throws SL_ERR_IMAGE_UNSUPPORTED for a media type with
 * an unknown compression suffix (e.g. +bzip2). The stream emits SL_ERR_IMAGE_BAD_COMPRESSION errors,
 * and SL_ERR_IMAGE_LIMIT for a zstd frame declaring a window over `maxZstdWindowBytes`. With `digest`,
 * it hashes its output (outputDigest()); gzip hashes on the pool with the native addon. `nativeGzip:
 * false` takes node:zlib even when the addon is built (tests hold the two to the same verdicts).
 */
export function createDecompressor(
  opts: { mediaType?: string; compression?: Compression; maxZstdWindowBytes?: number; digest?: boolean; nativeGzip?: boolean } = {},
): Decompressor {
  const compression = opts.compression ?? compressionFromMediaType(opts.mediaType);
  return new DecompressTransform(compression, opts.maxZstdWindowBytes ?? DEFAULT_LAYER_LIMITS.maxZstdWindowBytes, opts.digest ?? false, opts.nativeGzip ?? true);
}
