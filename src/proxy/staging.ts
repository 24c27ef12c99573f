/**
 * Raw contents of freshly indexed layers, staged on local disk until the background encoder has put
 * them into the content cache (brotli). The first pull of an image never waits for compression: its
 * header goes out as soon as the TOCs exist and its items are sent 'identity' from here
 * (docs/design-notes.md, "First contact").
 *
 * One append-only file per layer pass under <data>/staging (wiped at start: nothing staged survives
 * a restart; the store's content rows then lead to a re-fetch on demand). Total staged bytes are
 * bounded by `maxBytes`: reserve() refuses what does not fit and the caller falls back to encoding
 * inline. Not here: fetching or parsing layers (indexer-service.ts), encoding (content-cache.ts).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, mkdirSync, openSync, readSync, rmSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { StarlightError } from '../errors.js';

/** Staged contents up to this size (bytes) are read whole and synchronously (page cache, ~15 µs). */
const STAGED_WHOLE_READ_BYTES = 256 * 1024;
/** Read size of larger staged contents (bytes): one CONTENT frame's worth. */
const STREAM_READ_BYTES = 1024 * 1024;

/** Where one staged content lives. */
export interface StagedContent {
  digest: string;
  size: number;
  /** diffID of the layer pass that staged it. */
  diffID: string;
  path: string;
  offset: number;
}

export class StagingArea {
  private readonly dir: string;
  private used = 0;
  private readonly byDigest = new Map<string, StagedContent>();

  /** `dir` is wiped and created. */
  constructor(
    dir: string,
    readonly maxBytes: number,
  ) {
    this.dir = dir;
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
  }

  /** Bytes reserved by stages not yet discarded. */
  get usedBytes(): number {
    return this.used;
  }

  /** Distinct contents currently staged. */
  get size(): number {
    return this.byDigest.size;
  }

  /** Starts staging one layer pass. */
  begin(diffID: string): LayerStage {
    return new LayerStage(this, diffID, join(this.dir, `${randomBytes(8).toString('hex')}.raw`));
  }

  lookup(digest: string): StagedContent | undefined {
    return this.byDigest.get(digest);
  }

  /** Raw bytes of a staged content (a Buffer when small, else a stream), or undefined if not staged (any more). */
  open(digest: string): Buffer | Readable | undefined {
    const s = this.byDigest.get(digest);
    if (s === undefined) return undefined;
    return readStaged(s);
  }

  /**
   * A temp file in the staging dir for `n` bytes of the staging budget (a send-time encoding of a
   * large staged content), or undefined when they do not fit. release() gives the bytes back; the
   * caller removes the file (the dir is wiped at start, so a crash leaves nothing behind either).
   */
  temp(n: number): { path: string; release: () => void } | undefined {
    if (!this.reserveBytes(n)) return undefined;
    let released = false;
    return {
      path: join(this.dir, `${randomBytes(8).toString('hex')}.tmp`),
      release: () => {
        if (released) return;
        released = true;
        this.releaseBytes(n);
      },
    };
  }

  /** @internal LayerStage bookkeeping. */
  reserveBytes(n: number): boolean {
    if (this.used + n > this.maxBytes) return false;
    this.used += n;
    return true;
  }

  /** @internal */
  releaseBytes(n: number): void {
    this.used -= n;
  }

  /** @internal */
  register(c: StagedContent): void {
    if (!this.byDigest.has(c.digest)) this.byDigest.set(c.digest, c);
  }

  /** @internal */
  unregister(path: string, digests: Iterable<string>): void {
    for (const d of digests) if (this.byDigest.get(d)?.path === path) this.byDigest.delete(d);
  }
}

/** Raw bytes of `s`; undefined if its stage file is gone (discarded meanwhile). */
export function readStaged(s: StagedContent): Buffer | Readable | undefined {
  if (s.size <= STAGED_WHOLE_READ_BYTES) {
    let fd: number;
    try {
      fd = openSync(s.path, 'r');
    } catch {
      return undefined;
    }
    try {
      const buf = Buffer.allocUnsafe(s.size);
      let got = 0;
      while (got < s.size) {
        const n = readSync(fd, buf, got, s.size - got, s.offset + got);
        if (n === 0) throw new StarlightError('SL_ERR_INTERNAL', `staged content ${s.digest} is short (${got} of ${s.size} bytes)`, { details: { digest: s.digest } });
        got += n;
      }
      return buf;
    } finally {
      closeSync(fd);
    }
  }
  let fd: number;
  try {
    fd = openSync(s.path, 'r'); // the open fd survives a concurrent discard
  } catch {
    return undefined;
  }
  return createReadStream('', { fd, start: s.offset, end: s.offset + s.size - 1, highWaterMark: STREAM_READ_BYTES });
}

/**
 * The staging file of one layer pass. write() contents in tar order; commit() publishes them (by
 * digest, known only after each file was hashed); discard() removes the file and its bytes' reservation.
 */
export class LayerStage {
  private readonly out: WriteStream;
  private offset = 0;
  private reserved = 0;
  private readonly staged: StagedContent[] = [];
  private closed: Promise<void> | undefined;
  private discarded = false;

  constructor(
    private readonly area: StagingArea,
    readonly diffID: string,
    readonly path: string,
  ) {
    this.out = createWriteStream(path, { highWaterMark: 1024 * 1024 });
    this.out.on('error', () => undefined); // surfaced by the awaited writes
  }

  /** Reserves `n` bytes of the area's budget for this stage; false if they do not fit. */
  reserve(n: number): boolean {
    if (!this.area.reserveBytes(n)) return false;
    this.reserved += n;
    return true;
  }

  /** Bytes appended so far (the offset of the next content). */
  get position(): number {
    return this.offset;
  }

  /** Appends a piece of the current content (reserve its size first); resolves at once unless the file lags behind. */
  write(piece: Buffer): void | Promise<void> {
    this.offset += piece.length;
    if (!this.out.write(piece)) return waitDrain(this.out);
  }

  /** Closes the file and publishes the contents (digests known now) for readers. */
  async commit(contents: { digest: string; size: number; offset: number }[]): Promise<void> {
    await this.close();
    for (const c of contents) {
      const s: StagedContent = { ...c, diffID: this.diffID, path: this.path };
      this.staged.push(s);
      this.area.register(s);
    }
  }

  /** The contents committed (each digest once). */
  contents(): readonly StagedContent[] {
    return this.staged;
  }

  /** Removes the file, its published contents and its reservation. Idempotent. */
  async discard(): Promise<void> {
    if (this.discarded) return;
    this.discarded = true;
    this.area.unregister(
      this.path,
      this.staged.map((s) => s.digest),
    );
    this.area.releaseBytes(this.reserved);
    this.reserved = 0;
    await this.close().catch(() => undefined);
    rmSync(this.path, { force: true });
  }

  private close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve, reject) => {
      if (this.out.closed) return resolve();
      this.out.end((err?: Error | null) => (err ? reject(err) : resolve()));
    });
    return this.closed;
  }
}

function waitDrain(out: WriteStream): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      out.off('drain', onDrain);
      out.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onError = (err: Error): void => done(err);
    out.on('drain', onDrain);
    out.on('error', onError);
  });
}
