/**
 * The index pass of a gzip layer with its bytes kept off the main thread (issue 10, first contact):
 * the addon inflates, frames the tar, hashes every file and copies the files to stage on the libuv
 * pool (NativeTarWalk, native/tar_walk.h); the main thread reads only the header blocks and extended
 * headers it hands back, with the same TarHeaders and LayerTocBuilder as the streaming pass
 * (indexer.ts), so both give the same TOC, limits and errors. It replaces the streaming pass where it
 * applies (nativeTarWalkFor) for a caller that stages files whole (the proxy's first contact); the
 * streaming pass stays the reference and the fallback.
 *
 * A tar the walk cannot frame, or frames otherwise than TarHeaders reads it (malformed extended
 * headers, a truncated archive, sizes beyond 2^53), is not judged here: the pass rejects with
 * NativePassFallback and the caller runs the streaming pass, which gives the verdict. So the two
 * readers can never see different files.
 *
 * Not here: fetching, what staging means (the caller's write/onFile), merging.
 */
import type { Readable } from 'node:stream';
import { StarlightError } from '../errors.js';
import { TimeSlicer } from '../event-loop.js';
import { NativeTarWalk, type TarWalkBatch, type TarWalkEvent } from './decompress.js';
import { type BuildTocOptions, InflateBudget, LayerTocBuilder, checkDiffID, diagnoseFailure } from './indexer.js';
import { layerLimits } from './limits.js';
import { TarHeaders } from './tar.js';
import type { LayerToc, TocEntry } from './toc.js';

export interface NativePassOptions extends Pick<BuildTocOptions, 'expectedDiffID' | 'layerName' | 'signal' | 'limits'> {
  /** Regular files of 1..stageMax bytes have their bytes handed to write(), whole, in tar order. */
  stageMax: number;
  /**
   * Called for every regular file of the TOC (also ones a later entry replaces), in tar order, once
   * it was hashed (entry.digest set): `stagedAt` is the offset of its bytes in the concatenation of
   * write()'s buffers, undefined when not staged (empty or over stageMax). Its bytes may reach write()
   * after this call. Return false to stop the pass: it rejects with NativePassFallback.
   */
  onFile(entry: TocEntry, stagedAt: number | undefined): boolean;
  /** The staged files' bytes, in order; awaited (backpressure). */
  write(bytes: Buffer): void | Promise<void>;
}

/** The native pass stopped without a verdict (see the file header, or onFile said stop): run the streaming pass. */
export class NativePassFallback extends Error {
  constructor(readonly reason: string) {
    super(`native index pass stopped: ${reason}`);
    this.name = 'NativePassFallback';
  }
}

/** What the header reader expects next from the walk. */
type Expect = { kind: 'meta'; size: number; at: number } | { kind: 'file'; size: number; entry: TocEntry | undefined } | undefined;

/**
 * Reads a gzip layer blob to its end and returns its TOC (as buildLayerToc would), the staged files'
 * bytes going to `opts.write`. Rejects as buildLayerToc does, or with NativePassFallback. The source
 * is destroyed on failure.
 */
export async function buildLayerTocNative(stream: Readable, opts: NativePassOptions): Promise<LayerToc> {
  const layer = opts.layerName ?? opts.expectedDiffID;
  const limits = layerLimits(opts.limits);
  const walk = new NativeTarWalk(opts.stageMax);
  const headers = new TarHeaders(limits);
  const entries = new LayerTocBuilder(limits, layer);
  const sizes = new InflateBudget(limits, layer);
  let expect: Expect;
  let ended = false;

  const take = (ev: TarWalkEvent, blocks: Buffer): void => {
    switch (ev.k) {
      case 0: {
        if (expect !== undefined) throw new NativePassFallback(`a header at byte ${ev.at} where the reader expected ${expect.kind} data`);
        const step = headers.block(blocks.subarray(ev.off, ev.off + ev.len), ev.at);
        if (step.kind === 'meta') expect = { kind: 'meta', size: step.size, at: ev.at };
        else if (step.kind === 'entry' && step.header.type === 'file') expect = { kind: 'file', size: step.dataSize, entry: entries.add(step.header) };
        else if (step.kind === 'entry') entries.add(step.header);
        return;
      }
      case 1:
        if (expect?.kind !== 'meta' || expect.size !== ev.len || expect.at !== ev.at) throw new NativePassFallback(`an extended header at byte ${ev.at} the reader did not expect`);
        expect = undefined;
        headers.meta(blocks.subarray(ev.off, ev.off + ev.len), ev.at);
        return;
      case 2: {
        if (expect?.kind !== 'file' || expect.size !== ev.size) throw new NativePassFallback(`file data of ${ev.size} bytes at byte ${ev.at} the reader did not expect`);
        const e = expect.entry;
        expect = undefined;
        if (e === undefined) return; // a whiteout marker's content, or a root entry: hashed for nothing
        e.digest = ev.digest;
        if (ev.chunks !== undefined) e.chunks = new Uint8Array(ev.chunks);
        if (!opts.onFile(e, ev.stagedAt >= 0 ? ev.stagedAt : undefined)) throw new NativePassFallback(`the caller stopped at ${JSON.stringify(e.path)}`);
        return;
      }
      case 3:
        if (expect !== undefined) throw new NativePassFallback(`the end-of-archive marker where the reader expected ${expect.kind} data`);
        ended = true;
        return;
      default:
        throw new NativePassFallback(`${ev.message} at byte ${ev.at}`);
    }
  };
  // A batch of tiny files holds thousands of headers: /healthz gets its turns (issue 14).
  const slicer = new TimeSlicer();
  const onBatch = async (b: TarWalkBatch): Promise<void> => {
    sizes.inflated(b.output);
    for (const ev of b.events) {
      take(ev, b.blocks);
      if (slicer.due) await slicer.maybeYield();
    }
    if (b.staged !== null) await opts.write(b.staged);
  };

  const abortError = () => new StarlightError('SL_ERR_CANCELED', `indexing layer ${layer ?? ''} was aborted`.trim());
  // A source that stalls still stops: its iterator fails with the abort.
  const onAbort = () => stream.destroy(abortError());
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  // One iterator for the pass and, after a gzip or tar error, for diagnoseFailure's reading on
  // (a for-await loop would destroy the source when it throws).
  const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  // The pool walks the next piece while the main thread reads the headers of the last one and hands
  // its staged bytes on: at most one batch waits, so memory stays bounded.
  let waiting: TarWalkBatch | undefined;
  const walkChunk = async (chunk: Buffer): Promise<void> => {
    for (let input: Buffer | null = chunk; ; input = null) {
      const call = walk.step(input);
      call.catch(() => undefined); // awaited below; a failure there is the pass's error
      if (waiting !== undefined) await onBatch(waiting);
      const { batch, more } = await call;
      waiting = batch;
      if (!more) return;
    }
  };
  try {
    for (let r = await chunks.next(); r.done !== true; r = await chunks.next()) {
      if (opts.signal?.aborted) throw abortError();
      sizes.compressed += r.value.length;
      await walkChunk(r.value);
    }
    if (waiting !== undefined) await onBatch(waiting);
    if (opts.signal?.aborted) throw abortError();
    walk.end();
    const inside = walk.inside();
    if (inside !== '') throw new NativePassFallback(`the tar ends inside ${inside}`);
    if (!ended) {
      if (expect !== undefined) throw new NativePassFallback(`the tar ends where the reader expected ${expect.kind} data`);
      try {
        headers.end();
      } catch {
        throw new NativePassFallback('the tar ends after an extended header');
      }
    }
  } catch (err) {
    if (err instanceof NativePassFallback) {
      stream.destroy();
      throw err;
    }
    throw await diagnoseFailure(err, stream, opts.signal, chunks);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  return entries.toc(checkDiffID(walk.digest(), opts), walk.position());
}
