/**
 * The worker's content-addressed store (CAS): file contents by sha256 under
 * `<root>/sha256/<first 2 hex>/<hex>`, shared by every image and view.
 *
 * Fan-out (issue 18): 256 shard directories, created at open(), as git and containerd-style stores
 * do. Every file creation takes its directory's lock (i_rwsem) for the whole openat; the item pool's
 * threads creating thousands of blobs in one flat directory spun on that lock (`perf`: 
 * rwsem_spin_on_owner under openat, docs/design-notes.md "Ingest"). A root written by an older
 * version (flat `<root>/sha256/<hex>`) is migrated at open(): each blob is renamed into its shard
 * (atomic; a crash leaves each blob in one place or the other, and the next open() goes on), keeping
 * the durable log's trust (see Durability: a blob trusted before its rename is re-recorded with its
 * new ctime at open's sync, not re-hashed).
 *
 * Roles as in containerd's content store: content is written through a Writer under an ingest ref,
 * and becomes readable by digest only after commit() verified its size and digest and renamed it
 * into place (read-only, mode 0444). While a writer is open, `writtenBytes` says how much of its
 * ingest file is on disk, so a caller may serve ranges of content that is still streaming (the
 * stream layer decides whether it may: see src/worker/stream).
 *
 * Durability (issue 14): committed content is readable at once (its bytes were verified), but it is
 * *known complete* only once it is on stable storage and listed in `<root>/durable.log`. sync() makes
 * everything committed so far durable in one step — one syncfs of the store's file system (blobs,
 * their directory entries), then one append + fdatasync of the log — instead of an fsync per file
 * (measured 6 ms per file on this VM: 38 s for python-web's 6465 files, docs/design-notes.md
 * "Durable content"). Callers sync before they persist anything that claims content is there (the
 * puller before a layer's `complete` marker). Each log record carries the blob's size, inode number
 * and ctime as stat() saw them after the rename: open() trusts a blob only if all three still match,
 * and re-verifies (hashes) every other blob — unlogged, truncated, rewritten, zeroed by a power cut —
 * dropping it when its bytes no longer hash to its name, so it is fetched again, never served.
 *
 * Relocated content (issue 12): a blob whose bytes also sit in a graduated layer dir (an immutable
 * copy the daemon made) may be dropped from `sha256/` and served from that file instead: relocate()
 * appends `<hex> <size> <path>` to `<root>/relocated.log` (fdatasync) and only then unlinks the blob,
 * so after a crash open() finds the content in one place or the other (the blob first, else the
 * logged file if it has the logged size; else it is gone and fetched again). restoreUnder(dir) links
 * such files back into `sha256/` before their dir is deleted. has()/info()/walk() do not tell the
 * two apart; path() gives whichever holds it. open() compacts the log as it compacts durable.log:
 * a new file written and fdatasync'ed, renamed over the old one, the directory fsync'ed.
 *
 * Not here: where content comes from (stream/), who may read what (fs/), garbage collection policy
 * (the daemon decides which digests are still referenced and calls delete()).
 */
import { execFile } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { constants as fsc, type BigIntStats } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, chmod, link, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StarlightError } from '../../errors.js';
import { isDigest } from '../../oci/digest.js';
import { nullLogger, type Logger } from '../../log.js';
import { syncFileSystem, type Syncfs } from './syncfs.js';
import { fsyncDir, removeLeftoverTemps, replaceFileDurably } from '../state-files.js';

/** Prefix of temporary files in the blob directories (blobTempPath). */
const BLOB_TEMP_PREFIX = '.tmp-';
/** Directory of the blobs under the root; shards `<2 hex>/` below it. */
const BLOB_DIR = 'sha256';
/** Hex digits of a blob's shard directory name. */
const SHARD_HEX = 2;
const HEX64_RE = /^[0-9a-f]{64}$/;
/** The 256 shard names, '00'…'ff'. */
const SHARDS = Array.from({ length: 16 ** SHARD_HEX }, (_, i) => i.toString(16).padStart(SHARD_HEX, '0'));
/** The durable log (see the file comment), beside sha256/. */
const DURABLE_LOG = 'durable.log';
/** A log record: `<hex> <size> <ino> <ctime ns>`; a torn or foreign line does not match and is ignored. */
const RECORD_RE = /^([0-9a-f]{64}) (\d+) (\d+) (\d+)$/;
/** The log is rewritten at open() when it holds more than this many records per trusted blob (+ slack). */
const LOG_COMPACT_RATIO = 2;
const LOG_COMPACT_SLACK = 1024;
/** The relocation log (see the file comment), beside sha256/. */
const RELOCATED_LOG = 'relocated.log';
/** A relocation record: `<hex> <size> <absolute path>`; `<hex> -` forgets one. */
const RELOCATED_RE = /^([0-9a-f]{64}) (?:(\d+) (\/.*)|-)$/;
/** Read size when open() re-verifies a blob. */
const VERIFY_READ_BYTES = 1024 * 1024;

export interface ContentInfo {
  digest: string;
  size: number;
}

/** Identity of a blob file on disk as stat() saw it after its rename (see the file comment). */
export interface BlobStamp {
  ino: bigint;
  ctimeNs: bigint;
}

/** What open() found in the blob directory. */
export interface StoreRecovery {
  /** Blobs listed in the durable log with the same size, inode and ctime. */
  trusted: number;
  /** Blobs not known durable whose bytes still hash to their name (logged at open's sync). */
  verified: number;
  /** Blobs not known durable whose bytes do not (truncated, zeroed): deleted, to be fetched again. */
  dropped: string[];
  /** Blobs moved from an older version's flat `sha256/<hex>` into their shard (also counted above). */
  migrated: number;
}

export interface LocalContentStoreOptions {
  /** Logs recovery at open and each sync; default nullLogger. */
  log?: Logger;
  /**
   * Flushes the file system holding `dir` to stable storage; default: `sync -f dir` (syncfs(2),
   * coreutils). Tests inject a counter; the daemon a batchedSyncfs shared with its layer store.
   */
  syncfs?: Syncfs;
}

/**
 * Marks a new blob directory as the top of a hierarchy for ext4's Orlov allocator (`chattr +T`,
 * FS_TOPDIR_FL): its shard directories are then spread over the disk's block groups like top-level
 * directories instead of all landing in the parent's. Why: ext4 without a journal skips inodes freed
 * in the last 60–360 s (`recently_deleted`) and rescans them on every allocation in their group;
 * after thousands of files were deleted near the store (a GC, another root), each blob creation in
 * that group paid for all of them: 6465 creates took 1.1–1.2 s of system CPU after deleting 20 000
 * files beside it vs 0.23–0.26 s in a +T parent (docs/design-notes.md "Ingest", session 5).
 * Best effort: other file systems (tmpfs, xfs) or a missing chattr leave the layout as it was.
 */
function markTopDir(dir: string): Promise<void> {
  return new Promise((resolve) => execFile('chattr', ['+T', dir], () => resolve()));
}

function stampOf(st: BigIntStats): BlobStamp {
  return { ino: st.ino, ctimeNs: st.ctimeNs };
}

/** sha256 of a file's bytes, 'sha256:<hex>'. */
async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(VERIFY_READ_BYTES);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return 'sha256:' + h.digest('hex');
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
  /** Whether content is committed (synchronous, like path()). */
  has(digest: string): boolean;
  /** Opens a writer. One writer per ref at a time (SL_ERR_CAS_WRITER_BUSY otherwise). */
  writer(ref: string): Promise<ContentWriter>;
  /** Every committed digest. */
  walk(): AsyncIterable<ContentInfo>;
  /** Removes committed content; missing content is not an error. */
  delete(digest: string): Promise<void>;
  /**
   * Makes everything committed so far durable and known complete (see Durability in the file
   * comment); call before persisting anything that claims the content is there. Rejects
   * (SL_ERR_INTERNAL) if the flush fails; the content stays readable and is retried next time.
   */
  sync(): Promise<void>;
}

/**
 * Content a store may serve from files outside it (issue 12: the graduated layer dirs' copies);
 * see "Relocated content" in the file comment. LocalContentStore implements it.
 */
export interface Relocations {
  /** Is `digest` served from a relocated file? */
  isRelocated(digest: string): boolean;
  /** Serve each `digest` from its `file` (same bytes, same file system, never written again); drops the blobs. */
  relocate(moves: readonly { digest: string; file: string }[]): Promise<void>;
  /** Writes back (syncfs) what the relocations so far changed on disk: call once after a run of relocate(). */
  writeBack(): Promise<void>;
  /** Makes the content relocated to files under `dir` (now at `now`) blobs again, before it is deleted. */
  restoreUnder(dir: string, now?: string): Promise<number>;
}

/**
 * A store that keeps each content as one file at a fixed path, which a writer of its own (the item
 * pool's threads, stream/item-pool.ts) may create directly: created exclusively at blobPath(hex),
 * read-only, its bytes verified before it is created; then reported with committed().
 */
export interface BlobFiles {
  /** Where the content of `hex` is stored; its directory exists after open(). */
  blobPath(hex: string): string;
  /** `digest` of `size` bytes is complete at its blob path (stat'ed as `stamp`): readable, not yet durable. */
  committed(digest: string, size: number, stamp: BlobStamp): void;
  /**
   * A fresh path for a content being written by a writer of its own (created exclusively there,
   * renamed to its blob path once verified); on the blobs' file system, removed by open() if left over.
   */
  ingestFile(): string;
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
      const blob = this.store.blobPath(hex);
      await rename(this.ingestPath, blob);
      this.store.committed(digest, size, stampOf(await stat(blob, { bigint: true })));
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

/** A durable log record. */
interface Committed {
  size: number;
  stamp: BlobStamp;
}

/** The CAS on a local directory. Call open() before use: it indexes what a previous run committed. */
export class LocalContentStore implements ContentStore, BlobFiles, Relocations {
  private readonly sizes = new Map<string, number>();
  /** Stamp of each committed blob (what its log record says). */
  private readonly stamps = new Map<string, BlobStamp>();
  private readonly active = new Set<string>();
  private ingestSeq = 0;
  /** Committed since the last sync: not known durable yet. */
  private notDurable: { digest: string; stamp: BlobStamp }[] = [];
  private syncQueued: Promise<void> | null = null;
  private syncRunning: Promise<void> | null = null;
  private logDirSynced = false;
  private readonly log: Logger;
  private readonly syncfs: Syncfs;
  /** What open() found (trusted, re-verified, dropped blobs). */
  recovery: StoreRecovery = { trusted: 0, verified: 0, dropped: [], migrated: 0 };
  /** join(root, BLOB_DIR), once: blobPath() is called per item of every stream. */
  private readonly blobRoot: string;
  /** Relocated content (see the file comment): digest → the file that holds it. */
  private readonly relocated = new Map<string, string>();

  constructor(
    readonly root: string,
    opts: LocalContentStoreOptions = {},
  ) {
    this.log = opts.log ?? nullLogger;
    this.syncfs = opts.syncfs ?? syncFileSystem;
    this.blobRoot = join(root, BLOB_DIR);
  }

  /**
   * Creates the directories, drops stale ingests and temporaries, and indexes committed content:
   * blobs the durable log vouches for as they are, every other blob after re-hashing it (see the
   * file comment); then makes re-verified blobs durable.
   */
  async open(): Promise<this> {
    const blobDir = join(this.root, BLOB_DIR);
    // A new store: spread its shards before creating them (markTopDir).
    if ((await mkdir(blobDir, { recursive: true })) !== undefined) await markTopDir(blobDir);
    await Promise.all(SHARDS.map((sh) => mkdir(join(blobDir, sh), { recursive: true })));
    await rm(this.ingestDir, { recursive: true, force: true });
    await mkdir(this.ingestDir, { recursive: true });
    await removeLeftoverTemps(this.root); // a log's replacement cut short
    const logged = await this.readLog();
    const recovery: StoreRecovery = { trusted: 0, verified: 0, dropped: [], migrated: 0 };
    for (const sh of SHARDS) {
      const dir = join(blobDir, sh);
      for (const name of await readdir(dir)) {
        if (name.startsWith(BLOB_TEMP_PREFIX)) await rm(join(dir, name), { force: true });
        else if (HEX64_RE.test(name) && name.startsWith(sh)) {
          const kept = await this.index(name, join(dir, name), logged, recovery);
          if (kept?.verified) this.notDurable.push({ digest: 'sha256:' + name, stamp: kept.stamp });
        }
      }
    }
    // An older version's flat layout (see the file comment), after the shards: a digest present in
    // both (a crash cannot leave that; a downgrade might) keeps its shard copy.
    const t0 = performance.now();
    for (const name of await readdir(blobDir)) {
      const path = join(blobDir, name);
      if (name.startsWith(BLOB_TEMP_PREFIX)) await rm(path, { force: true });
      if (!HEX64_RE.test(name)) continue;
      if (this.sizes.has('sha256:' + name)) await rm(path, { force: true });
      else if ((await this.index(name, path, logged, recovery)) !== null) {
        const to = this.blobPath(name);
        await rename(path, to);
        // rename() moves ctime: the blob is recorded again with its new stamp at the sync below.
        const stamp = stampOf(await stat(to, { bigint: true }));
        const digest = 'sha256:' + name;
        this.stamps.set(digest, stamp);
        this.notDurable.push({ digest, stamp });
        recovery.migrated++;
      }
    }
    if (recovery.migrated > 0) this.log.info('cas-migrated', { root: this.root, blobs: recovery.migrated, ms: Math.round(performance.now() - t0) });
    this.recovery = recovery;
    if (recovery.verified > 0 || recovery.dropped.length > 0) {
      this.log.warn('cas-recovered', { root: this.root, trusted: recovery.trusted, verified: recovery.verified, dropped: recovery.dropped.length, digests: recovery.dropped.slice(0, 20) });
    }
    await this.openRelocated();
    if (logged.records > recovery.trusted * LOG_COMPACT_RATIO + LOG_COMPACT_SLACK) await this.rewriteLog();
    if (this.notDurable.length > 0) await this.sync();
    return this;
  }

  /**
   * Indexes one blob file: trusted if its log record still matches, else kept only if it still
   * hashes to its name (`verified`: to be logged at the next sync), else deleted (null).
   */
  private async index(hex: string, path: string, logged: Map<string, Committed>, recovery: StoreRecovery): Promise<{ stamp: BlobStamp; verified: boolean } | null> {
    const digest = 'sha256:' + hex;
    const st = await stat(path, { bigint: true });
    const rec = logged.get(hex);
    const size = Number(st.size);
    const stamp = stampOf(st);
    let verified = false;
    if (rec !== undefined && rec.size === size && rec.stamp.ino === st.ino && rec.stamp.ctimeNs === st.ctimeNs) {
      recovery.trusted++;
    } else if ((await hashFile(path)) === digest) {
      recovery.verified++;
      verified = true;
    } else {
      await rm(path, { force: true });
      recovery.dropped.push(digest);
      return null;
    }
    this.sizes.set(digest, size);
    this.stamps.set(digest, stamp);
    return { stamp, verified };
  }

  private get logPath(): string {
    return join(this.root, DURABLE_LOG);
  }

  /** The log's records, last one per digest wins; `records` counts every valid line. */
  private async readLog(): Promise<Map<string, Committed> & { records: number }> {
    const out = Object.assign(new Map<string, Committed>(), { records: 0 });
    let text: string;
    try {
      text = await readFile(this.logPath, 'latin1');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw err;
    }
    for (const line of text.split('\n')) {
      const m = RECORD_RE.exec(line);
      if (!m) continue;
      out.records++;
      out.set(m[1]!, { size: Number(m[2]), stamp: { ino: BigInt(m[3]!), ctimeNs: BigInt(m[4]!) } });
    }
    return out;
  }

  /** Replaces the log by the records of the blobs present now (atomically, durably). */
  private async rewriteLog(): Promise<void> {
    const pending = new Set(this.notDurable.map((n) => n.digest));
    const lines: string[] = [];
    for (const [digest, size] of this.sizes) if (!pending.has(digest) && !this.relocated.has(digest)) lines.push(recordLine(digest, size, this.stamps.get(digest)!));
    await replaceFileDurably(this.logPath, lines.join(''));
  }

  /**
   * Makes everything committed so far durable and known complete: one syncfs of the store's file
   * system, then its log records appended and fdatasync'ed. Concurrent calls share one run; a call
   * made while a run is in progress waits for the next one (which covers what it committed).
   * Rejects (SL_ERR_INTERNAL) if the flush fails; the content stays readable and is retried at the
   * next sync.
   */
  sync(): Promise<void> {
    this.syncQueued ??= (async () => {
      // Yield first: syncQueued must be assigned before it is cleared below.
      do await this.syncRunning?.catch(() => {});
      while (this.syncRunning !== null);
      this.syncQueued = null;
      const run = this.syncNow();
      this.syncRunning = run;
      try {
        await run;
      } finally {
        this.syncRunning = null;
      }
    })();
    return this.syncQueued;
  }

  private async syncNow(): Promise<void> {
    if (this.notDurable.length === 0) return;
    const batch = this.notDurable;
    this.notDurable = [];
    const t0 = performance.now();
    try {
      await this.syncfs(this.root);
      // Only blobs still present as committed (not deleted, not replaced meanwhile) get a record.
      const lines = batch.filter((b) => this.stamps.get(b.digest) === b.stamp).map((b) => recordLine(b.digest, this.sizes.get(b.digest)!, b.stamp));
      if (lines.length > 0) {
        // Opened per sync (one per stream, not per file): no descriptor outlives the call.
        const fh = await open(this.logPath, fsc.O_CREAT | fsc.O_WRONLY | fsc.O_APPEND, 0o600);
        try {
          await fh.write(lines.join(''));
          await fh.datasync();
        } finally {
          await fh.close();
        }
        // The first append may have created the log: its directory entry must be durable too.
        if (!this.logDirSynced) {
          await fsyncDir(this.root);
          this.logDirSynced = true;
        }
      }
    } catch (err) {
      this.notDurable = batch.concat(this.notDurable);
      throw err;
    }
    this.log.info('cas-durable', { blobs: batch.length, ms: Math.round(performance.now() - t0) });
  }


  /** Where the blob of `hex` lives: its shard directory (see the file comment). */
  blobPath(hex: string): string {
    // A plain concatenation (hex is 64 hex digits: nothing for join to normalise).
    return `${this.blobRoot}/${hex.slice(0, SHARD_HEX)}/${hex}`;
  }

  /** Directory of ingest files (same file system as the blobs: commit is a rename). */
  get ingestDir(): string {
    return join(this.root, 'ingest');
  }

  /**
   * A temporary path in the directory of the blob of `hex` (a same-directory rename measured faster
   * than a cross-directory one, docs/design-notes.md "Ingest"). Earlier versions' item pool wrote
   * there and renamed; the pool now writes blobs in place (item-thread.ts). The name never matches a
   * digest, and open() removes leftovers.
   */
  blobTempPath(hex: string, tag: string): string {
    return join(this.root, BLOB_DIR, hex.slice(0, SHARD_HEX), BLOB_TEMP_PREFIX + tag);
  }

  async info(digest: string): Promise<ContentInfo | null> {
    const size = this.sizes.get(digest);
    return size === undefined ? null : { digest, size };
  }

  path(digest: string): string | null {
    const hex = digestHex(digest);
    return this.sizes.has(digest) ? (this.relocated.get(digest) ?? this.blobPath(hex)) : null;
  }

  has(digest: string): boolean {
    return this.sizes.has(digest);
  }

  async writer(ref: string): Promise<ContentWriter> {
    if (this.active.has(ref)) {
      throw new StarlightError('SL_ERR_CAS_WRITER_BUSY', `content ${ref} is already being written`, { details: { ref } });
    }
    this.active.add(ref);
    const ingestPath = this.ingestFile();
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
    // A relocated file belongs to its layer dir (deleted with it): only forgotten here. Not logged:
    // a stale record finds its file gone at open(), or the same bytes still there (harmless).
    this.relocated.delete(digest);
    this.sizes.delete(digest);
    // Its log record (if any) no longer matches a re-fetched blob's stamp: no delete record needed.
    this.stamps.delete(digest);
    await rm(this.blobPath(hex), { force: true });
  }

  /** BlobFiles (writer, item pool → store): `digest` is readable at its blob path, not yet durable. */
  committed(digest: string, size: number, stamp: BlobStamp): void {
    this.sizes.set(digest, size);
    this.stamps.set(digest, stamp);
    this.notDurable.push({ digest, stamp });
  }

  /** Is `digest` served from a relocated file (not from its blob)? */
  isRelocated(digest: string): boolean {
    return this.relocated.has(digest);
  }

  /**
   * Drops the blobs of `moves` and serves each content from its `file` from now on (see the file
   * comment): `file` holds the same bytes, on the same file system, and is never written again (a
   * graduated layer dir's file). One log append + fdatasync for all; a content not present or
   * already relocated is skipped. The unlinks' metadata is written back by writeBack().
   */
  async relocate(moves: readonly { digest: string; file: string }[]): Promise<void> {
    const todo = moves.filter((m) => this.sizes.has(m.digest) && !this.relocated.has(m.digest));
    if (todo.length === 0) return;
    await this.appendRelocated(todo.map((m) => `${digestHex(m.digest)} ${this.sizes.get(m.digest)!} ${m.file}\n`).join(''));
    for (const m of todo) {
      this.relocated.set(m.digest, m.file);
      this.stamps.delete(m.digest);
      await rm(this.blobPath(digestHex(m.digest)), { force: true });
    }
  }

  /**
   * Writes back what relocate() changed (one syncfs of the store's file system): the freed inodes,
   * bitmaps and shard dir blocks are dirty metadata the flusher would otherwise write ~30 s later,
   * on whatever container is reading the disk then (issue 12; the unlinks' discards themselves are
   * synchronous on this host's ext4 without a journal, design-notes.md "Session 11").
   */
  writeBack(): Promise<void> {
    return this.syncfs(this.root);
  }

  /**
   * Makes every content relocated to a file under `dir` a blob again (the file is moved back with a
   * hardlink + unlink: no bytes copied), before the dir is deleted. `now` is where `dir` is at this
   * moment (the caller may have renamed it out of the way first); default `dir`. Resolves with how
   * many contents came back.
   */
  async restoreUnder(dir: string, now = dir): Promise<number> {
    const back: string[] = [];
    for (const [digest, file] of this.relocated) {
      if (!file.startsWith(dir + '/')) continue;
      const from = now + file.slice(dir.length);
      const blob = this.blobPath(digestHex(digest));
      await link(from, blob).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err; // written again by a stream meanwhile
      });
      // Its other name goes now, so the stamp below (ctime moves with the link count) stays true.
      await rm(from, { force: true });
      const stamp = stampOf(await stat(blob, { bigint: true }));
      this.stamps.set(digest, stamp);
      this.notDurable.push({ digest, stamp });
      back.push(digest);
    }
    if (back.length > 0) {
      await this.sync();
      await this.forgetRelocated(back);
    }
    return back.length;
  }

  private async forgetRelocated(digests: string[]): Promise<void> {
    await this.appendRelocated(digests.map((d) => `${digestHex(d)} -\n`).join(''));
    for (const d of digests) this.relocated.delete(d);
  }

  private async appendRelocated(text: string): Promise<void> {
    const fh = await open(join(this.root, RELOCATED_LOG), fsc.O_CREAT | fsc.O_WRONLY | fsc.O_APPEND, 0o600);
    try {
      await fh.write(text);
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  /** open(): content relocated by an earlier run, where it still is (see the file comment); log compacted. */
  private async openRelocated(): Promise<void> {
    const path = join(this.root, RELOCATED_LOG);
    const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    if (text === '') return;
    const last = new Map<string, { size: number; file: string } | null>();
    for (const line of text.split('\n')) {
      const m = RELOCATED_RE.exec(line);
      if (m) last.set(m[1]!, m[3] === undefined ? null : { size: Number(m[2]), file: m[3] });
    }
    for (const [hex, rec] of last) {
      const digest = 'sha256:' + hex;
      if (rec === null || this.sizes.has(digest)) continue; // its blob is back (or never left)
      const st = await stat(rec.file).catch(() => undefined);
      if (st?.isFile() && st.size === rec.size) {
        this.sizes.set(digest, rec.size);
        this.relocated.set(digest, rec.file);
      }
    }
    // Durably: a compacted log lost to a power cut (renamed before its data reached the disk: an
    // empty file) would forget where relocated content is, and it would be fetched again.
    await replaceFileDurably(path, [...this.relocated].map(([d, f]) => `${digestHex(d)} ${this.sizes.get(d)!} ${f}\n`).join(''));
  }

  /** BlobFiles: a unique path in the ingest directory (the item pool's streamed items). */
  ingestFile(): string {
    return join(this.ingestDir, `${process.pid}-${++this.ingestSeq}`);
  }

  /** @internal */
  release(ref: string): void {
    this.active.delete(ref);
  }
}

function recordLine(digest: string, size: number, stamp: BlobStamp): string {
  return `${digestHex(digest)} ${size} ${stamp.ino} ${stamp.ctimeNs}\n`;
}

