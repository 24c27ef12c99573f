/**
 * The worker's record of layers and images it has seen, on disk under `<root>`:
 *   tocs/<hex>          encoded TOC of layer diffID sha256:<hex> (as the proxy sent it)
 *   complete/<hex>      marker: every item a stream of a chain with this layer carried has arrived,
 *                       so the layer may be announced as `have` to the proxy
 *   headers/<hex>       the raw delta header of image manifest sha256:<hex> (for restarts: the view
 *                       of an image can be rebuilt without the proxy)
 *
 * Writes are atomic (state-files.ts: temp file + rename) but not durable by themselves: a power cut
 * may leave a file written just before it empty or truncated. Hence the rule (docs/design-notes.md
 * "Durable state"): nothing that claims a file is there — a `complete` marker, an image record that is `complete` —
 * is written before that file was written AND a flush() that started after the write finished
 * (one syncfs per pull, shared with the content store's, not an fsync per file). Reading: a TOC that
 * does not decode (or describes another layer) is treated as absent: its file and its layer's
 * `complete` marker are deleted and a warning logged, so the next pull announces the layer as
 * missing and the proxy sends its TOC again.
 *
 * Not here: file contents (cas/), snapshots (snapshotter/), image records (images/records.ts).
 */
import { mkdir, readFile, readdir, rm, access } from 'node:fs/promises';
import { join } from 'node:path';
import { StarlightError } from '../../errors.js';
import { decodeToc } from '../../layers/toc-codec.js';
import type { LayerToc } from '../../layers/toc.js';
import { nullLogger, type Logger } from '../../log.js';
import { digestHex } from '../cas/store.js';
import { syncFileSystem, type Syncfs } from '../cas/syncfs.js';
import { removeLeftoverTemps, replaceFile } from '../state-files.js';

export interface LayerStoreOptions {
  /** Logs TOCs dropped as unreadable; default nullLogger. */
  log?: Logger;
  /**
   * Flushes the file system holding the root (flush()); default syncFileSystem. The daemon passes
   * the batchedSyncfs it shares with the content store when both are on one file system.
   */
  syncfs?: Syncfs;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export class LayerStore {
  private readonly tocCache = new Map<string, LayerToc>();
  private readonly log: Logger;
  private readonly syncfs: Syncfs;

  constructor(
    readonly root: string,
    opts: LayerStoreOptions = {},
  ) {
    this.log = opts.log ?? nullLogger;
    this.syncfs = opts.syncfs ?? syncFileSystem;
  }

  async open(): Promise<this> {
    for (const d of ['tocs', 'complete', 'headers']) {
      await mkdir(join(this.root, d), { recursive: true });
      await removeLeftoverTemps(join(this.root, d));
    }
    return this;
  }

  /**
   * Stores an encoded TOC (`decoded`: its decodeToc, when the caller has it, saves a second decode).
   * Checks it and makes it known to toc() at once (throws
   * SL_ERR_PROTOCOL_MALFORMED here if it describes another layer); `written` settles when its file
   * is on disk, so a pull goes on while it is written (issue 19).
   */
  addToc(diffID: string, encoded: Uint8Array, decoded?: LayerToc): { toc: LayerToc; written: Promise<void> } {
    const toc = decoded ?? decodeToc(encoded);
    if (toc.diffID !== diffID) {
      throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `TOC sent for layer ${diffID} describes layer ${toc.diffID}`, { details: { diffID } });
    }
    this.tocCache.set(diffID, toc);
    return { toc, written: replaceFile(join(this.root, 'tocs', digestHex(diffID)), encoded) };
  }

  /**
   * The TOC of a layer, or undefined if this worker does not have it: never received, or its file
   * is unreadable (see the file comment: then dropped with its `complete` marker, and logged).
   */
  async toc(diffID: string): Promise<LayerToc | undefined> {
    const cached = this.tocCache.get(diffID);
    if (cached) return cached;
    const path = join(this.root, 'tocs', digestHex(diffID));
    let raw: Buffer;
    try {
      raw = await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let toc: LayerToc;
    try {
      toc = decodeToc(raw);
      if (toc.diffID !== diffID) throw new StarlightError('SL_ERR_IMAGE_BAD_TOC', `the TOC stored for layer ${diffID} describes layer ${toc.diffID}`, { details: { diffID } });
    } catch (err) {
      // Withdrawn before the file goes: a marker must never outlive its TOC.
      await this.unmarkComplete([diffID]);
      await rm(path, { force: true });
      this.log.warn('layer-toc-unreadable', { diffID, path, bytes: raw.length, err, next: 'dropped with its complete marker; the next pull of an image with this layer fetches its TOC again' });
      return undefined;
    }
    this.tocCache.set(diffID, toc);
    return toc;
  }

  /**
   * Makes every file of this store written before the call durable (one syncfs of its file system).
   * Call it after a TOC or header write settled and before writing what claims that file is there
   * (markComplete, a complete image record). Rejects (SL_ERR_INTERNAL) if the flush fails.
   */
  flush(): Promise<void> {
    return this.syncfs(this.root);
  }

  /** Call only after the layers' TOCs and content are durable (flush(), ContentStore.sync()). */
  async markComplete(diffIDs: readonly string[]): Promise<void> {
    for (const d of diffIDs) await replaceFile(join(this.root, 'complete', digestHex(d)), new Uint8Array(0));
  }

  /**
   * Withdraws the 'complete' marker of layers whose content is about to be deleted, so the next
   * `have` does not claim it. Call BEFORE deleting content (a crash in between then only costs a
   * re-send). Idempotent.
   */
  async unmarkComplete(diffIDs: readonly string[]): Promise<void> {
    for (const d of diffIDs) await rm(join(this.root, 'complete', digestHex(d)), { force: true });
  }

  /** Forgets the TOCs of layers no kept image's chain uses (issue 14: the TOC store has GC). Idempotent. */
  async removeTocs(diffIDs: readonly string[]): Promise<void> {
    for (const d of diffIDs) {
      this.tocCache.delete(d);
      await rm(join(this.root, 'tocs', digestHex(d)), { force: true });
    }
  }

  async isComplete(diffID: string): Promise<boolean> {
    return exists(join(this.root, 'complete', digestHex(diffID)));
  }

  /** diffIDs of complete layers: what a delta request announces as `have`. */
  async completeLayers(): Promise<string[]> {
    return (await readdir(join(this.root, 'complete'))).filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => 'sha256:' + n).sort();
  }

  async putHeader(manifestDigest: string, raw: Uint8Array): Promise<void> {
    await replaceFile(join(this.root, 'headers', digestHex(manifestDigest)), raw);
  }

  /** Forgets an image's header (its image was released). Idempotent. */
  async removeHeader(manifestDigest: string): Promise<void> {
    await rm(join(this.root, 'headers', digestHex(manifestDigest)), { force: true });
  }

  /** The raw header as putHeader() stored it (unchecked: records.ts decodes and checks it), or undefined. */
  async header(manifestDigest: string): Promise<Buffer | undefined> {
    try {
      return await readFile(join(this.root, 'headers', digestHex(manifestDigest)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
}
