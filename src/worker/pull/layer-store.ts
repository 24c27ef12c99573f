/**
 * The worker's record of layers and images it has seen, on disk under `<root>`:
 *   tocs/<hex>          encoded TOC of layer diffID sha256:<hex> (as the proxy sent it)
 *   complete/<hex>      marker: every item a stream of a chain with this layer carried has arrived,
 *                       so the layer may be announced as `have` to the proxy
 *   headers/<hex>       the raw delta header of image manifest sha256:<hex> (for restarts: the view
 *                       of an image can be rebuilt without the proxy)
 *
 * Writes are atomic (temp file + rename). Not here: file contents (cas/), snapshots (snapshotter/).
 */
import { mkdir, readFile, readdir, rename, rm, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { StarlightError } from '../../errors.js';
import { decodeToc } from '../../layers/toc-codec.js';
import type { LayerToc } from '../../layers/toc.js';
import { digestHex } from '../cas/store.js';

async function atomicWrite(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export class LayerStore {
  private readonly tocCache = new Map<string, LayerToc>();

  constructor(readonly root: string) {}

  async open(): Promise<this> {
    for (const d of ['tocs', 'complete', 'headers']) await mkdir(join(this.root, d), { recursive: true });
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
    return { toc, written: atomicWrite(join(this.root, 'tocs', digestHex(diffID)), encoded) };
  }

  /** The TOC of a layer, or undefined if this worker never received it. */
  async toc(diffID: string): Promise<LayerToc | undefined> {
    const cached = this.tocCache.get(diffID);
    if (cached) return cached;
    try {
      const toc = decodeToc(await readFile(join(this.root, 'tocs', digestHex(diffID))));
      this.tocCache.set(diffID, toc);
      return toc;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async markComplete(diffIDs: readonly string[]): Promise<void> {
    for (const d of diffIDs) await atomicWrite(join(this.root, 'complete', digestHex(d)), new Uint8Array(0));
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
    await atomicWrite(join(this.root, 'headers', digestHex(manifestDigest)), raw);
  }

  /** Forgets an image's header (its image was released). Idempotent. */
  async removeHeader(manifestDigest: string): Promise<void> {
    await rm(join(this.root, 'headers', digestHex(manifestDigest)), { force: true });
  }

  async header(manifestDigest: string): Promise<Buffer | undefined> {
    try {
      return await readFile(join(this.root, 'headers', digestHex(manifestDigest)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
}
