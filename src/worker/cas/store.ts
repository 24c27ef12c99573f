/**
 * The worker's content-addressed store (CAS): file contents by sha256 under `<root>/sha256/<hex>`,
 * shared by every image and view.
 *
 * Roles as in containerd's content store: content is written through a Writer under an ingest ref,
 * and becomes readable by digest only after commit() verified its size and digest and renamed it
 * into place (read-only, mode 0444). While a writer is open, `writtenBytes` says how much of its
 * ingest file is on disk, so a caller may serve ranges of content that is still streaming (the
 * stream layer decides whether it may: see src/worker/stream).
 *
 * Not here: where content comes from (stream/), who may read what (fs/), garbage collection policy
 * (the daemon decides which digests are still referenced and calls delete()).
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, chmod, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StarlightError } from '../../errors.js';
import { isDigest } from '../../oci/digest.js';


/** Prefix of temporary files in the blob directory (blobTempPath). */
const BLOB_TEMP_PREFIX = '.tmp-';
/** sha256 of zero bytes: an empty file needs no content item, but stores like any other. */
export const EMPTY_DIGEST = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export interface ContentInfo {
  digest: string;
  size: number;
}

export interface ContentWriter {
  /** The ingest ref this writer was opened with. */
  readonly ref: string;
  /** Path of the ingest file; bytes [0, writtenBytes) of it are on disk (not yet verified). */
  readonly ingestPath: string;
  /** Bytes written so far. */
  readonly writtenBytes: number;
  /** Appends bytes. Fails with SL_ERR_DISK_FULL when the file system is full. */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Verifies that exactly `size` bytes hashing to `digest` were written, then makes the content
   * readable at path(digest). On mismatch the ingest is discarded and the error is
   * SL_ERR_CAS_SIZE_MISMATCH / SL_ERR_CAS_DIGEST_MISMATCH. Committing content that already exists
   * succeeds (the duplicate is dropped).
   */
  commit(size: number, digest: string): Promise<void>;
  /** Discards the ingest. Idempotent; a no-op after commit. */
  abort(): Promise<void>;
}

export interface ContentStore {
  /** Size of committed content, or null if the store does not have it. */
  info(digest: string): Promise<ContentInfo | null>;
  /** Path of committed content (synchronous map lookup after open), or null. */
  path(digest: string): string | null;
  /** Opens a writer. One writer per ref at a time (SL_ERR_CAS_WRITER_BUSY otherwise). */
  writer(ref: string): Promise<ContentWriter>;
  /** Every committed digest. */
  walk(): AsyncIterable<ContentInfo>;
  /** Removes committed content; missing content is not an error. */
  delete(digest: string): Promise<void>;
}

/** Throws SL_ERR_INVALID_ARGUMENT unless `digest` is 'sha256:<64 lowercase hex>'; returns the hex. */
export function digestHex(digest: string): string {
  if (!isDigest(digest)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `not a sha256 digest: '${digest}'`, { details: { digest } });
  return digest.slice('sha256:'.length);
}

function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

class LocalWriter implements ContentWriter {
  writtenBytes = 0;
  private readonly hash: Hash = createHash('sha256');
  private done = false;

  constructor(
    private readonly store: LocalContentStore,
    readonly ref: string,
    readonly ingestPath: string,
    private readonly fh: FileHandle,
  ) {}

  async write(chunk: Uint8Array): Promise<void> {
    if (this.done) throw new StarlightError('SL_ERR_INTERNAL', `write to closed ingest ${this.ref}`);
    let off = 0;
    try {
      while (off < chunk.length) {
        const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off, this.writtenBytes + off);
        off += bytesWritten;
      }
    } catch (err) {
      if (isNoSpace(err)) {
        throw new StarlightError('SL_ERR_DISK_FULL', `no space left writing content ${this.ref} under ${this.store.root}`, {
          cause: err,
          details: { ref: this.ref },
        });
      }
      throw err;
    }
    this.hash.update(chunk);
    this.writtenBytes += chunk.length;
  }

  async commit(size: number, digest: string): Promise<void> {
    const hex = digestHex(digest);
    if (this.done) throw new StarlightError('SL_ERR_INTERNAL', `commit of closed ingest ${this.ref}`);
    this.done = true;
    try {
      await this.fh.close();
      if (this.writtenBytes !== size) {
        throw new StarlightError(
          'SL_ERR_CAS_SIZE_MISMATCH',
          `content ${digest}: received ${this.writtenBytes} bytes, expected ${size}`,
          { details: { digest, expected: size, actual: this.writtenBytes } },
        );
      }
      const actual = 'sha256:' + this.hash.digest('hex');
      if (actual !== digest) {
        throw new StarlightError('SL_ERR_CAS_DIGEST_MISMATCH', `content ${digest}: received bytes hash to ${actual}`, {
          details: { digest, actual },
        });
      }
      await chmod(this.ingestPath, 0o444);
      await rename(this.ingestPath, this.store.blobPath(hex));
      this.store.committed(digest, size);
    } finally {
      this.store.release(this.ref);
      await rm(this.ingestPath, { force: true });
    }
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.fh.close().catch(() => {});
    await rm(this.ingestPath, { force: true });
    this.store.release(this.ref);
  }
}

/** The CAS on a local directory. Call open() before use: it indexes what a previous run committed. */
export class LocalContentStore implements ContentStore {
  private readonly sizes = new Map<string, number>();
  private readonly active = new Set<string>();
  private ingestSeq = 0;

  constructor(readonly root: string) {}

  /** Creates the directories, drops stale ingests and indexes committed content. */
  async open(): Promise<this> {
    await mkdir(join(this.root, 'sha256'), { recursive: true });
    await rm(this.ingestDir, { recursive: true, force: true });
    await mkdir(this.ingestDir, { recursive: true });
    for (const name of await readdir(join(this.root, 'sha256'))) {
      if (name.startsWith(BLOB_TEMP_PREFIX)) await rm(join(this.root, 'sha256', name), { force: true });
      if (!/^[0-9a-f]{64}$/.test(name)) continue;
      const st = await stat(join(this.root, 'sha256', name));
      this.sizes.set('sha256:' + name, st.size);
    }
    return this;
  }

  blobPath(hex: string): string {
    return join(this.root, 'sha256', hex);
  }

  /** Directory of ingest files (same file system as the blobs: commit is a rename). */
  get ingestDir(): string {
    return join(this.root, 'ingest');
  }

  /**
   * A temporary path beside the blobs for content verified before it is written (the item pool):
   * the rename into place stays within one directory (measured cheaper than from ingest/, docs/
   * design-notes.md "Ingest"); the name never matches a digest, and open() removes leftovers.
   */
  blobTempPath(tag: string): string {
    return join(this.root, 'sha256', BLOB_TEMP_PREFIX + tag);
  }

  async info(digest: string): Promise<ContentInfo | null> {
    const size = this.sizes.get(digest);
    return size === undefined ? null : { digest, size };
  }

  path(digest: string): string | null {
    const hex = digestHex(digest);
    return this.sizes.has(digest) ? this.blobPath(hex) : null;
  }

  has(digest: string): boolean {
    return this.sizes.has(digest);
  }

  async writer(ref: string): Promise<ContentWriter> {
    if (this.active.has(ref)) {
      throw new StarlightError('SL_ERR_CAS_WRITER_BUSY', `content ${ref} is already being written`, { details: { ref } });
    }
    this.active.add(ref);
    const ingestPath = join(this.ingestDir, `${process.pid}-${++this.ingestSeq}`);
    try {
      const fh = await open(ingestPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_RDWR, 0o600);
      return new LocalWriter(this, ref, ingestPath, fh);
    } catch (err) {
      this.active.delete(ref);
      throw err;
    }
  }

  async *walk(): AsyncIterable<ContentInfo> {
    for (const [digest, size] of [...this.sizes]) yield { digest, size };
  }

  async delete(digest: string): Promise<void> {
    const hex = digestHex(digest);
    this.sizes.delete(digest);
    await rm(this.blobPath(hex), { force: true });
  }

  /** @internal writer → store notifications */
  committed(digest: string, size: number): void {
    this.sizes.set(digest, size);
  }

  /** @internal */
  release(ref: string): void {
    this.active.delete(ref);
  }
}
