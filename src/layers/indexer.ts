/**
 * Builds the TOC of one layer from its blob bytes in a single streaming pass: decompress, parse tar,
 * hash the uncompressed tar (diffID) and every regular file, turn whiteout markers into entries.
 *
 * TOC rules:
 * - `.wh.NAME` → an entry of type 'whiteout' at the path of NAME (its content is skipped);
 * - `.wh..wh..opq` → `opaque: true` on the parent directory's entry; if the layer has no entry for that
 *   directory (yet), one is created with `implied: true` and default attributes (0755, root, mtime 0)
 *   that a later explicit dir entry of the same layer, or a lower layer's dir during merge, overrides.
 *   Other `.wh..wh.*` names (AUFS internals) are skipped;
 * - a later entry for the same path replaces the earlier one and moves to its tar position, as
 *   extraction does; a non-directory (or whiteout) replacing a directory also drops the directory's
 *   earlier sub-entries (extraction removes the tree); a directory replacing a directory keeps `opaque`;
 * - a hardlink whose target is an earlier regular file (or resolved hardlink) of the same layer gets
 *   that content's digest and size now, because a later replacement of the target in the same layer
 *   does not change the linked inode. Targets in lower layers are resolved by merge.ts;
 * - implied parent directories are NOT invented here (merge.ts does), except the opaque case above;
 * - a root entry ('./') is kept as path '' if it is a directory; non-directory roots are ignored
 *   (containerd skips names that resolve to the root).
 *
 * The same TOC from a gzip blob with its bytes kept off the main thread: native-index.ts, which shares
 * LayerTocBuilder, InflateBudget and diagnoseFailure with this streaming pass.
 *
 * Not here: fetching blobs, storing contents (the caller's `onFile`), merging layers.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { StarlightError } from '../errors.js';
import { TimeSlicer } from '../event-loop.js';
import { ByteReader } from './bytes.js';
import { createDecompressor } from './decompress.js';
import { ENTRY_OVERHEAD_BYTES, RATIO_GRACE_BYTES, type LayerLimits, layerLimits, limitError } from './limits.js';
import { baseName, joinPath, normalizeTarPath, parentPath } from './paths.js';
import { parseTar, type TarHeader } from './tar.js';
import { ChunkDigests } from './chunks.js';
import { TOC_VERSION, chunkCount, impliedDir, type EntryType, type LayerToc, type TocEntry } from './toc.js';

/** Whiteout marker prefix (OCI image-spec layer.md, "Whiteouts"). */
const WHITEOUT_PREFIX = '.wh.';
/** Opaque directory marker (OCI image-spec layer.md, "Opaque Whiteout"). */
const WHITEOUT_OPAQUE = '.wh..wh..opq';
/** High-water mark of the content stream handed to onFile, bytes. */
const CONTENT_HIGH_WATER = 256 * 1024;
/**
 * After gzip/tar reject a layer, at most this many more blob bytes are read so a verifying source
 * (the registry client checks the blob digest at its end) can report the real cause, bytes. A
 * corrupted blob usually breaks inflate or a tar checksum long before its end, and "bad tar" sends the
 * user the wrong way when the registry served corrupt bytes. Default 256 MiB; only spent on failure.
 */
const DIAGNOSIS_DRAIN_LIMIT = 256 * 1024 * 1024;
/** Errors that a corrupt source blob may cause first; the source's own verdict is preferred over them. */
const SOURCE_SUSPECT_CODES: ReadonlySet<string> = new Set(['SL_ERR_IMAGE_BAD_COMPRESSION', 'SL_ERR_IMAGE_BAD_TAR']);

export interface BuildTocOptions {
  /** Layer media type; decides the compression. Absent: sniffed from the first bytes. */
  mediaType?: string;
  /** 'sha256:<hex>' the uncompressed tar must hash to (config rootfs.diff_ids); else DIFFID_MISMATCH. */
  expectedDiffID?: string;
  /** Names the layer in errors (e.g. its blob digest). */
  layerName?: string;
  /**
   * Called for every regular file with its entry (digest not yet known) and a stream of its content.
   * The indexer does not read further until the returned promise settles and the stream was consumed
   * (backpressure); unconsumed content is discarded after it settles. A rejection aborts the build.
   * Note: for files replaced later in the same layer onFile is still called (tar order).
   */
  onFile?: (entry: TocEntry, content: Readable) => Promise<void> | void;
  /**
   * Cheaper alternative to onFile, tried first for every regular file: return a sink and the file's
   * bytes are handed to `sink.write` piece by piece, in order, awaiting a returned promise
   * (backpressure); no stream per file. Return undefined to fall back to onFile for this file. The
   * entry's digest is set once its last piece was written. A rejection aborts the build.
   */
  onFileSink?: (entry: TocEntry) => FileSink | undefined;
  signal?: AbortSignal;
  /** Bounds on what reading this layer may cost; defaults DEFAULT_LAYER_LIMITS (limits.ts). */
  limits?: Partial<LayerLimits>;
}

/** See BuildTocOptions.onFileSink. */
export interface FileSink {
  write(piece: Buffer): void | Promise<void>;
}

const TYPE_MAP: Record<TarHeader['type'], EntryType> = {
  file: 'reg',
  hardlink: 'hardlink',
  symlink: 'symlink',
  char: 'char',
  block: 'block',
  dir: 'dir',
  fifo: 'fifo',
};

/**
 * Reads a layer blob (compressed bytes) to its end and returns its TOC. Rejects with a StarlightError:
 * SL_ERR_IMAGE_BAD_COMPRESSION, _BAD_TAR, _PATH_ESCAPE, _UNSUPPORTED, _DIFFID_MISMATCH, _LIMIT,
 * SL_ERR_CANCELED, or the source stream's own error. The source is destroyed on failure.
 */
export async function buildLayerToc(stream: Readable, opts: BuildTocOptions = {}): Promise<LayerToc> {
  const layer = opts.layerName ?? opts.expectedDiffID;
  const limits = layerLimits(opts.limits);
  // The decompressor hashes the tar (the diffID): on the pool for gzip with the native addon.
  const decompressor = createDecompressor({ mediaType: opts.mediaType, maxZstdWindowBytes: limits.maxZstdWindowBytes, digest: true });
  // pipe() rather than pipeline(): on a data error the source must stay readable (diagnoseFailure).
  // Source errors still reach the iterator below through the decompressor.
  stream.on('error', (err) => decompressor.destroy(err));
  stream.pipe(decompressor);
  const onAbort = () =>
    decompressor.destroy(new StarlightError('SL_ERR_CANCELED', `indexing layer ${layer ?? ''} was aborted`.trim()));
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  const sizes = new InflateBudget(limits, layer);
  stream.on('data', (c: Buffer) => void (sizes.compressed += c.length));
  const reader = new ByteReader(decompressor[Symbol.asyncIterator](), (chunk) => sizes.inflated(chunk.length));
  const entries = new LayerTocBuilder(limits, layer);
  // Decompressed data is usually buffered ahead, so a layer of many small entries is otherwise
  // parsed in one run of microtasks and a proxy's /healthz waits behind it.
  const slicer = new TimeSlicer();

  try {
    await parseTar(reader, async (h, body) => {
      if (slicer.due) await slicer.maybeYield();
      const e = entries.add(h);
      if (e === undefined) return;
      const sink = opts.onFileSink?.(e);
      if (sink !== undefined) await readIntoSink(e, body, sink);
      else await readContent(e, body, opts.onFile);
    }, limits);
    await reader.drain();
  } catch (err) {
    stream.unpipe(decompressor);
    decompressor.destroy();
    throw await diagnoseFailure(err, stream, opts.signal);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  return entries.toc(checkDiffID(decompressor.outputDigest(), opts), reader.position);
}

/** `diffID`, or SL_ERR_IMAGE_DIFFID_MISMATCH when it is not the one the image config names. */
export function checkDiffID(diffID: string, opts: Pick<BuildTocOptions, 'expectedDiffID' | 'layerName'>): string {
  if (opts.expectedDiffID && opts.expectedDiffID !== diffID) {
    throw new StarlightError(
      'SL_ERR_IMAGE_DIFFID_MISMATCH',
      `layer ${opts.layerName ?? ''} uncompresses to ${diffID}, but the image config says ${opts.expectedDiffID}`,
      { details: { layer: opts.layerName, expected: opts.expectedDiffID, actual: diffID } },
    );
  }
  return diffID;
}

/** Uncompressed size and ratio of one layer against its limits, as its bytes come out of the decoder. */
export class InflateBudget {
  /** Blob bytes read so far. */
  compressed = 0;
  private uncompressed = 0;

  constructor(
    private readonly limits: LayerLimits,
    private readonly layer: string | undefined,
  ) {}

  /** `n` more uncompressed bytes: throws SL_ERR_IMAGE_LIMIT past maxUncompressedBytes or maxRatio. */
  inflated(n: number): void {
    const { limits, layer } = this;
    this.uncompressed += n;
    const where = { layer };
    if (this.uncompressed > limits.maxUncompressedBytes) {
      throw limitError('maxUncompressedBytes', limits.maxUncompressedBytes, `layer ${layer ?? '?'} uncompresses to more than ${limits.maxUncompressedBytes} bytes`, where);
    }
    if (limits.maxRatio > 0 && this.uncompressed > RATIO_GRACE_BYTES && this.uncompressed > this.compressed * limits.maxRatio) {
      throw limitError('maxRatio', limits.maxRatio, `layer ${layer ?? '?'} uncompresses ${Math.floor(this.uncompressed / Math.max(this.compressed, 1))} times its compressed size`, where);
    }
  }
}

/**
 * A layer's TOC built from its tar entries in archive order, by the rules of the file header: entry
 * and metadata limits, whiteouts, same-layer replacements, hardlinks to earlier files. Shared by the
 * streaming pass above and the native one (native-index.ts).
 */
export class LayerTocBuilder {
  private readonly entries = new LayerEntries();
  private seen = 0;
  private metadataBytes = 0;

  constructor(
    private readonly limits: LayerLimits,
    private readonly layer: string | undefined,
  ) {}

  /**
   * Takes one tar entry. Returns the 'reg' entry whose content the caller hashes next: its digest
   * (and chunks) must be set before the next add(), since a later hardlink may take them. Throws
   * SL_ERR_IMAGE_LIMIT, _PATH_ESCAPE.
   */
  add(h: TarHeader): TocEntry | undefined {
    const { limits, layer, entries } = this;
    const where = { layer };
    if (++this.seen > limits.maxEntries) {
      throw limitError('maxEntries', limits.maxEntries, `layer ${layer ?? '?'} has more than ${limits.maxEntries} entries`, where);
    }
    this.metadataBytes += ENTRY_OVERHEAD_BYTES + h.name.length + h.linkname.length;
    if (h.xattrs) for (const [k, v] of Object.entries(h.xattrs)) this.metadataBytes += k.length + v.length;
    if (this.metadataBytes > limits.maxMetadataBytes) {
      throw limitError('maxMetadataBytes', limits.maxMetadataBytes, `layer ${layer ?? '?'} holds more than ${limits.maxMetadataBytes} bytes of file metadata (${this.seen} entries so far)`, where);
    }
    const path = normalizeTarPath(h.name, { layer });
    if (path === '' && h.type !== 'dir') return undefined;
    const base = baseName(path);
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const dir = parentPath(path);
      if (base === WHITEOUT_OPAQUE) {
        const cur = entries.get(dir);
        if (cur && cur.type === 'dir') cur.opaque = true;
        else entries.put({ ...impliedDir(dir), opaque: true });
      } else if (!base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) {
        const target = normalizeTarPath(joinPath(dir, base.slice(WHITEOUT_PREFIX.length)), { layer });
        if (target === '' || parentPath(target) !== dir) {
          throw new StarlightError('SL_ERR_IMAGE_PATH_ESCAPE', `whiteout ${JSON.stringify(h.name)} in layer ${layer ?? '?'} names no entry of its directory`, {
            details: { path: h.name, layer },
          });
        }
        entries.put({ path: target, type: 'whiteout', mode: 0, uid: 0, gid: 0, size: 0, mtime: h.mtime });
      }
      return undefined;
    }
    const e = toEntry(h, path);
    if (e.type === 'hardlink') {
      e.linkname = normalizeTarPath(h.linkname, { layer, what: `hardlink target of ${JSON.stringify(h.name)}` });
      const t = entries.get(e.linkname);
      if (t && t.digest !== undefined && (t.type === 'reg' || t.type === 'hardlink')) {
        e.digest = t.digest;
        e.size = t.size;
      }
    }
    entries.put(e);
    return e.type === 'reg' ? e : undefined;
  }

  toc(diffID: string, uncompressedSize: number): LayerToc {
    return { version: TOC_VERSION, diffID, uncompressedSize, entries: [...this.entries.values()] };
  }
}

/**
 * The error to report for a failed build: a gzip/tar error is replaced by the source's own error if
 * reading on (up to DIAGNOSIS_DRAIN_LIMIT) makes the source fail, e.g. with a blob digest mismatch.
 * `chunks`: the iterator the pass read the source with, if it had one. Always destroys the source.
 */
export async function diagnoseFailure(err: unknown, stream: Readable, signal?: AbortSignal, chunks?: AsyncIterator<Buffer>): Promise<unknown> {
  try {
    if (!(err instanceof StarlightError) || !SOURCE_SUSPECT_CODES.has(err.code)) return err;
    // The source may have failed already (a small blob is read whole before gzip trips): its error wins.
    if (stream.errored instanceof StarlightError) return stream.errored;
    if (stream.destroyed || stream.readableEnded) return err;
    const it = chunks ?? (stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
    let drained = 0;
    for (let r = await it.next(); r.done !== true; r = await it.next()) {
      drained += r.value.length;
      if (drained > DIAGNOSIS_DRAIN_LIMIT || signal?.aborted) break;
    }
    return err;
  } catch (sourceErr) {
    return sourceErr instanceof StarlightError ? sourceErr : err;
  } finally {
    stream.destroy();
  }
}

function toEntry(h: TarHeader, path: string): TocEntry {
  const e: TocEntry = { path, type: TYPE_MAP[h.type], mode: h.mode, uid: h.uid, gid: h.gid, size: h.size, mtime: h.mtime };
  if (h.type === 'symlink') e.linkname = h.linkname;
  if (h.type === 'char' || h.type === 'block') {
    e.devmajor = h.devmajor;
    e.devminor = h.devminor;
  }
  if (h.xattrs) e.xattrs = h.xattrs;
  if (h.type === 'file') e.offset = h.offset;
  return e;
}

/**
 * A layer's entries in tar order with the same-layer replacement rules of the file header. Paths are
 * also indexed by parent (every ancestor, listed or not), so a directory replaced by a non-directory
 * drops its subtree by walking only that subtree: one pass over the layer, not a scan per entry.
 */
class LayerEntries {
  private readonly byPath = new Map<string, TocEntry>();
  /** parent path → child paths ever added under it (entries or ancestors of entries; may be stale). */
  private readonly children = new Map<string, Set<string>>();

  get(path: string): TocEntry | undefined {
    return this.byPath.get(path);
  }

  values(): IterableIterator<TocEntry> {
    return this.byPath.values();
  }

  put(e: TocEntry): void {
    const cur = this.byPath.get(e.path);
    if (cur) {
      this.byPath.delete(e.path);
      if (cur.type === 'dir') {
        if (e.type === 'dir') {
          if (cur.opaque) e.opaque = true;
        } else {
          this.removeUnder(e.path);
        }
      }
    }
    this.byPath.set(e.path, e);
    // Register the path and its ancestors up to the first one already registered.
    let p = e.path;
    while (p !== '') {
      const parent = parentPath(p);
      let set = this.children.get(parent);
      if (set === undefined) this.children.set(parent, (set = new Set()));
      else if (set.has(p)) break;
      set.add(p);
      p = parent;
    }
  }

  /** Drops every entry strictly under `dir`. */
  private removeUnder(dir: string): void {
    const stack = [dir];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      const kids = this.children.get(d);
      if (kids === undefined) continue;
      this.children.delete(d);
      for (const k of kids) {
        this.byPath.delete(k);
        stack.push(k);
      }
    }
  }
}

/** A regular file's digest, plus its chunk digests (TocEntry.chunks) when it is large. */
class FileHash {
  private readonly h = createHash('sha256');
  private readonly chunks: ChunkDigests | null;

  constructor(size: number) {
    this.chunks = chunkCount(size) > 0 ? new ChunkDigests() : null;
  }

  update(piece: Buffer): void {
    this.h.update(piece);
    this.chunks?.update(piece);
  }

  /** Sets e.digest (and e.chunks). */
  finish(e: TocEntry): void {
    e.digest = `sha256:${this.h.digest('hex')}`;
    if (this.chunks) e.chunks = this.chunks.finish();
  }
}

async function readIntoSink(e: TocEntry, body: { read(fn: (b: Buffer) => void | Promise<void>): Promise<void> }, sink: FileSink): Promise<void> {
  const h = new FileHash(e.size);
  await body.read((piece) => {
    h.update(piece);
    return sink.write(piece);
  });
  h.finish(e);
}

async function readContent(e: TocEntry, body: { read(fn: (b: Buffer) => void | Promise<void>): Promise<void> }, onFile: BuildTocOptions['onFile']): Promise<void> {
  const h = new FileHash(e.size);
  if (!onFile) {
    await body.read((piece) => void h.update(piece));
    h.finish(e);
    return;
  }
  let wake: (() => void) | undefined;
  const content = new Readable({ highWaterMark: CONTENT_HIGH_WATER, read: () => wake?.() });
  let settled = false;
  let failure: unknown;
  const done = Promise.resolve()
    .then(() => onFile(e, content))
    .then(
      () => undefined,
      (err: unknown) => void (failure = err ?? new Error('onFile failed')),
    )
    .finally(() => {
      settled = true;
      // Whatever the callback left unread is discarded, so the parser can go on.
      if (!content.destroyed) content.resume();
      wake?.();
    });
  // The consumer owns the stream's errors (it destroyed it); the indexer only stops feeding it.
  content.on('error', () => undefined);
  const waitForConsumer = () =>
    new Promise<void>((resolve) => {
      const fin = () => {
        wake = undefined;
        content.off('close', fin);
        resolve();
      };
      wake = fin;
      content.on('close', fin);
    });

  try {
    await body.read(async (piece) => {
      h.update(piece);
      if (failure !== undefined) throw failure;
      if (content.destroyed) return;
      if (!content.push(piece) && !settled) await waitForConsumer();
    });
  } catch (err) {
    // The layer failed mid-file (truncated, over a limit): end the consumer's stream with the error so
    // it stops and removes what it wrote (a cache temp file) instead of waiting forever.
    if (!content.destroyed) content.destroy(err instanceof Error ? err : new Error(String(err)));
    await done;
    throw err;
  }
  if (!content.destroyed) content.push(null);
  await done;
  if (failure !== undefined) throw failure;
  h.finish(e);
}
